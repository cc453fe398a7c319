"""Geometric baselines: the filled box and the inscribed ellipse/ellipsoid."""

from __future__ import annotations

import numpy as np

from flipseg.baselines import register_baseline
from flipseg.boxes import Box

__all__ = ["filled_box", "inscribed_ellipse"]


@register_baseline("box", dims=(2, 3))
def filled_box(image: np.ndarray, box: Box, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Every pixel of the (clipped) box."""
    return box.to_mask(image.shape)


@register_baseline("ellipse", dims=(2, 3))
def inscribed_ellipse(
    image: np.ndarray, box: Box, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The ellipse (ellipsoid) inscribed in the box, pixel centres inside it."""
    box = box.clip(image.shape)
    mask = np.zeros(image.shape, dtype=bool)
    grids = np.ogrid[tuple(slice(l, h) for l, h in zip(box.lo, box.hi))]
    r = np.zeros(box.shape, dtype=np.float64)
    for g, l, h in zip(grids, box.lo, box.hi):
        c = (l + h) / 2.0
        half = (h - l) / 2.0
        r = r + ((g + 0.5 - c) / half) ** 2
    mask[box.slices()] = r <= 1.0
    return mask
