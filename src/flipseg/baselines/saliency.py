"""Static-saliency baselines (OpenCV ``cv2.saliency``) thresholded inside the box.

Both are generic, training-free saliency maps, not lesion detectors: they
mark what stands out from its context, which in ultrasound is often speckle,
bright tissue or the lesion rim rather than the dark lesion itself. So the
Otsu split of the map inside the box is read by the rule the other baselines
use: the lesion is the side with the lower mean intensity (hypo-echoic),
``polarity="dark"``. ``polarity="salient"`` keeps the textbook reading (the
more salient side) instead. On 80 BUS-BRA images with tight boxes:
mean Dice of spectral residual 0.81 ("dark") vs 0.16 ("salient"),
fine-grained 0.66 vs 0.57 (inscribed ellipse 0.90).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from flipseg.baselines import register_baseline
from flipseg.baselines.contours import box_crop, clean_mask, robust_unit
from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.errors import FlipsegError

__all__ = ["saliency_spectral_residual", "saliency_fine_grained", "saliency_mask"]


def saliency_mask(
    image: np.ndarray,
    box: Box,
    compute: Callable[[np.ndarray], np.ndarray | None],
    *,
    margin: float = 0.5,
    sigma: float = 0.0,
    polarity: str = "dark",
) -> np.ndarray:
    """Threshold a saliency map of the crop around ``box`` by Otsu inside the box.

    Parameters
    ----------
    image : (H, W) float array
    box : Box
    compute : callable
        (h, w) uint8 -> (h, w) float saliency map, or None when the saliency
        algorithm reports failure.
    margin : float
        Context around the box, relative to its extent (at least 16 px).
    sigma : float
        Optional Gaussian smoothing of the map (pixels) before thresholding.
    polarity : {"dark", "salient"}
        Which side of the threshold is the lesion: the one with the lower mean
        image intensity, or the more salient one.

    Returns
    -------
    (H, W) bool mask, True only inside the box: the chosen side's largest
    component, hole-filled. Rule: no map, a constant map inside the box
    (nothing to threshold) or an empty result gives the inscribed ellipse.

    Raises
    ------
    FlipsegError
        A non-2D image, unknown ``polarity``, or a box the image cannot hold.
    """
    if image.ndim != 2:
        raise FlipsegError(f"saliency baselines are 2D only, got an image of shape {image.shape}")
    if polarity not in ("dark", "salient"):
        raise FlipsegError(f"saliency polarity {polarity!r} is not one of: dark, salient")
    crop = box_crop(image, box, margin=margin, min_margin=16)
    grey = np.rint(robust_unit(crop.image) * 255.0).astype(np.uint8)
    sal = compute(grey)
    if sal is None:
        return inscribed_ellipse(image, crop.box)
    sal = np.asarray(sal, dtype=np.float32)
    if sal.shape != grey.shape:
        sal = cv2.resize(sal, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        sal = cv2.GaussianBlur(sal, (0, 0), sigma)
    inside = crop.box_mask()
    values = sal[inside]
    if values.max() <= values.min():
        return inscribed_ellipse(image, crop.box)
    high = (sal > threshold_otsu(values)) & inside
    low = inside & ~high
    side = high
    if polarity == "dark" and high.any() and low.any():
        side = high if crop.image[high].mean() <= crop.image[low].mean() else low
    mask = clean_mask(side, inside)
    if not mask.any():
        return inscribed_ellipse(image, crop.box)
    return crop.paste(mask)


def _spectral_residual(grey: np.ndarray) -> np.ndarray | None:
    ok, sal = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(grey)
    return sal if ok else None


def _fine_grained(grey: np.ndarray) -> np.ndarray | None:
    ok, sal = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(grey)
    return sal if ok else None


@register_baseline("saliency-sr", dims=(2,))
def saliency_spectral_residual(
    image: np.ndarray,
    box: Box,
    *,
    rng: np.random.Generator | None = None,
    margin: float = 1.0,
    sigma: float = 2.0,
    polarity: str = "dark",
) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang) of the crop, Otsu inside the box.

    OpenCV computes it on a 64x64 thumbnail, so the map is coarse; it is
    smoothed by ``sigma`` pixels. See :func:`saliency_mask` for ``polarity``.
    Deterministic (``rng`` unused).
    """
    return saliency_mask(image, box, _spectral_residual, margin=margin, sigma=sigma, polarity=polarity)


@register_baseline("saliency-fg", dims=(2,))
def saliency_fine_grained(
    image: np.ndarray,
    box: Box,
    *,
    rng: np.random.Generator | None = None,
    margin: float = 0.5,
    sigma: float = 8.0,
    polarity: str = "dark",
) -> np.ndarray:
    """Fine-grained (centre-surround) saliency of the crop, Otsu inside the box.

    Smoothed by ``sigma`` pixels; see :func:`saliency_mask` for ``polarity``.
    Deterministic (``rng`` unused).
    """
    return saliency_mask(image, box, _fine_grained, margin=margin, sigma=sigma, polarity=polarity)
