"""Superpixels (2D) and supervoxels (3D), their centroids and visiting order.

All functions take and return plain numpy arrays. Label maps are ``int32`` with
labels ``0 .. N-1`` (contiguous, every label present) and ``-1`` for pixels
outside an optional mask. Arrays are indexed ``[y, x]`` in 2D and ``[z, y, x]``
in 3D, as everywhere in flipseg.

Methods:

* ``"slic"`` -- :func:`skimage.segmentation.slic` on the greyscale image, 2D or
  3D (with voxel ``spacing``).
* ``"seeds"`` -- OpenCV's SEEDS (``cv2.ximgproc``), 2D only. Its superpixels
  live on a block grid, so the count is the grid count nearest ``n_segments``
  and is limited to about ``H * W / 16``.
* ``"lsc"`` -- OpenCV's Linear Spectral Clustering, 2D only.

Intensities are first stretched robustly (1st-99th percentile of the image, or
of the masked pixels, to ``[0, 1]``), so the compactness defaults below suit
0-255 ultrasound whatever its gain.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from skimage.segmentation import slic

from flipseg.errors import FlipsegError

__all__ = [
    "SUPERPIXEL_METHODS",
    "DEFAULT_COMPACTNESS",
    "superpixels",
    "relabel_contiguous",
    "label_centroids",
    "order_labels",
]

#: Valid ``method`` names and the dimensionalities each supports.
SUPERPIXEL_METHODS: dict[str, tuple[int, ...]] = {"slic": (2, 3), "seeds": (2,), "lsc": (2,)}

#: Compactness used when ``compactness=None``. For ``"slic"`` it weighs space
#: against the stretched ``[0, 1]`` intensity (0.3 keeps speckled ultrasound
#: from fragmenting, yet follows lesion edges); for ``"lsc"`` it is OpenCV's
#: ``ratio``; for ``"seeds"`` it is the shape prior (an integer 0-5).
DEFAULT_COMPACTNESS: dict[str, float] = {"slic": 0.3, "seeds": 2, "lsc": 0.075}

_ORDERS = ("inner", "index")
_SEEDS_LEVELS = 2  # block levels of SEEDS (OpenCV needs >= 2)


def superpixels(
    image: np.ndarray,
    n_segments: int,
    *,
    method: str = "slic",
    compactness: float | None = None,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    sigma: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Over-segment a greyscale image into about ``n_segments`` regions.

    Parameters
    ----------
    image : (H, W) or (D, H, W) array
        Greyscale intensities in any range (typically 0-255).
    n_segments : int
        Approximate number of superpixels wanted (>= 1).
    method : {"slic", "seeds", "lsc"}
        Algorithm; ``"seeds"`` and ``"lsc"`` are 2D only.
    compactness : float, optional
        Shape regularity; None uses :data:`DEFAULT_COMPACTNESS` for ``method``.
    mask : bool array of ``image.shape``, optional
        Only pixels where True are labelled; the rest get ``-1``. For
        ``"slic"`` the seeds are placed inside the mask; the OpenCV methods
        segment the whole image and cut the result with the mask.
    spacing : sequence of float, optional
        Pixel (voxel) size per axis in array order; ``"slic"`` only. Makes
        supervoxels isotropic in physical units on anisotropic volumes.
    sigma : float
        Gaussian pre-smoothing (pixels; scaled by ``spacing``) for ``"slic"``;
        0 disables it. The default 1 keeps speckle from fragmenting the
        superpixels (which connectivity enforcement then merges, leaving far
        fewer than ``n_segments``) and costs nothing in boundary adherence.
    seed : int
        Seeds OpenCV's random generator, for reproducibility (SLIC itself is
        deterministic).

    Returns
    -------
    labels : int32 array of ``image.shape``
        Labels ``0 .. N-1``, contiguous; ``-1`` outside ``mask``.

    Raises
    ------
    FlipsegError
        Image not 2D/3D, ``n_segments < 1``, unknown ``method``, a 2D-only
        method on a 3D image, a mask of another shape or with no True pixel,
        or ``spacing`` of the wrong length.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise FlipsegError(f"superpixels need a 2D or 3D image, got shape {image.shape}")
    if int(n_segments) < 1:
        raise FlipsegError(f"n_segments must be >= 1, got {n_segments}")
    if method not in SUPERPIXEL_METHODS:
        valid = ", ".join(SUPERPIXEL_METHODS)
        raise FlipsegError(f"unknown superpixel method {method!r}; choose one of: {valid}")
    if image.ndim not in SUPERPIXEL_METHODS[method]:
        raise FlipsegError(
            f"superpixel method {method!r} is 2D only, got a {image.ndim}D image "
            f"of shape {image.shape}; use 'slic' for volumes"
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise FlipsegError(f"mask shape {mask.shape} does not match image shape {image.shape}")
        if not mask.any():
            raise FlipsegError("superpixel mask has no True pixel")
    if spacing is not None and len(spacing) != image.ndim:
        raise FlipsegError(f"spacing {tuple(spacing)} needs {image.ndim} values for a {image.ndim}D image")
    c = DEFAULT_COMPACTNESS[method] if compactness is None else compactness
    unit = _stretch(image, mask)  # float32 in [0, 1]
    n = int(n_segments)

    if method == "slic":
        labels = slic(
            unit,
            n_segments=n,
            compactness=float(c),
            sigma=sigma,
            spacing=None if spacing is None else np.asarray(spacing, dtype=np.float64),
            channel_axis=None,
            start_label=0,
            enforce_connectivity=True,
            mask=mask,
        )
    else:
        cv2.setRNGSeed(int(seed))
        grey = np.rint(unit * 255.0).astype(np.uint8)
        labels = _seeds(grey, n, int(c)) if method == "seeds" else _lsc(grey, n, float(c))
        if mask is not None:
            labels[~mask] = -1
    return relabel_contiguous(labels)


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map the non-negative labels present onto ``0 .. N-1`` keeping their order.

    Parameters
    ----------
    labels : int array, any shape
        Negative values mean "no label" and are kept as ``-1``.

    Returns
    -------
    int32 array of ``labels.shape``
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    valid = flat >= 0
    has_neg = not valid.all()
    if not valid.any():
        return np.full(labels.shape, -1, dtype=np.int32)
    present = np.bincount(flat[valid] if has_neg else flat) > 0
    lut = (np.cumsum(present) - 1).astype(np.int32)
    if has_neg:
        out = np.full(flat.shape, -1, dtype=np.int32)
        out[valid] = lut[flat[valid]]
        return out.reshape(labels.shape)
    return lut[labels]


def label_centroids(labels: np.ndarray, *, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Centroid of every label.

    Parameters
    ----------
    labels : (H, W) or (D, H, W) int array
        Labels ``0 .. N-1``; negative values are ignored.
    spacing : sequence of float, optional
        Pixel size per axis (array order). When given, centroids are in
        physical units (index * spacing), otherwise in pixel indices.

    Returns
    -------
    centroids : (N, ndim) float64
        Row ``i`` is the mean coordinate of label ``i`` in array axis order;
        NaN for a label id below ``N`` that has no pixel.
    """
    labels = np.asarray(labels)
    nd = labels.ndim
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 0
    if n <= 0:
        return np.zeros((0, nd), dtype=np.float64)
    valid = flat >= 0
    keep = None if valid.all() else valid
    ids = flat if keep is None else flat[keep]
    counts = np.bincount(ids, minlength=n).astype(np.float64)
    out = np.empty((n, nd), dtype=np.float64)
    for ax in range(nd):
        shape = [1] * nd
        shape[ax] = labels.shape[ax]
        coord = np.broadcast_to(
            np.arange(labels.shape[ax], dtype=np.float64).reshape(shape), labels.shape
        ).ravel()
        if keep is not None:
            coord = coord[keep]
        out[:, ax] = np.bincount(ids, weights=coord, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= counts[:, None]
    if spacing is not None:
        if len(spacing) != nd:
            raise FlipsegError(f"spacing {tuple(spacing)} needs {nd} values for a {nd}D label map")
        out *= np.asarray(spacing, dtype=np.float64)
    return out


def order_labels(
    labels: np.ndarray,
    *,
    center: Sequence[float],
    order: str = "inner",
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Visiting order of the labels of a label map.

    Parameters
    ----------
    labels : (H, W) or (D, H, W) int array
        Labels ``0 .. N-1`` (negative = unlabelled).
    center : sequence of float
        Reference point in pixel indices, array axis order (e.g. the box
        centre ``(shape - 1) / 2`` of a box-local label map).
    order : {"inner", "index"}
        ``"inner"``: by distance from each label's centroid to ``center``,
        nearest first, ties broken by label id; ``"index"``: label id order.
    spacing : sequence of float, optional
        Pixel size per axis; distances are then measured in physical units.

    Returns
    -------
    ids : (N,) int64
        A permutation of ``0 .. N-1``. Ids with no pixel (NaN centroid) come
        last.

    Raises
    ------
    FlipsegError
        Unknown ``order`` or ``center``/``spacing`` of the wrong length.
    """
    labels = np.asarray(labels)
    if order not in _ORDERS:
        raise FlipsegError(f"unknown superpixel order {order!r}; choose one of: {', '.join(_ORDERS)}")
    center_arr = np.asarray(center, dtype=np.float64)
    if center_arr.shape != (labels.ndim,):
        raise FlipsegError(
            f"center {tuple(np.ravel(center))} needs {labels.ndim} values for a {labels.ndim}D label map"
        )
    cent = label_centroids(labels)  # (N, nd) pixel indices
    ids = np.arange(cent.shape[0], dtype=np.int64)
    if order == "index":
        return ids
    diff = cent - center_arr
    if spacing is not None:
        if len(spacing) != labels.ndim:
            raise FlipsegError(
                f"spacing {tuple(spacing)} needs {labels.ndim} values for a {labels.ndim}D label map"
            )
        diff = diff * np.asarray(spacing, dtype=np.float64)
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    dist = np.where(np.isnan(dist), np.inf, dist)
    return ids[np.lexsort((ids, dist))]


# ----------------------------------------------------------------- internals
def _stretch(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Percentile (1-99) stretch to float32 ``[0, 1]``; constant images -> zeros."""
    img = image.astype(np.float32, copy=False)
    values = img if mask is None else img[mask]
    lo, hi = np.percentile(values, (1.0, 99.0))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise FlipsegError("image for superpixels contains NaN or infinite values")
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.float32)
    out = (img - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _seeds(grey: np.ndarray, n: int, prior: int) -> np.ndarray:
    """SEEDS labels for a uint8 (H, W) image.

    SEEDS only offers counts on a block grid, and OpenCV crashes (or hangs) on
    requests its grid cannot hold. :func:`_seeds_count` predicts the count of
    a request exactly as OpenCV computes it; among requests from ``n / 2`` to
    ``4 n`` the valid one whose count is nearest ``n`` is run.
    """
    h, w = grey.shape
    best: tuple[int, int] | None = None  # (|count - n|, request)
    for factor in (1.0, 0.5, 0.7, 0.85, 1.2, 1.4, 1.7, 2.0, 3.0, 4.0):
        req = max(1, int(round(n * factor)))
        count = _seeds_count(h, w, req)
        if count is not None and (best is None or abs(count - n) < best[0]):
            best = (abs(count - n), req)
    if best is None:
        raise FlipsegError(
            f"image of shape {grey.shape} is too small or too elongated for SEEDS "
            f"superpixels; use method='slic'"
        )
    seeds = cv2.ximgproc.createSuperpixelSEEDS(
        w, h, 1, best[1], _SEEDS_LEVELS, int(np.clip(prior, 0, 5)), 5, False
    )
    seeds.iterate(grey, 4)
    return seeds.getLabels().astype(np.int32)


def _seeds_count(h: int, w: int, request: int) -> int | None:
    """Superpixel count OpenCV's SEEDS gives for ``request`` on an (h, w) image.

    Mirrors its grid set-up (float32 arithmetic included). Returns None for
    requests it cannot handle: no block along an axis, or fewer than 2 block
    levels (these crash or hang inside OpenCV).
    """
    f32 = np.float32
    request = max(request, 10)  # OpenCV's own lower bound
    n_h = int(np.sqrt(f32(request) * f32(h) / f32(w)))
    n_w = n_h * w // h
    if n_h < 1 or n_w < 1:
        return None
    levels = _SEEDS_LEVELS + 1
    while True:
        levels -= 1
        if levels < 2:
            return None
        size_w = f32(w) / f32(n_w) / f32(1 << (levels - 1))
        size_h = f32(h) / f32(n_h) / f32(1 << (levels - 1))
        if size_w >= 1 and size_h >= 1:
            break
    blocks_w = w // int(np.ceil(size_w)) >> (levels - 1)
    blocks_h = h // int(np.ceil(size_h)) >> (levels - 1)
    if blocks_w < 1 or blocks_h < 1:
        return None
    return blocks_w * blocks_h


def _lsc(grey: np.ndarray, n: int, ratio: float) -> np.ndarray:
    """LSC labels for a uint8 (H, W) image, small fragments merged.

    OpenCV's multi-threaded LSC is not reproducible (a race: about one run in
    forty differs), so it runs on one OpenCV thread, restored afterwards.
    """
    h, w = grey.shape
    region = max(2, int(round(np.sqrt(h * w / n))))
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        lsc = cv2.ximgproc.createSuperpixelLSC(grey, region, ratio)
        lsc.iterate(10)
        lsc.enforceLabelConnectivity(max(1, region * region // 4))
        labels = lsc.getLabels()
    finally:
        cv2.setNumThreads(threads)
    return labels.astype(np.int32)
