"""Pseudo samples for the nodule-vs-normal classifier, from boxes only (paper 000, 3.1).

We have only nodule images, so both classes are made from the box itself:

* *nodule* (label 0): random boxes whose intersection with the lesion box
  covers more than half of the lesion box (:func:`sample_positive_boxes`);
* *normal* (label 1): random boxes of similar size that do not overlap the
  lesion box (:func:`sample_negative_boxes`);
* superpixel filling (:func:`superpixel_fill`): the lesion box with a fraction
  ``r`` of its area filled from an eraser source, superpixel by superpixel;
  ``r <= 0.5`` is a nodule, ``r >= 0.5`` normal tissue (ratios near 0.5 are
  never drawn).

Every sample is the classifier view of its box
(:mod:`flipseg.methods.flip.views`). :class:`PseudoSampleDataset` draws them
online, seeded by (seed, epoch, index), so an epoch is reproducible.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.flip.eraser import neighbour_patches
from flipseg.methods.flip.views import view_box
from flipseg.resize import resize
from flipseg.superpixels import order_labels, superpixels

if TYPE_CHECKING:
    from flipseg.methods.flip.classifier import ClassifierConfig

__all__ = [
    "NODULE",
    "NORMAL",
    "sample_positive_boxes",
    "sample_negative_boxes",
    "fill_mask",
    "superpixel_fill",
    "PseudoSampleDataset",
]

NODULE = 0
NORMAL = 1


def _intersection(a: Box, b: Box) -> int:
    lo = np.maximum(a.lo, b.lo)
    hi = np.minimum(a.hi, b.hi)
    return int(np.prod(np.clip(hi - lo, 0, None)))


def sample_positive_boxes(
    box: Box,
    shape: Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.8, 1.4),
    shift: float = 0.25,
    min_cover: float = 0.5,
    max_tries: int = 50,
) -> list[Box]:
    """Random *nodule* boxes: jittered copies of ``box`` covering > ``min_cover`` of it.

    Each extent is scaled by a factor drawn from ``scale`` and the centre moves
    by up to ``shift`` times the extent on each axis; the result is clipped to
    the image and kept only if its intersection with ``box`` is more than
    ``min_cover`` of the box's area (volume). After ``max_tries`` rejections the
    lesion box itself is used.

    Returns
    -------
    list of ``n`` boxes inside the image
    """
    box = box.validate(shape)
    ext = np.asarray(box.shape, dtype=float)
    centre = np.asarray(box.center, dtype=float)
    out: list[Box] = []
    for _ in range(n):
        chosen = box
        for _ in range(max_tries):
            e = ext * rng.uniform(scale[0], scale[1], size=ext.shape)
            c = centre + ext * rng.uniform(-shift, shift, size=ext.shape)
            lo = np.floor(c - e / 2).astype(int)
            hi = np.maximum(lo + 2, np.ceil(c + e / 2).astype(int))
            cand = Box.from_lo_hi(lo, hi).clip(shape)
            if min(cand.shape) >= 2 and _intersection(cand, box) > min_cover * box.size:
                chosen = cand
                break
        out.append(chosen)
    return out


def sample_negative_boxes(
    box: Box,
    shape: Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.7, 1.3),
    aspect_jitter: float = 0.15,
    min_scale: float = 0.4,
) -> list[Box]:
    """Random *normal-tissue* boxes: similar size and aspect, no overlap with ``box``.

    A size is drawn (the box's extents times a common factor from ``scale``
    and a per-axis factor within ``1 +- aspect_jitter``); the box is placed
    uniformly among the positions fully inside the image that lie entirely
    before or after the lesion box along some axis. When no such position
    exists the size is shrunk uniformly, down to ``min_scale`` times the
    lesion box; a box with no room even then yields fewer than ``n`` boxes.

    Returns
    -------
    list of at most ``n`` boxes inside the image, none overlapping ``box``
    """
    box = box.validate(shape)
    shape_a = np.asarray(shape, dtype=int)
    ext0 = np.asarray(box.shape, dtype=float)
    lo_b, hi_b = np.asarray(box.lo), np.asarray(box.hi)
    rooms = [(a, side, int(lo_b[a] if side == 0 else shape_a[a] - hi_b[a]))
             for a in range(box.ndim) for side in (0, 1)]
    out: list[Box] = []
    for _ in range(n):
        s = rng.uniform(*scale)
        ext = ext0 * s * rng.uniform(1 - aspect_jitter, 1 + aspect_jitter, size=ext0.shape)
        ext = np.clip(np.round(ext), 2, shape_a).astype(int)
        # shrink uniformly until at least one side has room
        fit = max(room / ext[a] for a, _, room in rooms)
        if fit < 1.0:
            if s * fit < min_scale:
                break  # no room for a box of similar size on any side
            ext = np.maximum(2, np.floor(ext * fit)).astype(int)
        free = shape_a - ext + 1  # placements per axis ignoring the lesion box
        weights = []
        for a, _, room in rooms:
            k = room - ext[a] + 1
            weights.append(max(k, 0) * np.prod(np.delete(free, a)))
        weights = np.asarray(weights, dtype=float)
        if weights.sum() <= 0:
            break
        a, side, room = rooms[int(rng.choice(len(rooms), p=weights / weights.sum()))]
        lo = np.array([rng.integers(0, f) for f in free])
        start = 0 if side == 0 else hi_b[a]
        lo[a] = start + rng.integers(0, room - ext[a] + 1)
        out.append(Box.from_lo_hi(lo, lo + ext))
    return out


def fill_mask(labels: np.ndarray, order: Sequence[int], ratio: float) -> np.ndarray:
    """Union of the first superpixels of ``order`` covering closest to ``ratio`` of the map.

    Parameters
    ----------
    labels : int label map (negative = unlabelled, never filled)
    order : label ids in filling order (e.g. inner-to-outer, or a random permutation)
    ratio : wanted filled fraction of the map's pixels, in [0, 1]

    Returns
    -------
    bool mask of ``labels.shape``; its mean differs from ``ratio`` by at most half
    the largest superpixel's share of the map.
    """
    if not 0.0 <= ratio <= 1.0:
        raise FlipsegError(f"fill ratio must be in [0, 1], got {ratio!r}")
    labels = np.asarray(labels)
    order = np.asarray(order, dtype=np.int64)
    n = int(max(labels.max(initial=-1) + 1, order.max(initial=-1) + 1))
    areas = np.bincount(labels[labels >= 0].ravel(), minlength=n)[order]
    cum = np.concatenate([[0], np.cumsum(areas)])
    k = int(np.argmin(np.abs(cum - ratio * labels.size)))
    chosen = np.zeros(n, dtype=bool)
    chosen[order[:k]] = True
    return np.where(labels >= 0, chosen[np.clip(labels, 0, None)], False)


def superpixel_fill(
    image: np.ndarray,
    box: Box,
    source_patch: np.ndarray,
    labels: np.ndarray,
    order: Sequence[int],
    ratio: float,
) -> np.ndarray:
    """Fill ``ratio`` of the box with the eraser source, superpixel by superpixel.

    Parameters
    ----------
    image : (H, W) or (D, H, W)
    box : region to fill (inside the image)
    source_patch : eraser source; resized bilinearly to ``box.shape`` if needed
    labels : superpixel labels of the box; resized (nearest) to ``box.shape`` if needed
    order : label ids in filling order (see :func:`fill_mask`)
    ratio : wanted filled fraction of the box area; ``<= 0.5`` still shows a nodule,
        ``>= 0.5`` is taken as normal tissue

    Returns
    -------
    float32 copy of ``image`` with the chosen superpixels replaced by the source
    """
    image = np.asarray(image)
    box = box.validate(image.shape)
    if tuple(np.shape(labels)) != box.shape:
        labels = resize(np.asarray(labels), box.shape, order=0)
    src = np.asarray(source_patch, dtype=np.float32)
    if src.shape != box.shape:
        src = resize(src, box.shape)
    out = image.astype(np.float32, copy=True)
    region = out[box.slices()]
    m = fill_mask(labels, order, ratio)
    region[m] = src[m]
    return out


# --------------------------------------------------------------------------- dataset


@dataclass
class _BoxCache:
    """What one lesion box needs for filled samples, built once."""

    image: np.ndarray  # the sample's image (not copied)
    box: Box  # lesion box, clipped
    canvas: np.ndarray  # classifier view of the box, resized to S per axis (0-255)
    canvas_box: Box  # the box inside the canvas
    sources: list[np.ndarray]  # eraser candidates at canvas_box.shape
    labels: np.ndarray  # superpixels at canvas_box.shape (int32)
    order: np.ndarray  # inner-to-outer label ids


def _standard_shape(shape: Sequence[int], side: int) -> tuple[int, ...]:
    """Box shape rescaled so its shortest side is ``side`` (longest capped at 3x)."""
    s = side / min(shape)
    s = min(s, 3 * side / max(shape))
    return tuple(max(2, int(round(e * s))) for e in shape)


def _cache_box(
    image: np.ndarray, box: Box, cfg: "ClassifierConfig", size: int, seed: int
) -> _BoxCache:
    nd = image.ndim
    box = box.validate(image.shape)
    view = view_box(box, image.shape, cfg.margin)
    canvas = resize(np.asarray(image[view.slices()], dtype=np.float32), (size,) * nd)
    scale = size / np.asarray(view.shape, dtype=float)
    lo = np.floor((np.asarray(box.lo) - view.lo) * scale).astype(int)
    hi = np.maximum(lo + 1, np.minimum(size, np.ceil((np.asarray(box.hi) - view.lo) * scale)))
    canvas_box = Box.from_lo_hi(lo, hi.astype(int))
    side = cfg.superpixel_side or (100 if nd == 2 else 40)
    crop = np.asarray(image[box.slices()], dtype=np.float32)
    std = resize(crop, _standard_shape(box.shape, side))
    lab = superpixels(std, cfg.superpixels, seed=seed)
    order = order_labels(lab, center=[(e - 1) / 2.0 for e in lab.shape], order="inner")
    labels = resize(lab, canvas_box.shape, order=0).astype(np.int32)
    sources = [resize(p, canvas_box.shape) for p in neighbour_patches(image, box).values()]
    return _BoxCache(image, box, canvas, canvas_box, sources, labels, order)


def _residual_fill(
    inner_order: np.ndarray, label: int, cfg: "ClassifierConfig", rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """(ratio, order) of a ``residual``-scheme fill: nodules keep part of the lesion
    visible (random, inner-first or outer-first order, a third each), normal tissue has
    the centre cleared (inner-first, ratio >= ``residual_normal_min``)."""
    if label == NORMAL:
        return rng.uniform(cfg.residual_normal_min, 1.0), inner_order
    kind = int(rng.integers(3))
    if kind == 0:
        return rng.uniform(0.0, cfg.residual_random_max), rng.permutation(inner_order)
    if kind == 1:
        return rng.uniform(0.0, cfg.residual_inner_max), inner_order
    return rng.uniform(0.0, cfg.residual_outer_max), inner_order[::-1]


@functools.lru_cache(maxsize=8)
def _base_grid(shape: tuple[int, ...]) -> torch.Tensor:
    """Homogeneous normalised pixel centres ``[*shape, nd + 1]`` in (x, y[, z], 1) order."""
    axes = [torch.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")  # array order (z,) y, x
    return torch.stack(list(mesh[::-1]) + [torch.ones(shape)], dim=-1)


class PseudoSampleDataset(Dataset):
    """Classifier training samples drawn online from lesion boxes.

    Item ``i`` belongs to box ``i // (positives + negatives)``; the first
    ``cfg.positives`` slots of a box are nodules (label 0), the rest normal
    tissue (label 1). With probability ``cfg.fill_prob`` a slot shows the lesion
    box partly filled from a random eraser candidate instead (fill ratio below
    ``0.5 - fill_gap`` for nodules, above ``0.5 + fill_gap`` for normal), filling
    superpixels inner-to-outer, or in random order with probability
    ``cfg.fill_random_order``. A normal slot of a box with no room for a
    non-overlapping box is always a filled view. Boxes covering their whole
    image (no eraser candidate) are skipped and listed in ``skipped``.

    Items are seeded by ``(seed, epoch, index)``: call :meth:`set_epoch` before
    each epoch. Superpixels and eraser candidates are computed once per box.

    Parameters
    ----------
    samples : sample dicts with ``image`` and ``box`` (samples without a box are skipped)
    cfg : the classifier configuration (margin, input_size, slot counts, augmentation)
    seed : seed of every random draw
    augment : apply flips, small rotations/shifts and gamma
    progress : show a progress bar while caching boxes

    Each item is ``(x, label)``: float tensor ``[1, *S]`` (0-1) and an int.
    """

    def __init__(
        self,
        samples: Sequence[dict[str, Any]],
        cfg: "ClassifierConfig",
        seed: int,
        *,
        augment: bool = True,
        progress: bool = False,
    ) -> None:
        usable = [s for s in samples if s.get("box") is not None]
        if not usable:
            raise FlipsegError("no sample with a box to make pseudo samples from")
        dims = {np.ndim(s["image"]) for s in usable}
        if len(dims) != 1:
            raise FlipsegError(f"pseudo samples need all-2D or all-3D images, got {sorted(dims)}D")
        self.nd = dims.pop()
        self.cfg = cfg
        self.seed = int(seed)
        self.augment = augment
        self.size = int(cfg.input_size)
        self.per_box = int(cfg.positives) + int(cfg.negatives)
        if self.per_box < 1:
            raise FlipsegError("positives + negatives per box must be at least 1")
        self.epoch = 0
        bar = tqdm(usable, desc="caching boxes", unit="box", disable=not progress, leave=False)
        self.boxes: list[_BoxCache] = []
        self.skipped: list[str] = []  # case ids of boxes covering the whole image
        for s in bar:
            c = _cache_box(np.asarray(s["image"]), s["box"], cfg, self.size, self.seed)
            if c.sources:
                self.boxes.append(c)
            else:
                self.skipped.append(str(s.get("case_id", "?")))
        if not self.boxes:
            raise FlipsegError("every box covers its whole image: no pseudo samples possible")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.boxes) * self.per_box

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        c = self.boxes[index // self.per_box]
        label = NODULE if index % self.per_box < self.cfg.positives else NORMAL
        x = None
        if rng.random() >= self.cfg.fill_prob:
            if label == NODULE:
                b = sample_positive_boxes(c.box, c.image.shape, 1, rng)[0]
            else:
                found = sample_negative_boxes(c.box, c.image.shape, 1, rng)
                b = found[0] if found else None
            if b is not None:
                crop = np.asarray(c.image[view_box(b, c.image.shape, self.cfg.margin).slices()])
                x = resize(crop.astype(np.float32), (self.size,) * self.nd)
        if x is None:
            x = self._filled(c, label, rng)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / 255.0)[None]
        if self.augment:
            t = self._augment(t, rng)
        return t, label

    def _filled(self, c: _BoxCache, label: int, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        src = c.sources[int(rng.integers(len(c.sources)))]
        if cfg.fill_scheme == "residual":
            ratio, order = _residual_fill(c.order, label, cfg, rng)
        else:
            gap = cfg.fill_gap
            ratio = rng.uniform(0.0, 0.5 - gap) if label == NODULE else rng.uniform(0.5 + gap, 1.0)
            order = rng.permutation(c.order) if rng.random() < cfg.fill_random_order else c.order
        return superpixel_fill(c.canvas, c.canvas_box, src, c.labels, order, ratio)

    def _augment(self, t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Flips, rotation in the (y, x) plane, shift and gamma on a [1, *S] tensor."""
        cfg = self.cfg
        nd = self.nd
        if cfg.flip and rng.random() < 0.5:
            t = t.flip(-1)
        if cfg.flip and nd == 3 and rng.random() < 0.5:
            t = t.flip(1)
        angle = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
        shift = rng.uniform(-cfg.shift, cfg.shift, size=nd) * 2.0  # normalised coords span 2
        if cfg.rotation > 0 or cfg.shift > 0:
            theta = torch.eye(nd, nd + 1, dtype=torch.float32)
            cos, sin = math.cos(angle), math.sin(angle)
            # affine_grid orders coordinates (x, y[, z]); rotate x and y
            theta[0, 0], theta[0, 1], theta[1, 0], theta[1, 1] = cos, -sin, sin, cos
            theta[:, nd] = torch.tensor(shift, dtype=torch.float32)
            # [1, *S, nd] sampling positions in (x, y[, z]) order; an elementwise product
            # instead of a matmul keeps this cheap on busy CPUs
            grid = (_base_grid(tuple(t.shape[1:]))[..., None, :] * theta).sum(-1)[None]
            t = F.grid_sample(t[None], grid, mode="bilinear", padding_mode="reflection",
                              align_corners=False)[0]
        gamma = math.exp(rng.uniform(math.log(cfg.gamma_min), math.log(cfg.gamma_max)))
        return t.clamp(0.0, 1.0).pow(gamma)
