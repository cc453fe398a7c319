"""Superpixel region growing from the box centre ("sp-grow")."""

from __future__ import annotations

import numpy as np

from flipseg.baselines import register_baseline
from flipseg.baselines.contours import box_crop, clean_mask, robust_unit, work_shape
from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.resize import resize
from flipseg.superpixels import superpixels

__all__ = ["superpixel_grow", "label_adjacency"]


def label_adjacency(labels: np.ndarray) -> np.ndarray:
    """(N, N) bool matrix, True where two labels touch (face neighbours, 2D or 3D)."""
    n = int(labels.max()) + 1
    adj = np.zeros((n, n), dtype=bool)
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        diff = lo != hi
        adj[lo[diff], hi[diff]] = True
    return adj | adj.T


@register_baseline("sp-grow", dims=(2, 3))
def superpixel_grow(
    image: np.ndarray,
    box: Box,
    *,
    rng: np.random.Generator | None = None,
    n_segments: int | None = None,
    tolerance: float = 0.7,
    min_contrast: float = 0.1,
    seed_scale: float = 0.25,
    max_side: int | None = None,
) -> np.ndarray:
    """Grow a hypo-echoic region over SLIC superpixels from the box centre.

    The box (resized so its longest side is ``max_side``; None: 128 in 2D,
    48 in 3D) is
    stretched robustly to [0, 1] and split into ``n_segments`` superpixels
    (None: 200 in 2D, 400 in 3D). Then:

    1. seed region R = the superpixels at least half covered by the inscribed
       ellipse scaled by ``seed_scale``, plus the one at the box centre;
    2. reference ``b`` = area-weighted mean intensity of the superpixels
       touching the box border (the surroundings);
    3. repeatedly take the darkest superpixel adjacent to R and add it if its
       mean is at most ``r + tolerance * max(b - r, min_contrast)``, with ``r``
       R's area-weighted mean: within ``tolerance`` of the way from the
       lesion's brightness to the surroundings' (hypo-echoic lesions; darker
       superpixels always pass);
    4. stop when the darkest candidate fails (then every candidate would), or
       when none is left.

    R, hole-filled and reduced to its largest component, is the mask.
    Deterministic (SLIC is; ``rng`` is unused). Rule: a box under 4 pixels
    per side in any direction gives the inscribed ellipse.
    """
    box = box.validate(image.shape)
    if min(box.shape) < 4:
        return inscribed_ellipse(image, box)
    crop = box_crop(image, box, margin=0.0, min_margin=0)  # the box itself
    wshape = work_shape(crop.image.shape, max_side, default_2d=128, default_3d=48)
    unit = resize(robust_unit(crop.image), wshape)
    if n_segments is None:
        n_segments = 200 if image.ndim == 2 else 400
    labels = superpixels(unit, n_segments, method="slic")
    n = int(labels.max()) + 1
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    total = np.bincount(flat, weights=unit.ravel().astype(np.float64), minlength=n)
    mean = total / area
    adj = label_adjacency(labels)

    # 1. seeds
    core = resize(crop.ellipse(seed_scale).astype(np.uint8), wshape, order=0).astype(bool)
    covered = np.bincount(flat, weights=core.ravel().astype(np.float64), minlength=n)
    region = covered >= 0.5 * area
    region[labels[tuple(s // 2 for s in wshape)]] = True
    # 2. surroundings
    border = np.zeros(n, dtype=bool)
    for ax in range(labels.ndim):
        edge = np.moveaxis(labels, ax, 0)
        border[edge[0].ravel()] = True
        border[edge[-1].ravel()] = True
    b = total[border].sum() / area[border].sum()
    # 3-4. greedy growth
    while True:
        frontier = np.flatnonzero(adj[region].any(axis=0) & ~region)
        if frontier.size == 0:
            break
        r = total[region].sum() / area[region].sum()
        best = frontier[np.argmin(mean[frontier])]
        if mean[best] > r + tolerance * max(b - r, min_contrast):
            break
        region[best] = True

    grown = region[labels]
    full = resize(grown.astype(np.uint8), crop.image.shape, order=0).astype(bool)
    return crop.paste(clean_mask(full, np.ones(full.shape, dtype=bool)))
