"""Flip Learning rewards, equations (1)-(5) of the paper, vectorised.

Intensity distributions are 256-bin histograms of the *original* (unerased)
intensities on the 0-255 scale. The Wasserstein-1 distance between two 1D
distributions is the L1 distance between their CDFs times the bin width, which
is exact for intensities quantised to the bins.

Empty-distribution rule: a term that needs a distance involving an empty
region (no pixel erased yet, or nothing left as background) is 0.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "N_BINS",
    "superpixel_histograms",
    "wasserstein1_hist",
    "csr",
    "idr1",
    "idr2",
    "prior_reward",
    "total_reward",
]

N_BINS = 256


def superpixel_histograms(intensity: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Per-superpixel intensity histograms.

    Parameters
    ----------
    intensity : ndarray, any shape
        Intensities on the 0-255 scale (clipped, rounded to bins).
    labels : ndarray of int, same shape
        Superpixel id per pixel; ids outside ``[0, n_labels)`` are ignored.
    n_labels : int

    Returns
    -------
    ndarray, shape (n_labels, 256), float64 counts.
    """
    lab = labels.ravel()
    keep = (lab >= 0) & (lab < n_labels)
    bins = np.clip(np.rint(intensity.ravel()[keep]), 0, N_BINS - 1).astype(np.int64)
    flat = lab[keep].astype(np.int64) * N_BINS + bins
    return np.bincount(flat, minlength=n_labels * N_BINS).reshape(n_labels, N_BINS).astype(
        np.float64
    )


def wasserstein1_hist(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """W1 distance between histograms along the last axis (broadcasting).

    Returns NaN where either histogram is empty.
    """
    h1 = np.asarray(h1, dtype=np.float64)
    h2 = np.asarray(h2, dtype=np.float64)
    n1 = h1.sum(-1, keepdims=True)
    n2 = h2.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = np.cumsum(h1, -1) / n1
        c2 = np.cumsum(h2, -1) / n2
    d = np.abs(c1 - c2).sum(-1)
    empty = (n1[..., 0] <= 0) | (n2[..., 0] <= 0)
    return np.where(empty, np.nan, d)


def _sign(x: np.ndarray) -> np.ndarray:
    return np.sign(np.nan_to_num(x, nan=0.0))


def csr(score_prev: np.ndarray, score_now: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Eq. (1): sign of the change of the classifier's *normal* score.

    ``tolerance``: changes with ``|SC_t - SC_{t-1}| <= tolerance`` count as no change
    (0). The paper's ``= 0`` case, read for a continuous score; 0 keeps it literal.
    """
    delta = np.asarray(score_now, float) - np.asarray(score_prev, float)
    if tolerance > 0:
        delta = np.where(np.abs(delta) <= tolerance, 0.0, delta)
    return _sign(delta)


def idr1(fg_prev: np.ndarray, fg_now: np.ndarray, theta: float = 25.0) -> np.ndarray:
    """Eq. (2): +1 if 0 < WD(FG_{t-1}, FG_t) <= theta, 0 if it is 0, -1 above theta."""
    wd = wasserstein1_hist(fg_prev, fg_now)
    out = np.where(wd > theta, -1.0, np.where(wd > 0, 1.0, 0.0))
    return np.where(np.isnan(wd), 0.0, out)


def idr2(
    fg_prev: np.ndarray, bg_prev: np.ndarray, fg_now: np.ndarray, bg_now: np.ndarray
) -> np.ndarray:
    """Eqs. (3)-(5): sign of WD(BG_t, FG_t) - WD(BG_{t-1}, FG_{t-1})."""
    wd2 = wasserstein1_hist(bg_prev, fg_prev)
    wd3 = wasserstein1_hist(bg_now, fg_now)
    diff = wd3 - wd2
    return np.where(np.isnan(diff), 0.0, np.sign(np.nan_to_num(diff)))


def prior_reward(
    radius: np.ndarray, sign: np.ndarray, prior_radius: float = 1.0, core_radius: float = 0.0
) -> np.ndarray:
    """Box-prior reward (our addition, not in the paper).

    +1 for erasing a superpixel whose centroid lies inside the box's inscribed ellipse
    scaled by ``prior_radius``, -1 outside, and +2 inside the core ellipse scaled by
    ``core_radius`` (0 = no core), enough to outweigh a negative IDR2 there. The same
    assumption as the paper's inner-to-outer traversal (the centre is lesion), made a
    reward.

    ``radius``: normalised elliptical radius of the superpixel centroids (1 = on the
    inscribed ellipse); ``sign``: +1 erased, -1 restored, 0 unchanged.
    """
    r = np.asarray(radius, float)
    value = np.where(r < core_radius, 2.0, np.where(r < prior_radius, 1.0, -1.0))
    return value * np.asarray(sign, float)


def total_reward(
    score_prev: np.ndarray,
    score_now: np.ndarray,
    fg_prev: np.ndarray,
    bg_prev: np.ndarray,
    fg_now: np.ndarray,
    bg_now: np.ndarray,
    *,
    theta: float = 25.0,
    use_csr: bool = True,
    use_idr1: bool = True,
    use_idr2: bool = True,
    step_region: np.ndarray | None = None,
    csr_tolerance: float = 0.0,
) -> np.ndarray:
    """R = CSR + IDR1 + IDR2 with each term switchable (ablation).

    ``score_*`` have shape (...), histograms (..., 256); returns shape (...).
    ``step_region``: if given, IDR1 compares FG_{t-1} with the region erased at
    this step (its histogram) instead of with FG_t (the ``idr1_reference="step"``
    option); otherwise eq. (2) as printed. ``csr_tolerance``: see :func:`csr`.
    """
    r = np.zeros(np.broadcast(np.asarray(score_prev), np.asarray(score_now)).shape)
    if use_csr:
        r = r + csr(score_prev, score_now, csr_tolerance)
    if use_idr1:
        r = r + idr1(fg_prev, fg_now if step_region is None else step_region, theta)
    if use_idr2:
        r = r + idr2(fg_prev, bg_prev, fg_now, bg_now)
    return r
