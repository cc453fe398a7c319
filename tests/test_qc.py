"""The per-mask quality score: features on tiny arrays, the fit, the shipped model."""

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.qc import FEATURES, fit_quality_model, load_quality_model, quality_features, quality_score


def _disc(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_features_by_hand():
    img = np.full((40, 40), 200, np.float32)
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True  # a dark square filling its box
    img[m] = 50
    box = Box(10, 10, 30, 30)
    f = quality_features(img, box, m, [m, m, m])
    assert f["agreement"] == 1.0 and f["unanimity"] == 1.0
    assert f["fill"] == 1.0 and f["edge_reach"] == 1.0
    assert f["contrast"] == pytest.approx(150 / 255)
    assert f["edge"] > 0
    half = m.copy()
    half[:, 20:] = False
    g = quality_features(img, box, m, [m, half, half])
    # pairwise Dice: m-half 2*200/(400+200)=2/3 twice, half-half 1 -> mean 7/9
    assert g["agreement"] == pytest.approx(7 / 9)
    assert g["unanimity"] == pytest.approx(0.5)
    empty = quality_features(img, box, np.zeros_like(m))
    assert empty["fill"] == 0 and empty["edge_reach"] == 0 and empty["agreement"] == 1.0


def test_fit_orders_masks_by_their_dice():
    rng = np.random.default_rng(0)
    rows, dice = [], []
    for _ in range(200):
        agree = rng.uniform(0.5, 1.0)
        row = {k: rng.uniform(0, 1) for k in FEATURES}
        row["agreement"] = agree
        rows.append(row)
        dice.append(np.clip(agree + rng.normal(0, 0.03), 0, 1))
    model = fit_quality_model(rows, dice)
    score = quality_score(rows, model)
    assert score.min() >= 0 and score.max() <= 1
    assert np.corrcoef(score, dice)[0, 1] > 0.9
    with pytest.raises(FlipsegError):
        fit_quality_model(rows[:3], dice[:3])


def test_shipped_model_scores_a_good_mask_above_a_bad_one():
    model = load_quality_model()
    assert model["features"] == list(FEATURES) and "BUS-BRA" in model["fitted_on"]
    img = np.full((64, 64), 180, np.float32)
    good = _disc(img.shape, 32, 32, 14)
    img[good] = 40
    box = Box(18, 18, 47, 47)
    bad = np.zeros_like(good)
    bad[30:34, 20:44] = True
    s_good = quality_score(quality_features(img, box, good, [good, good, good]), model)
    s_bad = quality_score(quality_features(img, box, bad, [good, bad, np.zeros_like(good)]), model)
    assert 0 <= s_bad < s_good <= 1


def test_a_foreign_model_file_is_a_one_line_error(tmp_path):
    (tmp_path / "m.json").write_text('{"features": ["x"]}')
    with pytest.raises(FlipsegError, match="other features"):
        load_quality_model(tmp_path / "m.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FlipsegError, match="cannot read"):
        load_quality_model(tmp_path / "bad.json")
