"""Segmentation and classification metrics, plus dataset summaries.

Pure numpy/scipy functions in MONAI's ``compute_*`` style, for 2D ``(H, W)`` and
3D ``(D, H, W)`` masks, with a thin :class:`MetricAccumulator` on top.

Masks are bool arrays (0/1 integer or float arrays are accepted) of the same
shape. Distances are in physical units: ``spacing`` gives the size of one pixel
(voxel) along each array axis, in array axis order; ``None`` means 1.0 per axis,
so distances are in pixels (voxels).

Surfaces and distances
----------------------
The surface of a mask is the mask minus its binary erosion by the face
connected structuring element (``scipy.ndimage.generate_binary_structure(ndim,
1)``, scipy's default and what ``monai.metrics`` uses), with everything outside
the image counted as background. A surface point's distance to the other mask
is the Euclidean distance to the nearest point of the other mask's surface.
HD is the larger of the two directed maxima; HD95 (and any ``percentile``) is
the larger of the two directed percentiles (linear interpolation, as
``numpy.percentile`` and ``torch.quantile``); ASD is the mean over the pooled
distances of both surfaces (the symmetric average surface distance).

Empty masks
-----------
- Both masks empty: Dice = Jaccard = IoU = 1, CON = 1, HD = HD95 = ASD = 0.
- Exactly one mask empty: Dice = Jaccard = IoU = 0, and HD = HD95 = ASD = the
  length of the image diagonal in physical units,
  ``sqrt(sum((shape[i] * spacing[i]) ** 2))`` -- finite, so means stay usable,
  and at least as large as any distance between two points of the image.
- CON (conformity, Chang et al. 2009) is ``1 - (FP + FN) / max(TP, 1)``. For
  TP > 0 this is exactly ``(3 * Dice - 2) / Dice``; with no overlap at all the
  overlap count is taken as one voxel, which keeps the value finite and below
  that of any prediction with the same errors and some overlap (an empty
  prediction of a 100-pixel lesion scores 1 - 100 = -99). Both empty gives 1.
  As in the published tables, CON is unbounded below and its mean is dominated
  by failed cases.
- Background IoU is 1 when both masks cover the whole image.

Summaries use the sample standard deviation (``ddof=1``), as the papers do.

Dataset summaries (one rule, :func:`clip_for_summary` and :func:`undefined_metrics`)
------------------------------------------------------------------------------------
- A metric is *undefined* for a case when its formula has no value there: the overlap
  ratios (Dice, Jaccard, IoU) when both masks are empty (0 / 0), CON when the masks do
  not overlap (TP = 0: it tends to minus infinity), HD, HD95 and ASD when a mask is empty
  (no surface to measure to), background IoU when both masks cover the whole image and
  mIoU when either of its parts is undefined. The per-case value is then the one listed
  under "Empty masks" above (CON: see the next point); a summary counts these cases.
- CON is clipped to [-1, 1] per case before it is averaged (:data:`SUMMARY_BOUNDS`):
  a CON below -1 (Dice below 0.5, or no overlap at all) counts as -1, so one failed case
  moves the mean by at most 2 / n. Per-case tables keep the unclipped value.
- A NaN is never averaged silently: :func:`summarize` leaves it out and its ``n`` counts
  only the values it averaged.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage, stats

from flipseg.errors import FlipsegError

__all__ = [
    "compute_dice",
    "compute_jaccard",
    "compute_conformity",
    "compute_iou",
    "compute_background_iou",
    "compute_mean_iou",
    "compute_hausdorff",
    "compute_hd95",
    "compute_asd",
    "compute_s_measure",
    "segmentation_metrics",
    "compute_classification_metrics",
    "summarize",
    "SUMMARY_BOUNDS",
    "clip_for_summary",
    "undefined_metrics",
    "paired_ttest",
    "MetricAccumulator",
]

SpacingLike = float | Sequence[float] | None

_EPS = np.finfo(np.float64).eps


# ----------------------------------------------------------------------------- input checks


def _as_mask(x: Any, name: str) -> np.ndarray:
    """``x`` as a bool array; 0/1 numbers are accepted, anything else is an error."""
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise FlipsegError(f"{name} must be a bool or 0/1 array, got dtype {arr.dtype}")
    if not ((arr == 0) | (arr == 1)).all():
        bad = arr[(arr != 0) & (arr != 1)].ravel()[0]
        raise FlipsegError(f"{name} must be a bool or 0/1 array, found the value {bad!r}")
    return arr.astype(bool)


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, gt) pair of 2D/3D masks of one shape; return bool arrays."""
    p = _as_mask(pred, "pred")
    g = _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise FlipsegError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if p.ndim not in (2, 3) or p.size == 0:
        raise FlipsegError(
            f"masks must be non-empty 2D (H, W) or 3D (D, H, W) arrays, got shape {p.shape}"
        )
    return p, g


def _as_spacing(spacing: SpacingLike, ndim: int) -> tuple[float, ...]:
    """Per-axis spacing as a tuple of ``ndim`` positive floats."""
    if spacing is None:
        return (1.0,) * ndim
    sp = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim:
        raise FlipsegError(f"spacing {tuple(sp.tolist())} has {sp.size} values for a {ndim}D mask")
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise FlipsegError(f"spacing must be positive and finite, got {tuple(sp.tolist())}")
    return tuple(float(s) for s in sp)


def _confusion(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) voxel counts."""
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return tp, fp, fn


# ----------------------------------------------------------------------------- overlap


def compute_dice(pred: Any, gt: Any) -> float:
    """Dice similarity coefficient ``2 TP / (|pred| + |gt|)``.

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)
        Predicted and reference masks (0/1 values are accepted).

    Returns
    -------
    float
        Dice in [0, 1]; 1.0 when both masks are empty.

    Raises
    ------
    FlipsegError
        If the shapes differ, the masks are not 2D/3D, or values are not 0/1.
    """
    p, g = _check_pair(pred, gt)
    tp, fp, fn = _confusion(p, g)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def compute_jaccard(pred: Any, gt: Any) -> float:
    """Jaccard index ``TP / |pred OR gt|``; 1.0 when both masks are empty.

    Shapes, values and errors as in :func:`compute_dice`.
    """
    p, g = _check_pair(pred, gt)
    tp, fp, fn = _confusion(p, g)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def compute_iou(pred: Any, gt: Any) -> float:
    """Foreground intersection over union (the same number as :func:`compute_jaccard`)."""
    return compute_jaccard(pred, gt)


def compute_background_iou(pred: Any, gt: Any) -> float:
    """IoU of the backgrounds, ``|~pred AND ~gt| / |~pred OR ~gt|``.

    1.0 when both masks cover the whole image. Shapes, values and errors as in
    :func:`compute_dice`.
    """
    p, g = _check_pair(pred, gt)
    return compute_jaccard(~p, ~g)


def compute_mean_iou(pred: Any, gt: Any) -> float:
    """Mean of foreground and background IoU (the two-class mIoU of paper 002)."""
    p, g = _check_pair(pred, gt)
    return 0.5 * (compute_jaccard(p, g) + compute_jaccard(~p, ~g))


def compute_conformity(pred: Any, gt: Any) -> float:
    """Conformity ``CON = 1 - (FP + FN) / max(TP, 1)`` (Chang et al. 2009).

    For TP > 0 this equals ``(3 * Dice - 2) / Dice``. With no overlap the overlap
    count is taken as one voxel so the value stays finite (see the module
    docstring); both masks empty gives 1.0.

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)

    Returns
    -------
    float
        CON in (-inf, 1]; 1.0 for a perfect prediction, 0.0 at Dice = 2/3.

    Raises
    ------
    FlipsegError
        As in :func:`compute_dice`.
    """
    p, g = _check_pair(pred, gt)
    tp, fp, fn = _confusion(p, g)
    return 1.0 - (fp + fn) / max(tp, 1)


# ----------------------------------------------------------------------------- distances


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (or the array)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _image_diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _surface_distances(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances ``(pred -> gt, gt -> pred)``; None if a mask is empty."""
    if not p.any() or not g.any():
        return None
    # crop to the union bounding box plus one voxel, so the erosion sees the same
    # neighbourhood as in the full image; the EDT then only spans the crop
    idx = np.nonzero(p | g)
    box = tuple(
        slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, n))
        for i, n in zip(idx, p.shape, strict=True)
    )
    sp, sg = _surface(p[box]), _surface(g[box])
    dist_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dist_to_g[sp], dist_to_p[sg]


def _check_percentile(percentile: float) -> float:
    q = float(percentile)
    if not 0.0 <= q <= 100.0:
        raise FlipsegError(f"percentile must be in [0, 100], got {percentile}")
    return q


def _hausdorff_from(dists: tuple[np.ndarray, np.ndarray], percentile: float) -> float:
    return float(max(np.percentile(d, percentile) for d in dists))


def compute_hausdorff(
    pred: Any, gt: Any, *, spacing: SpacingLike = None, percentile: float = 100.0
) -> float:
    """Symmetric (percentile) Hausdorff distance between the mask surfaces.

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)
    spacing : float or sequence of float, optional
        Pixel/voxel size per array axis (one value = isotropic); None = 1.0.
    percentile : float, default 100.0
        Percentile of each directed distance set, in [0, 100]; 100 is the
        classic Hausdorff distance, 95 gives HD95.

    Returns
    -------
    float
        Distance in the units of ``spacing``. 0.0 when both masks are empty; the
        image diagonal when exactly one is empty.

    Raises
    ------
    FlipsegError
        If the shapes differ, the masks are not 2D/3D or not 0/1, the spacing
        has the wrong length or a non-positive value, or the percentile is
        outside [0, 100].
    """
    p, g = _check_pair(pred, gt)
    sp = _as_spacing(spacing, p.ndim)
    q = _check_percentile(percentile)
    dists = _surface_distances(p, g, sp)
    if dists is None:
        return 0.0 if not (p.any() or g.any()) else _image_diagonal(p.shape, sp)
    return _hausdorff_from(dists, q)


def compute_hd95(pred: Any, gt: Any, *, spacing: SpacingLike = None) -> float:
    """95th-percentile Hausdorff distance; see :func:`compute_hausdorff`."""
    return compute_hausdorff(pred, gt, spacing=spacing, percentile=95.0)


def compute_asd(pred: Any, gt: Any, *, spacing: SpacingLike = None) -> float:
    """Symmetric average surface distance.

    The mean of the distances from every surface point of each mask to the
    other mask's surface, pooled over both surfaces.

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)
    spacing : float or sequence of float, optional
        Pixel/voxel size per array axis; None = 1.0.

    Returns
    -------
    float
        Distance in the units of ``spacing``; empty-mask rules as in
        :func:`compute_hausdorff`.

    Raises
    ------
    FlipsegError
        As in :func:`compute_hausdorff` (without the percentile).
    """
    p, g = _check_pair(pred, gt)
    sp = _as_spacing(spacing, p.ndim)
    dists = _surface_distances(p, g, sp)
    if dists is None:
        return 0.0 if not (p.any() or g.any()) else _image_diagonal(p.shape, sp)
    return float(np.concatenate(dists).mean())


# ----------------------------------------------------------------------------- S-measure


def _object_similarity(x: np.ndarray) -> float:
    """Fan et al.'s object score of values that should all be 1: ``2m / (m^2 + 1 + s)``.

    This is ``1 / D`` with ``D = (m^2 + 1) / (2m) + lambda * s / m`` and
    ``lambda = 0.5`` (m = mean, s = sample std of ``x``).
    """
    if x.size == 0:
        return 0.0
    m = float(x.mean())
    s = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return 2.0 * m / (m * m + 1.0 + s + _EPS)


def _block_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM-like structural similarity of one block (no stabilising constants)."""
    n = x.size
    mx, my = float(x.mean()), float(y.mean())
    dx, dy = x - mx, y - my
    k = max(n - 1, 1)
    vx, vy, cxy = float((dx * dx).sum()) / k, float((dy * dy).sum()) / k, float((dx * dy).sum()) / k
    num = 4.0 * mx * my * cxy
    den = (mx * mx + my * my) * (vx + vy)
    if num != 0.0:
        return num / (den + _EPS)
    return 1.0 if den == 0.0 else 0.0


def _region_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Area-weighted block SSIM over the four blocks split at the gt centroid."""
    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    # the centroid pixel belongs to the top-left block
    r = min(int(np.floor(rows.mean() + 0.5)) + 1, h)
    c = min(int(np.floor(cols.mean() + 0.5)) + 1, w)
    score = 0.0
    for rs in (slice(0, r), slice(r, h)):
        for cs in (slice(0, c), slice(c, w)):
            gb, pb = gt[rs, cs], pred[rs, cs]
            if gb.size:
                score += gb.size / gt.size * _block_ssim(pb, gb.astype(np.float64))
    return score


def compute_s_measure(pred: Any, gt: Any, *, alpha: float = 0.5) -> float:
    """Structure measure S = alpha * S_object + (1 - alpha) * S_region (Fan et al. 2017).

    S_object weights the object similarity of the prediction inside the gt
    foreground and of its complement inside the gt background by the gt
    foreground fraction. S_region splits both maps at the gt centroid into four
    blocks and averages a block SSIM weighted by block area. If gt is all zero
    the score is ``1 - mean(pred)``; if all one, ``mean(pred)``. Negative
    scores are clipped to 0.

    Parameters
    ----------
    pred : array_like, shape (H, W)
        Foreground map: bool, 0/1, or floats in [0, 1].
    gt : array_like of bool, shape (H, W)
        Reference mask.
    alpha : float, default 0.5
        Weight of the object term, in [0, 1].

    Returns
    -------
    float
        S in [0, 1]; 1 for a perfect prediction.

    Raises
    ------
    FlipsegError
        If the shapes differ, the arrays are not 2D, gt is not 0/1, pred is
        outside [0, 1] or not finite, or alpha is outside [0, 1].
    """
    g = _as_mask(gt, "gt")
    x = np.asarray(pred)
    if x.shape != g.shape:
        raise FlipsegError(f"pred and gt shapes differ: {x.shape} vs {g.shape}")
    if g.ndim != 2 or g.size == 0:
        raise FlipsegError(
            f"the S-measure is defined for non-empty 2D (H, W) maps, got shape {g.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise FlipsegError(f"alpha must be in [0, 1], got {alpha}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise FlipsegError(f"pred must hold values in [0, 1], got range [{x.min()}, {x.max()}]")
    fg = float(g.mean())
    if fg == 0.0:
        return float(1.0 - x.mean())
    if fg == 1.0:
        return float(x.mean())
    s_object = fg * _object_similarity(x[g]) + (1.0 - fg) * _object_similarity(1.0 - x[~g])
    s = alpha * s_object + (1.0 - alpha) * _region_score(x, g)
    return float(max(s, 0.0))


# ----------------------------------------------------------------------------- all at once


def segmentation_metrics(pred: Any, gt: Any, *, spacing: SpacingLike = None) -> dict[str, float]:
    """Every segmentation metric for one case.

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)
    spacing : float or sequence of float, optional
        Pixel/voxel size per array axis; None = 1.0.

    Returns
    -------
    dict of str to float
        ``dice, jaccard, con, hd, hd95, asd, iou, iou_bg, miou`` and, for 2D,
        ``s_measure``. Overlaps are fractions in [0, 1]; distances are in the
        units of ``spacing``. Empty-mask rules as in the module docstring.

    Raises
    ------
    FlipsegError
        As in :func:`compute_hausdorff`.
    """
    p, g = _check_pair(pred, gt)
    sp = _as_spacing(spacing, p.ndim)
    tp, fp, fn = _confusion(p, g)
    union = tp + fp + fn
    jaccard = 1.0 if union == 0 else tp / union
    bg_union = p.size - tp
    iou_bg = 1.0 if bg_union == 0 else (p.size - union) / bg_union
    dists = _surface_distances(p, g, sp)
    if dists is None:
        hd = hd95 = asd = 0.0 if union == 0 else _image_diagonal(p.shape, sp)
    else:
        hd, hd95 = _hausdorff_from(dists, 100.0), _hausdorff_from(dists, 95.0)
        asd = float(np.concatenate(dists).mean())
    out = {
        "dice": 1.0 if union == 0 else 2.0 * tp / (union + tp),
        "jaccard": jaccard,
        "con": 1.0 - (fp + fn) / max(tp, 1),
        "hd": hd,
        "hd95": hd95,
        "asd": asd,
        "iou": jaccard,
        "iou_bg": iou_bg,
        "miou": 0.5 * (jaccard + iou_bg),
    }
    if p.ndim == 2:
        out["s_measure"] = compute_s_measure(p, g)
    return out


# ----------------------------------------------------------------------------- classification


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney U statistic with mid-ranks for ties."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(score)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def compute_classification_metrics(
    y_true: Any, y_score: Any, *, threshold: float = 0.5
) -> dict[str, float]:
    """Binary classification metrics from labels and scores.

    A case is predicted positive when ``y_score >= threshold``. Precision,
    recall and F1 are 0.0 when their denominator is 0 (no predicted or no true
    positives), as ``sklearn``'s ``zero_division=0``.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (N,)
        Labels; 1 is the positive class (e.g. malignant).
    y_score : array_like of float, shape (N,)
        Scores, larger = more positive (e.g. probabilities).
    threshold : float, default 0.5

    Returns
    -------
    dict of str to float
        ``accuracy, precision, recall, f1`` in [0, 1] and ``auc`` (ROC area by
        the rank formula, ties counted half; NaN when only one class occurs).

    Raises
    ------
    FlipsegError
        If the inputs are not 1-D of the same non-zero length, labels are not
        0/1, or scores are not finite.
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape or y.size == 0:
        raise FlipsegError(
            "y_true and y_score must be 1-D of the same non-zero length, "
            f"got {y.shape} and {s.shape}"
        )
    y = _as_mask(y, "y_true")
    if not np.isfinite(s).all():
        raise FlipsegError("y_score holds non-finite values")
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = y.size - tp - fp - fn
    return {
        "accuracy": (tp + tn) / y.size,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2.0 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "auc": _auc(y, s),
    }


# ----------------------------------------------------------------------------- summaries


def summarize(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1) and count, ignoring NaN.

    Parameters
    ----------
    values : iterable of float
        Per-case values; NaN entries are left out.

    Returns
    -------
    dict
        ``{"mean": float, "std": float, "n": int}``; mean is NaN when n == 0,
        std is NaN when n < 2.
    """
    v = np.asarray(list(values), dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "n": n}


#: Per-case bounds a metric is clipped to before a dataset summary averages it (metrics
#: not listed are averaged as they are). CON is unbounded below: a single case without
#: overlap would otherwise dominate the mean.
SUMMARY_BOUNDS: dict[str, tuple[float, float]] = {"con": (-1.0, 1.0)}


def clip_for_summary(name: str, value: float) -> float:
    """One case's value of metric ``name`` as a dataset summary averages it: clipped to
    ``SUMMARY_BOUNDS[name]`` when the metric has bounds, else unchanged (NaN stays NaN).

    >>> clip_for_summary("con", -2358.0), clip_for_summary("con", 0.25), clip_for_summary("hd", 99.0)
    (-1.0, 0.25, 99.0)
    """
    v = float(value)
    if name not in SUMMARY_BOUNDS or math.isnan(v):
        return v
    lo, hi = SUMMARY_BOUNDS[name]
    return min(max(v, lo), hi)


def undefined_metrics(pred: Any, gt: Any) -> list[str]:
    """The metrics of :func:`segmentation_metrics` whose formula is undefined for this pair
    and which therefore carry a convention value (see "Empty masks" in the module docstring).

    Parameters
    ----------
    pred, gt : array_like of bool, shape (H, W) or (D, H, W)

    Returns
    -------
    list of str
        In the order ``dice, jaccard, iou, con, hd, hd95, asd, iou_bg, miou``, those that
        are undefined: ``dice, jaccard, iou, miou`` when both masks are empty; ``con`` when
        TP = 0; ``hd, hd95, asd`` when either mask is empty; ``iou_bg, miou`` when both
        masks cover the whole image.

    Raises
    ------
    FlipsegError
        As in :func:`compute_dice`.
    """
    p, g = _check_pair(pred, gt)
    tp, fp, fn = _confusion(p, g)
    both_empty = tp + fp + fn == 0
    one_empty = not p.any() or not g.any()
    both_full = p.all() and g.all()
    out = {"dice": both_empty, "jaccard": both_empty, "iou": both_empty, "con": tp == 0,
           "hd": one_empty, "hd95": one_empty, "asd": one_empty, "iou_bg": both_full,
           "miou": both_empty or both_full}
    return [k for k, undefined in out.items() if undefined]


def paired_ttest(a: Iterable[float], b: Iterable[float]) -> dict[str, float]:
    """Two-sided paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``).

    Only pairs where both values are finite are used.

    Parameters
    ----------
    a, b : iterable of float, same length N
        Per-case values of two methods, in the same case order.

    Returns
    -------
    dict
        ``t`` and ``p`` (NaN when fewer than 2 pairs; ``t = 0, p = 1`` when every
        difference is 0), ``n`` (pairs used) and ``mean_diff`` = mean(a - b).

    Raises
    ------
    FlipsegError
        If ``a`` and ``b`` differ in length.
    """
    x = np.asarray(list(a), dtype=np.float64).ravel()
    y = np.asarray(list(b), dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise FlipsegError(f"paired samples differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    mean_diff = float((x - y).mean()) if n else float("nan")
    if n < 2:
        t, p = float("nan"), float("nan")
    elif np.all(x == y):
        t, p = 0.0, 1.0
    else:
        res = stats.ttest_rel(x, y)
        t, p = float(res.statistic), float(res.pvalue)
    return {"t": t, "p": p, "n": n, "mean_diff": mean_diff}


class MetricAccumulator:
    """Collect per-case metric dicts and summarise them (MONAI's cumulative style).

    Examples
    --------
    >>> acc = MetricAccumulator()
    >>> acc.add("case1", {"dice": 0.8})
    >>> acc.add("case2", {"dice": 0.6})
    >>> round(acc.summary()["dice"]["mean"], 3)
    0.7
    """

    def __init__(self) -> None:
        self._cases: dict[str, dict[str, float]] = {}

    def add(self, case_id: str, metrics: dict[str, float]) -> None:
        """Record the metrics of one case; a repeated ``case_id`` is a FlipsegError."""
        if case_id in self._cases:
            raise FlipsegError(f"case {case_id!r} was already added")
        self._cases[case_id] = {k: float(v) for k, v in metrics.items()}

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in the order they were added."""
        return list(self._cases)

    def values(self, metric: str) -> np.ndarray:
        """Per-case values of one metric, shape (n_cases,); NaN where a case lacks it."""
        return np.array([m.get(metric, np.nan) for m in self._cases.values()], dtype=np.float64)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: summarize(values)}`` for every metric seen, in first-seen order."""
        names: dict[str, None] = {}
        for m in self._cases.values():
            names.update(dict.fromkeys(m))
        return {k: summarize(self.values(k)) for k in names}

    def reset(self) -> None:
        """Forget all cases."""
        self._cases.clear()
