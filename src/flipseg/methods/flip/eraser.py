"""Eraser sources: what fills the region the agents erase (paper 000, section 3.2).

Candidates are patches of the box's shape taken from next to the box: ``up``,
``down``, ``left``, ``right`` (3D adds ``front``/``back``, along z), and the
averaged pairs ``up+down``, ``left+right`` (``front+back``). The classifier
picks the candidate whose pasted-in view looks most like normal tissue. The
earlier paper's patch-level copy-paste (:func:`mixup_patch`) is an option.

Arrays are indexed ``[(z,) y, x]``: *up* is towards row 0, *left* towards
column 0, *front* towards slice 0.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.flip.views import to_input, view_box
from flipseg.resize import resize

__all__ = [
    "candidate_names",
    "neighbour_patches",
    "mixup_patch",
    "paste_views",
    "choose_eraser_sources",
]

Scorer = Callable[[torch.Tensor], torch.Tensor]

# name -> (axis counted from the last, side: 0 = before the box, 1 = after it)
_PRIMARY = {
    "up": (-2, 0),
    "down": (-2, 1),
    "left": (-1, 0),
    "right": (-1, 1),
    "front": (-3, 0),
    "back": (-3, 1),
}
_PAIRS = {
    "up+down": ("up", "down"),
    "left+right": ("left", "right"),
    "front+back": ("front", "back"),
}


def candidate_names(ndim: int) -> list[str]:
    """Candidate names in order: 6 in 2D, 9 in 3D."""
    if ndim == 2:
        return ["up", "down", "left", "right", "up+down", "left+right"]
    if ndim == 3:
        return ["up", "down", "left", "right", "front", "back", "up+down", "left+right",
                "front+back"]
    raise FlipsegError(f"eraser sources need a 2D or 3D image, got {ndim}D")


def _inner_slices(box: Box, outer: Box) -> tuple[slice, ...]:
    """Slices selecting ``box`` inside a crop of the image taken at ``outer``."""
    return tuple(
        slice(b - o, b - o + e) for b, o, e in zip(box.lo, outer.lo, box.shape, strict=True)
    )


def _strip(image: np.ndarray, box: Box, axis: int, side: int) -> tuple[np.ndarray | None, int]:
    """The region next to ``box`` along ``axis`` (one box extent deep, or less near the border).

    Returns the patch resized to ``box.shape`` (None when there is no room) and
    the depth of the strip actually available.
    """
    lo, hi = box.lo[axis], box.hi[axis]
    extent = hi - lo
    if side == 0:
        start, stop = max(0, lo - extent), lo
    else:
        start, stop = hi, min(image.shape[axis], hi + extent)
    if stop <= start:
        return None, 0
    sl = list(box.slices())
    sl[axis] = slice(start, stop)
    patch = np.asarray(image[tuple(sl)], dtype=np.float32)
    if patch.shape != box.shape:
        patch = resize(patch, box.shape)
    return patch, stop - start


def neighbour_patches(image: np.ndarray, box: Box) -> dict[str, np.ndarray]:
    """The 6 (2D) or 9 (3D) eraser-source candidates of a box.

    Each primary patch is the region of the box's size adjacent to the box on
    that side; with less room the available strip is resized bilinearly to the
    box's shape; with no room at all (the box touches that image border) the
    candidate is left out, and so is every pair using it.

    Parameters
    ----------
    image : (H, W) or (D, H, W)
    box : box of the same dimensionality (clipped to the image)

    Returns
    -------
    dict name -> float32 array of ``box.shape``, in :func:`candidate_names` order.
    """
    image = np.asarray(image)
    names = candidate_names(image.ndim)
    box = box.validate(image.shape)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in _PRIMARY:
            axis, side = _PRIMARY[name]
            patch, _ = _strip(image, box, image.ndim + axis, side)
            if patch is not None:
                out[name] = patch
        else:
            a, b = _PAIRS[name]
            if a in out and b in out:
                out[name] = 0.5 * (out[a] + out[b])
    return out


def mixup_patch(image: np.ndarray, box: Box, *, band: int = 2, kernel: int = 5) -> np.ndarray:
    """Patch-level copy-paste fill of the earlier paper (001, eq. 1).

    The left proposal ``p_g`` (width ``w_g``) and the right proposal ``p_f``
    (width ``w_f``), each resized to the box when the strip is thinner than the
    box, are blended column by column::

        fill(x) = alpha(x) * p_f(x) + (1 - alpha(x)) * p_g(x),
        alpha(x) = clip(x / ((w_f + w_g) / 2), 0, 1),   x = 0 .. w-1 (box column)

    so the fill starts as the left neighbour and ends as the right one. A box
    touching one side uses the other side alone; a box spanning the full width
    uses the up/down proposals with the same ramp along rows. Finally the band
    of ``band`` pixels along the box border is replaced by a ``kernel``-wide
    mean filter of the image with the fill pasted in (the seam smoothing).

    Returns
    -------
    float32 array of ``box.shape``

    Raises
    ------
    FlipsegError
        The box covers the whole image in x and y (no proposals at all).
    """
    image = np.asarray(image)
    nd = image.ndim
    box = box.validate(image.shape)
    patch = None
    for axis in (nd - 1, nd - 2):  # x first; rows when the box spans the full width
        before, w_g = _strip(image, box, axis, 0)
        after, w_f = _strip(image, box, axis, 1)
        if before is None and after is None:
            continue
        if before is None or after is None:
            patch = before if after is None else after
        else:
            x = np.arange(box.shape[axis], dtype=np.float32)
            alpha = np.clip(x / ((w_f + w_g) / 2.0), 0.0, 1.0)
            alpha = alpha.reshape([-1 if d == axis else 1 for d in range(nd)])
            patch = alpha * after + (1.0 - alpha) * before
        break
    if patch is None:
        raise FlipsegError(f"box ({box}) covers the whole image {image.shape}: nothing to copy")
    patch = patch.astype(np.float32)
    if band > 0 and kernel > 1:
        region = box.expand(kernel // 2 + 1).clip(image.shape)
        canvas = np.asarray(image[region.slices()], dtype=np.float32).copy()
        rel = _inner_slices(box, region)
        canvas[rel] = patch
        smooth = ndimage.uniform_filter(canvas, size=kernel, mode="nearest")[rel]
        idx = np.indices(box.shape)
        depth = np.min(
            [np.minimum(i, e - 1 - i) for i, e in zip(idx, box.shape, strict=True)], axis=0
        )  # distance to the box border in pixels
        edge = depth < band
        patch[edge] = smooth[edge]
    return patch


def paste_views(
    image: np.ndarray, box: Box, patches: Sequence[np.ndarray], *, margin: float = 0.25
) -> list[np.ndarray]:
    """The classifier view of ``box`` with each patch pasted into the box (float32 crops)."""
    image = np.asarray(image)
    box = box.validate(image.shape)
    view = view_box(box, image.shape, margin)
    base = np.asarray(image[view.slices()], dtype=np.float32)
    rel = _inner_slices(box, view)
    crops = []
    for p in patches:
        crop = base.copy()
        crop[rel] = p
        crops.append(crop)
    return crops


def _candidates(image: np.ndarray, box: Box, mode: str) -> tuple[dict[str, np.ndarray], bool]:
    """Candidates for one box and whether the classifier must choose among them."""
    if mode == "mixup":
        return {"mixup": mixup_patch(image, box)}, False
    cands = neighbour_patches(image, box)
    if not cands:
        raise FlipsegError(f"box ({box}) covers the whole image {image.shape}: nothing to copy")
    if mode == "classifier":
        return cands, True
    if mode in cands:
        return {mode: cands[mode]}, False
    # the fixed side has no room for this box: the classifier picks among the others
    return cands, True


def choose_eraser_sources(
    images: Sequence[np.ndarray],
    boxes: Sequence[Box],
    scorer: Scorer | None,
    *,
    mode: str = "classifier",
    margin: float = 0.25,
    size: int | None = None,
) -> list[tuple[np.ndarray, str, float]]:
    """Pick every box's eraser source.

    Each candidate is pasted into its box, the classifier view of the result is
    built (:func:`flipseg.methods.flip.views.to_input`), and all candidates of
    all boxes are scored in a single ``scorer`` call.

    Parameters
    ----------
    images, boxes : one box per image (2D or 3D)
    scorer : tensor [B, 1, *S] -> normal-tissue probability [B]; may be None for
        ``mode="mixup"`` or a fixed name (scores are then NaN)
    mode : ``classifier`` (highest normal score among the 6/9 candidates),
        ``mixup`` (copy-paste fill of paper 001) or a fixed candidate name such
        as ``up`` or ``left+right``. A fixed candidate that does not exist for a
        box (no room on that side) is replaced by the classifier's choice; the
        returned name says which one was used.
    margin, size : classifier view margin and input side

    Returns
    -------
    list of ``(patch, name, normal_score)``; ``patch`` is float32 of the clipped
    box's shape.
    """
    if len(images) != len(boxes):
        raise FlipsegError(f"{len(images)} images but {len(boxes)} boxes")
    if not images:
        return []
    nd = np.ndim(images[0])
    valid = ["classifier", "mixup"] + candidate_names(nd)
    if mode not in valid:
        raise FlipsegError(f"unknown eraser source {mode!r}; choose one of: {', '.join(valid)}")
    per_box: list[tuple[list[str], list[np.ndarray], bool]] = []
    crops: list[np.ndarray] = []
    for image, box in zip(images, boxes, strict=True):
        image = np.asarray(image)
        cands, must_choose = _candidates(image, box, mode)
        if must_choose and scorer is None:
            raise FlipsegError(f"eraser source {mode!r} for box ({box}) needs a classifier")
        per_box.append((list(cands), list(cands.values()), must_choose))
        if scorer is not None:
            crops += paste_views(image, box, list(cands.values()), margin=margin)
    if scorer is not None:
        with torch.no_grad():
            scores = scorer(to_input(crops, size)).detach().cpu().numpy().astype(np.float64)
    else:
        scores = np.full(sum(len(n) for n, _, _ in per_box), np.nan)
    out = []
    start = 0
    for names, patches, _ in per_box:
        s = scores[start : start + len(names)]
        start += len(names)
        best = int(np.argmax(s)) if len(names) > 1 else 0
        out.append((patches[best], names[best], float(s[best])))
    return out
