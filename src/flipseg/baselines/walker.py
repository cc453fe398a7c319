"""Random-walker baseline seeded by the box."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import random_walker as _random_walker

from flipseg.baselines import register_baseline
from flipseg.baselines.contours import box_crop, clean_mask, robust_unit, work_shape
from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.resize import resize

__all__ = ["random_walker"]


@register_baseline("random-walker", dims=(2, 3))
def random_walker(
    image: np.ndarray,
    box: Box,
    *,
    rng: np.random.Generator | None = None,
    beta: float = 2000.0,
    core: float = 0.5,
    ring: int = 1,
    sigma: float = 1.0,
    max_side: int | None = None,
) -> np.ndarray:
    """:func:`skimage.segmentation.random_walker` with seeds from the box.

    On the box plus a 25% margin, resized so its longest side is
    ``max_side`` (None: 96 in 2D, 40 in 3D), robustly stretched and
    Gaussian-smoothed by ``sigma`` (in working pixels):

    * background seeds: everything outside the box and the box's own border
      ring, ``ring`` working pixels wide;
    * foreground seeds: the inscribed ellipse(oid) scaled by ``core`` about the
      box centre (at least the centre pixel).

    The linear system is solved directly (``mode="bf"``; the conjugate-gradient
    modes leave probabilities outside [0, 1] at this ``beta``). The lesion is
    where the foreground probability exceeds 0.5; largest component,
    hole-filled, clipped to the box. Deterministic (``rng`` unused).

    Rule: a box too small to leave unseeded pixels gives the inscribed ellipse.
    """
    crop = box_crop(image, box)
    wshape = work_shape(crop.image.shape, max_side, default_2d=96, default_3d=40)
    unit = robust_unit(crop.image, crop.image[crop.box_mask()])
    data = ndimage.gaussian_filter(resize(unit, wshape), sigma)

    inside = resize(crop.box_mask().astype(np.uint8), wshape, order=0).astype(bool)
    inner = ndimage.binary_erosion(inside, iterations=ring) if ring > 0 else inside
    if inner.sum() < 2:  # box too thin for its ring: only the outside is background
        inner = inside
    fg = resize(crop.ellipse(core).astype(np.uint8), wshape, order=0).astype(bool) & inner
    if not fg.any():  # core smaller than a working pixel: seed the box centre
        centre = tuple(int(c * w / s) for c, w, s in zip(crop.local.center, wshape, crop.image.shape))
        fg[centre] = inner[centre]
    if not fg.any() or (inner & ~fg).sum() == 0:  # rule: nothing left to decide
        return inscribed_ellipse(image, crop.box)
    seeds = np.where(inner, 0, 2).astype(np.int32)
    seeds[fg] = 1

    prob = _random_walker(data, seeds, beta=beta, mode="bf", return_full_prob=True)
    lesion = prob[0] > 0.5  # [labels, *work_shape], label 1 first
    full = resize(lesion.astype(np.uint8), crop.image.shape, order=0).astype(bool)
    return crop.paste(clean_mask(full, crop.box_mask()))
