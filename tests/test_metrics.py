"""Tests for flipseg.metrics: hand-checked cases, empty-mask rules, MONAI cross-checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from flipseg.errors import FlipsegError
from flipseg.metrics import (
    MetricAccumulator,
    clip_for_summary,
    compute_asd,
    compute_background_iou,
    compute_classification_metrics,
    compute_conformity,
    compute_dice,
    compute_hausdorff,
    compute_hd95,
    compute_iou,
    compute_jaccard,
    compute_mean_iou,
    compute_s_measure,
    paired_ttest,
    segmentation_metrics,
    summarize,
    undefined_metrics,
)

SEG_KEYS = {"dice", "jaccard", "con", "hd", "hd95", "asd", "iou", "iou_bg", "miou"}


def offset_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares in a 10x10 image, the prediction one column to the right.

    |P| = |G| = 16, TP = 12, FP = FN = 4. Each surface is the 12-pixel ring; half
    the ring points lie on the other ring (distance 0), the rest one column away.
    """
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True
    pred = np.zeros((10, 10), bool)
    pred[2:6, 3:7] = True
    return pred, gt


def blob(shape: tuple[int, ...], seed: int, sigma: float = 3.0) -> np.ndarray:
    """A random smooth blob mask (thresholded smoothed noise)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 0.7)


# ----------------------------------------------------------------------------- hand-checked


def test_overlap_metrics_of_offset_squares():
    pred, gt = offset_squares()
    assert compute_dice(pred, gt) == pytest.approx(0.75)
    assert compute_jaccard(pred, gt) == pytest.approx(0.6)
    assert compute_iou(pred, gt) == pytest.approx(0.6)
    # CON = 1 - (FP + FN) / TP = 1 - 8 / 12 = (3 * 0.75 - 2) / 0.75
    assert compute_conformity(pred, gt) == pytest.approx(1.0 / 3.0)
    # backgrounds: intersection 100 - 20 = 80, union 100 - 12 = 88
    assert compute_background_iou(pred, gt) == pytest.approx(80 / 88)
    assert compute_mean_iou(pred, gt) == pytest.approx(0.5 * (0.6 + 80 / 88))


def test_distances_of_offset_squares():
    pred, gt = offset_squares()
    assert compute_hausdorff(pred, gt) == pytest.approx(1.0)
    assert compute_hd95(pred, gt) == pytest.approx(1.0)
    # 24 surface points, 12 at distance 0 and 12 at distance 1
    assert compute_asd(pred, gt) == pytest.approx(0.5)
    assert compute_hausdorff(pred, gt, percentile=0.0) == pytest.approx(0.0)
    # every non-zero distance becomes one column step of 0.5 (rows are 2.0 apart)
    assert compute_hausdorff(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(0.5)
    assert compute_asd(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(0.25)


def test_single_points_with_anisotropic_spacing_2d():
    pred = np.zeros((6, 6), bool)
    gt = np.zeros((6, 6), bool)
    pred[1, 1] = True
    gt[3, 3] = True  # 2 rows x 1.5 = 3, 2 columns x 2.0 = 4 -> 5
    assert compute_hausdorff(pred, gt, spacing=(1.5, 2.0)) == pytest.approx(5.0)
    assert compute_hd95(pred, gt, spacing=(1.5, 2.0)) == pytest.approx(5.0)
    assert compute_asd(pred, gt, spacing=(1.5, 2.0)) == pytest.approx(5.0)
    assert compute_hausdorff(pred, gt, spacing=2.0) == pytest.approx(math.sqrt(32.0))
    assert compute_dice(pred, gt) == 0.0
    assert compute_conformity(pred, gt) == pytest.approx(1.0 - 2.0)


def test_single_points_with_anisotropic_spacing_3d():
    pred = np.zeros((4, 5, 6), bool)
    gt = np.zeros((4, 5, 6), bool)
    pred[1, 1, 1] = True
    gt[2, 2, 3] = True  # (1 x 2, 1 x 3, 2 x 3) = (2, 3, 6) -> 7
    assert compute_hausdorff(pred, gt, spacing=(2.0, 3.0, 3.0)) == pytest.approx(7.0)
    assert compute_asd(pred, gt, spacing=(2.0, 3.0, 3.0)) == pytest.approx(7.0)


def test_hd95_is_the_larger_directed_percentile():
    # gt: one long row; pred: its first pixel only. pred -> gt distances are all 0,
    # gt -> pred distances are 0, 1, ..., 20; their 95th percentile is 19.
    gt = np.zeros((3, 23), bool)
    gt[1, 1:22] = True
    pred = np.zeros_like(gt)
    pred[1, 1] = True
    assert compute_hausdorff(pred, gt) == pytest.approx(20.0)
    assert compute_hd95(pred, gt) == pytest.approx(19.0)
    assert compute_asd(pred, gt) == pytest.approx(sum(range(21)) / 22)


def test_mask_touching_the_border_has_a_surface_there():
    # full image vs. its top half: the full mask's surface is the image border
    gt = np.ones((6, 4), bool)
    pred = np.zeros((6, 4), bool)
    pred[:3] = True
    assert compute_hausdorff(pred, gt) == pytest.approx(3.0)
    assert compute_dice(pred, gt) == pytest.approx(2 * 12 / 36)


def test_0_1_integer_and_float_masks_are_accepted():
    pred, gt = offset_squares()
    assert compute_dice(pred.astype(np.uint8), gt.astype(np.float32)) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- empty masks


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 6)])
def test_both_empty(shape):
    z = np.zeros(shape, bool)
    m = segmentation_metrics(z, z)
    assert m["dice"] == m["jaccard"] == m["iou"] == m["con"] == 1.0
    assert m["hd"] == m["hd95"] == m["asd"] == 0.0
    assert m["iou_bg"] == m["miou"] == 1.0
    assert compute_hausdorff(z, z) == compute_asd(z, z) == 0.0


@pytest.mark.parametrize(
    "shape, spacing, diagonal",
    [
        ((3, 4), None, 5.0),
        ((6, 2), (0.5, 2.0), 5.0),
        ((2, 3, 6), None, 7.0),
        ((1, 1, 3), (2.0, 3.0, 2.0), 7.0),
    ],
)
def test_exactly_one_empty(shape, spacing, diagonal):
    z = np.zeros(shape, bool)
    m = np.zeros(shape, bool)
    m.flat[0] = True
    m.flat[-1] = True
    for pred, gt in [(z, m), (m, z)]:
        r = segmentation_metrics(pred, gt, spacing=spacing)
        assert r["dice"] == r["jaccard"] == r["iou"] == 0.0
        assert r["hd"] == pytest.approx(diagonal)
        assert r["hd95"] == pytest.approx(diagonal)
        assert r["asd"] == pytest.approx(diagonal)
        # no overlap: TP counts as one voxel, FP + FN = 2 -> 1 - 2 = -1
        assert r["con"] == pytest.approx(-1.0)
        assert compute_conformity(pred, gt) == pytest.approx(-1.0)
        assert compute_hausdorff(pred, gt, spacing=spacing) == pytest.approx(diagonal)
        assert compute_asd(pred, gt, spacing=spacing) == pytest.approx(diagonal)


def test_full_masks_have_background_iou_one():
    full = np.ones((4, 4), bool)
    assert compute_background_iou(full, full) == 1.0
    assert compute_mean_iou(full, full) == 1.0


# ----------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("shape", [(40, 48), (18, 20, 22)])
def test_segmentation_metrics_matches_single_functions(shape):
    pred, gt = blob(shape, 1), blob(shape, 2)
    spacing = (0.7,) * len(shape)
    m = segmentation_metrics(pred, gt, spacing=spacing)
    assert set(m) == SEG_KEYS | ({"s_measure"} if len(shape) == 2 else set())
    assert m["dice"] == pytest.approx(compute_dice(pred, gt))
    assert m["jaccard"] == pytest.approx(compute_jaccard(pred, gt))
    assert m["con"] == pytest.approx(compute_conformity(pred, gt))
    assert m["con"] == pytest.approx((3 * m["dice"] - 2) / m["dice"])
    assert m["hd"] == pytest.approx(compute_hausdorff(pred, gt, spacing=spacing))
    assert m["hd95"] == pytest.approx(compute_hd95(pred, gt, spacing=spacing))
    assert m["asd"] == pytest.approx(compute_asd(pred, gt, spacing=spacing))
    assert m["iou_bg"] == pytest.approx(compute_background_iou(pred, gt))
    assert m["miou"] == pytest.approx(compute_mean_iou(pred, gt))
    assert all(isinstance(v, float) for v in m.values())


@pytest.mark.parametrize("shape", [(40, 48), (18, 20, 22)])
def test_symmetry_and_identity(shape):
    pred, gt = blob(shape, 3), blob(shape, 4)
    a = segmentation_metrics(pred, gt)
    b = segmentation_metrics(gt, pred)
    for k in ("dice", "jaccard", "con", "hd", "hd95", "asd", "iou_bg", "miou"):
        assert a[k] == pytest.approx(b[k])
    same = segmentation_metrics(gt, gt)
    assert same["dice"] == same["con"] == 1.0
    assert same["hd"] == same["asd"] == 0.0


# ----------------------------------------------------------------------------- MONAI cross-check


def _onehot(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask[None, None].astype(np.float32))  # [B=1, C=1, ...]


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((48, 56), None),
        ((48, 56), (0.8, 1.7)),
        ((20, 24, 22), None),
        ((20, 24, 22), (2.5, 0.6, 0.9)),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_against_monai(shape, spacing, seed):
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )
    from monai.metrics import (
        compute_dice as monai_dice,
    )

    pred, gt = blob(shape, 10 + seed), blob(shape, 20 + seed)
    yp, y = _onehot(pred), _onehot(gt)
    kw = {"include_background": True, "spacing": spacing}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dice = float(monai_dice(yp, y, include_background=True)[0, 0])
        ref_hd = float(compute_hausdorff_distance(yp, y, **kw)[0, 0])
        ref_hd95 = float(compute_hausdorff_distance(yp, y, percentile=95, **kw)[0, 0])
        ref_asd = float(compute_average_surface_distance(yp, y, symmetric=True, **kw)[0, 0])
    m = segmentation_metrics(pred, gt, spacing=spacing)
    assert m["dice"] == pytest.approx(ref_dice, rel=1e-5)
    assert m["hd"] == pytest.approx(ref_hd, rel=1e-5)
    assert m["hd95"] == pytest.approx(ref_hd95, rel=1e-5)
    assert m["asd"] == pytest.approx(ref_asd, rel=1e-5)


# ----------------------------------------------------------------------------- S-measure


def test_s_measure_perfect_and_inverted():
    gt = np.zeros((32, 40), bool)
    gt[8:20, 10:25] = True
    assert compute_s_measure(gt, gt) == pytest.approx(1.0)
    assert compute_s_measure(gt.astype(np.float32), gt) == pytest.approx(1.0)
    inverted = compute_s_measure(~gt, gt)
    assert inverted < 0.1
    shifted = np.roll(gt, 3, axis=1)
    assert inverted < compute_s_measure(shifted, gt) < 1.0


def test_s_measure_prefers_closer_soft_maps():
    gt = np.zeros((32, 32), bool)
    gt[10:22, 8:20] = True
    good = np.where(gt, 0.9, 0.1)
    poor = np.where(gt, 0.6, 0.4)
    assert compute_s_measure(good, gt) > compute_s_measure(poor, gt)
    s = compute_s_measure(poor, gt, alpha=0.0)
    assert 0.0 <= s <= 1.0


def test_s_measure_object_term_by_hand():
    # alpha = 1 keeps only the object term. Inside the gt the prediction is the
    # constant 0.5: O_fg = 2 * 0.5 / (0.25 + 1) = 0.8; outside it is 0: O_bg = 1.
    # S = mu * 0.8 + (1 - mu) * 1 with mu = 4 / 16.
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True
    pred = np.where(gt, 0.5, 0.0)
    assert compute_s_measure(pred, gt, alpha=1.0) == pytest.approx(0.25 * 0.8 + 0.75, rel=1e-9)


def test_s_measure_uniform_gt():
    pred = np.full((5, 6), 0.25)
    assert compute_s_measure(pred, np.zeros((5, 6), bool)) == pytest.approx(0.75)
    assert compute_s_measure(pred, np.ones((5, 6), bool)) == pytest.approx(0.25)


def test_s_measure_errors():
    with pytest.raises(FlipsegError, match="2D"):
        compute_s_measure(np.zeros((2, 3, 4)), np.zeros((2, 3, 4), bool))
    with pytest.raises(FlipsegError, match=r"\[0, 1\]"):
        compute_s_measure(np.full((3, 3), 1.5), np.ones((3, 3), bool))
    with pytest.raises(FlipsegError, match="alpha"):
        compute_s_measure(np.zeros((3, 3)), np.ones((3, 3), bool), alpha=2.0)


# ----------------------------------------------------------------------------- input errors


def test_shape_mismatch_names_the_shapes():
    with pytest.raises(FlipsegError, match=r"\(4, 4\) vs \(4, 5\)"):
        compute_dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(FlipsegError, match="shapes differ"):
        segmentation_metrics(np.zeros((4, 4), bool), np.zeros((4, 4, 1), bool))


def test_bad_inputs():
    with pytest.raises(FlipsegError, match="0.5"):
        compute_dice(np.full((3, 3), 0.5), np.zeros((3, 3)))
    with pytest.raises(FlipsegError, match="2D"):
        compute_dice(np.zeros(5, bool), np.zeros(5, bool))
    with pytest.raises(FlipsegError, match="spacing"):
        compute_hausdorff(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(FlipsegError, match="spacing"):
        compute_asd(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1.0, 0.0))
    with pytest.raises(FlipsegError, match="percentile"):
        compute_hausdorff(np.ones((3, 3), bool), np.ones((3, 3), bool), percentile=101)


# ----------------------------------------------------------------------------- classification


def test_classification_by_hand():
    y = [1, 1, 0, 0, 1]
    s = [0.9, 0.4, 0.6, 0.1, 0.5]  # predicted 1, 0, 1, 0, 1: TP 2, FP 1, FN 1, TN 1
    m = compute_classification_metrics(y, s)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(4 / 6)  # 4 of 6 (pos, neg) pairs ordered right
    m = compute_classification_metrics(y, s, threshold=0.95)
    assert m["precision"] == m["recall"] == m["f1"] == 0.0


def test_auc_against_pair_count_with_ties():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    brute = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert compute_classification_metrics(y, s)["auc"] == pytest.approx(brute)


def test_auc_one_class_is_nan_and_bad_labels_raise():
    assert math.isnan(compute_classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])["auc"])
    with pytest.raises(FlipsegError, match="y_true"):
        compute_classification_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(FlipsegError, match="same non-zero length"):
        compute_classification_metrics([0, 1], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- summaries


def test_summarize_ignores_nan_and_uses_sample_std():
    s = summarize([1.0, 2.0, float("nan"), 3.0, 4.0])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    one = summarize([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["std"])
    none = summarize([])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_paired_ttest_matches_scipy_on_finite_pairs():
    rng = np.random.default_rng(7)
    a = rng.normal(0.8, 0.05, 30)
    b = a - rng.normal(0.02, 0.03, 30)
    a[3], b[10] = np.nan, np.inf
    keep = np.isfinite(a) & np.isfinite(b)
    ref = stats.ttest_rel(a[keep], b[keep])
    r = paired_ttest(a, b)
    assert r["n"] == 28
    assert r["t"] == pytest.approx(ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["mean_diff"] == pytest.approx(np.mean(a[keep] - b[keep]))


def test_paired_ttest_identical_and_mismatched():
    a = [0.5, 0.6, 0.7]
    r = paired_ttest(a, a)
    assert r["p"] == 1.0 and r["t"] == 0.0 and r["mean_diff"] == 0.0 and r["n"] == 3
    with pytest.raises(FlipsegError, match="3 vs 2"):
        paired_ttest(a, a[:2])
    assert math.isnan(paired_ttest([1.0], [2.0])["p"])


def test_metric_accumulator():
    acc = MetricAccumulator()
    pred, gt = offset_squares()
    acc.add("a", segmentation_metrics(pred, gt))
    acc.add("b", segmentation_metrics(gt, gt))
    acc.add("c", {"dice": float("nan")})
    assert len(acc) == 3 and acc.case_ids == ["a", "b", "c"]
    s = acc.summary()
    assert s["dice"]["n"] == 2
    assert s["dice"]["mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["hd"]["mean"] == pytest.approx(0.5)
    with pytest.raises(FlipsegError, match="'a'"):
        acc.add("a", {"dice": 1.0})
    acc.reset()
    assert len(acc) == 0 and acc.summary() == {}


# ----------------------------------------------------------------------------- summary rule


def test_con_of_no_overlap_is_clipped_to_minus_one_for_summaries():
    gt = np.zeros((10, 10), bool)
    gt[1:3, 1:3] = True  # 4 pixels
    far = np.zeros((10, 10), bool)
    far[6:8, 6:8] = True  # 4 pixels, no overlap
    raw = segmentation_metrics(far, gt)["con"]
    assert raw == 1.0 - 8 / 1  # FP + FN = 8, TP counted as 1: -7
    assert clip_for_summary("con", raw) == -1.0
    assert clip_for_summary("con", 1.0 / 3.0) == 1.0 / 3.0  # offset squares: kept
    assert clip_for_summary("con", -0.5) == -0.5
    assert clip_for_summary("hd", 1e9) == 1e9  # only CON has bounds
    assert math.isnan(clip_for_summary("con", float("nan")))


def test_undefined_metrics_hand_checked():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    one = np.zeros((4, 4), bool)
    one[1, 1] = True
    other = np.zeros((4, 4), bool)
    other[2, 3] = True
    pred, gt = offset_squares()
    assert undefined_metrics(pred, gt) == []
    assert undefined_metrics(empty, empty) == ["dice", "jaccard", "iou", "con", "hd", "hd95", "asd",
                                               "miou"]
    assert undefined_metrics(empty, one) == ["con", "hd", "hd95", "asd"]
    assert undefined_metrics(other, one) == ["con"]  # both masks there, no overlap
    assert undefined_metrics(full, full) == ["iou_bg", "miou"]
    with pytest.raises(FlipsegError, match="shapes differ"):
        undefined_metrics(one, np.zeros((3, 3), bool))
