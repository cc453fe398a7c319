"""GrabCut initialised with the box, on a 3-channel speckle-aware feature image.

GrabCut on a raw greyscale ultrasound image collapses: its colour GMMs see one
speckled channel, and the dark lesion is explained as well by the background
model (shadows and fat around it are dark too), so the foreground shrinks to a
few bright pixels. Two choices keep it well-posed here, both switchable:

* features (``location=True``): channel 0 = intensity stretched robustly over
  the crop (1st-99th percentile), channel 1 = its 5x5 median filter (speckle
  removed, edges kept), channel 2 = the normalised elliptical distance to the
  box centre (0 at the centre, 127 on the inscribed ellipse, 255 beyond twice
  it). The last makes the GMMs location-aware; with ``location=False`` it is
  replaced by a Gaussian blur (sigma 4 px) of the intensity.
* a certain-foreground core (``core=0.5``): the inscribed ellipse scaled by
  ``core`` about the box centre is marked ``GC_FGD``, as a user's centre
  stroke would be.

Measured on 80 BUS-BRA images with tight boxes: mean Dice 0.92 (inscribed
ellipse 0.90); with ``location=False, core=0`` mean 0.64, and 29% of the
cases collapse (Dice < 0.5).
"""

from __future__ import annotations

import cv2
import numpy as np

from flipseg.baselines import register_baseline
from flipseg.baselines.contours import BoxCrop, box_crop, clean_mask, robust_unit
from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.resize import resize

__all__ = ["grabcut", "grabcut_features"]

#: Below this many pixels in the box GrabCut's 5-component GMMs cannot be fitted.
_MIN_BOX_PIXELS = 25


def grabcut_features(crop: np.ndarray, box: Box, *, location: bool = True) -> np.ndarray:
    """(H, W) greyscale crop -> (H, W, 3) uint8 feature image for GrabCut.

    Parameters
    ----------
    crop : (H, W) float array
        Intensities of the crop (any range).
    box : Box
        The box in crop coordinates (centre and half-axes of the location channel).
    location : bool
        Third channel = elliptical distance to the box centre (True) or a
        Gaussian blur of the intensity (False); see the module docstring.

    Returns
    -------
    (H, W, 3) uint8
    """
    grey = np.rint(robust_unit(crop) * 255.0).astype(np.uint8)
    med = cv2.medianBlur(grey, 5)
    if location:
        yy, xx = np.ogrid[: crop.shape[0], : crop.shape[1]]
        (cy, cx), (hy, hx) = box.center, (box.shape[0] / 2.0, box.shape[1] / 2.0)
        r = np.sqrt(((yy + 0.5 - cy) / hy) ** 2 + ((xx + 0.5 - cx) / hx) ** 2)
        third = np.clip(r * 127.0, 0, 255).astype(np.uint8)
    else:
        third = cv2.GaussianBlur(grey, (0, 0), 4.0)
    return np.dstack([grey, med, third])


@register_baseline("grabcut", dims=(2,))
def grabcut(
    image: np.ndarray,
    box: Box,
    *,
    rng: np.random.Generator | None = None,
    iterations: int = 3,
    margin: float = 0.25,
    location: bool = True,
    core: float = 0.5,
    max_side: int = 200,
    init: np.ndarray | None = None,
    init_core: float = 0.0,
) -> np.ndarray:
    """OpenCV GrabCut with everything outside the box as certain background.

    Works on the box plus ``margin`` (relative, at least 10 px) of context,
    downsampled so its longest side is at most ``max_side``. The mask
    initialisation is ``GC_INIT_WITH_RECT``'s (outside the box = background,
    inside = probable foreground) plus the certain-foreground ``core``
    (0 disables it); when the box covers the whole crop (a box filling the
    image) the crop's 1-pixel border is background instead. ``rng`` seeds
    OpenCV's generator (GrabCut's k-means).

    ``init`` (a mask of the image's shape, e.g. another method's output) refines
    that mask instead: inside the box, ``init`` is probable foreground and the
    rest probable background; ``core`` is then ignored, and the part of ``init``
    deeper than ``init_core`` times its largest inscribed radius is certain
    foreground (0 disables it).

    Rules (not error handling): a box of fewer than 25 pixels, or an empty
    GrabCut foreground, gives the inscribed ellipse. The foreground is reduced
    to its largest component, hole-filled and clipped to the box.

    Raises
    ------
    FlipsegError
        A non-2D image or a box the image cannot hold.
    """
    if image.ndim != 2:
        raise FlipsegError(f"grabcut is 2D only, got an image of shape {image.shape}")
    box = box.validate(image.shape)
    if box.size < _MIN_BOX_PIXELS:
        return inscribed_ellipse(image, box)
    crop = box_crop(image, box, margin=margin, min_margin=10)
    scale = min(1.0, max_side / max(crop.image.shape))
    work_shape = tuple(max(8, int(round(s * scale))) for s in crop.image.shape)
    work_box = Box.from_lo_hi(
        [int(np.floor(lo * w / s)) for lo, w, s in zip(crop.local.lo, work_shape, crop.image.shape)],
        [
            max(int(np.floor(lo * w / s)) + 1, int(np.ceil(hi * w / s)))
            for lo, hi, w, s in zip(crop.local.lo, crop.local.hi, work_shape, crop.image.shape)
        ],
    )
    features = grabcut_features(resize(crop.image, work_shape), work_box, location=location)

    inside = work_box.to_mask(work_shape)
    gc_mask = np.where(inside, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    if init is not None:
        prior = _prior_on_grid(init, image.shape, crop, work_shape)
        gc_mask[inside & ~prior] = cv2.GC_PR_BGD
        if init_core > 0 and prior.any():
            depth = cv2.distanceTransform(prior.astype(np.uint8), cv2.DIST_L2, 3)
            gc_mask[inside & (depth > init_core * depth.max())] = cv2.GC_FGD
    elif core > 0:
        sure = resize(crop.ellipse(core).astype(np.uint8), work_shape, order=0).astype(bool)
        gc_mask[sure & inside] = cv2.GC_FGD
    if inside.all():
        gc_mask[[0, -1], :] = cv2.GC_BGD
        gc_mask[:, [0, -1]] = cv2.GC_BGD

    seed = 0 if rng is None else int(rng.integers(0, 2**31 - 1))
    cv2.setRNGSeed(seed)
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.grabCut(features, gc_mask, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)

    fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
    fg = resize(fg.astype(np.uint8), crop.image.shape, order=0).astype(bool)
    out = crop.paste(clean_mask(fg, crop.box_mask()))
    if not out.any():  # documented rule: empty GrabCut foreground -> inscribed ellipse
        return inscribed_ellipse(image, box)
    return out


def _prior_on_grid(init: np.ndarray, shape: tuple[int, ...], crop: BoxCrop,
                   work_shape: tuple[int, ...]) -> np.ndarray:
    """``init`` (image shape) cut to the crop and resized to GrabCut's working grid."""
    init = np.asarray(init, dtype=bool)
    if init.shape != tuple(shape):
        raise FlipsegError(f"grabcut init mask has shape {init.shape}, the image {tuple(shape)}")
    return resize(crop.cut(init).astype(np.uint8), work_shape, order=0).astype(bool)
