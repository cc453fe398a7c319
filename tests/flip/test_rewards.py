import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from flipseg.methods.flip.rewards import (
    csr,
    idr1,
    idr2,
    prior_reward,
    superpixel_histograms,
    total_reward,
    wasserstein1_hist,
)


def _hist(values):
    return np.bincount(np.asarray(values, int), minlength=256).astype(float)


def test_w1_matches_scipy_on_integer_samples():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, 300)
    b = rng.integers(40, 200, 120)
    assert wasserstein1_hist(_hist(a), _hist(b)) == pytest.approx(wasserstein_distance(a, b))


def test_w1_empty_is_nan_and_identical_is_zero():
    h = _hist([3, 4, 5])
    assert np.isnan(wasserstein1_hist(h, np.zeros(256)))
    assert wasserstein1_hist(h, 2 * h) == 0.0


def test_csr_signs():
    assert list(csr(np.array([0.2, 0.5, 0.5]), np.array([0.3, 0.5, 0.1]))) == [1, 0, -1]


def test_csr_tolerance_counts_small_changes_as_none():
    prev = np.array([0.2, 0.5, 0.5, 0.5])
    now = np.array([0.204, 0.49, 0.6, 0.3])
    assert list(csr(prev, now)) == [1, -1, 1, -1]
    assert list(csr(prev, now, tolerance=0.02)) == [0, 0, 1, -1]
    fg0, bg0 = _hist([50] * 5), _hist([60] * 5 + [150] * 5)
    fg1, bg1 = _hist([50] * 5 + [60] * 5), _hist([150] * 5)
    r = total_reward(np.array(0.5), np.array(0.501), fg0, bg0, fg1, bg1, use_idr1=False,
                     use_idr2=False, csr_tolerance=0.01)
    assert r == 0


def test_idr1_threshold_and_zero():
    fg_prev = _hist([10] * 10)
    close = _hist([10] * 10 + [20] * 10)  # W1 = 5
    far = _hist([10] * 10 + [200] * 10)  # W1 = 95
    assert idr1(fg_prev, close, theta=25) == 1
    assert idr1(fg_prev, far, theta=25) == -1
    assert idr1(fg_prev, fg_prev, theta=25) == 0
    assert idr1(np.zeros(256), close, theta=25) == 0  # empty rule


def test_idr2_separation():
    fg0, bg0 = _hist([50] * 5), _hist([60] * 5 + [150] * 5)
    fg1, bg1 = _hist([50] * 5 + [60] * 5), _hist([150] * 5)  # dark moved to FG: separation grows
    assert idr2(fg0, bg0, fg1, bg1) == 1
    assert idr2(fg1, bg1, fg0, bg0) == -1


def test_total_reward_switches():
    fg0, bg0 = _hist([50] * 5), _hist([60] * 5 + [150] * 5)
    fg1, bg1 = _hist([50] * 5 + [60] * 5), _hist([150] * 5)
    args = (np.array(0.1), np.array(0.4), fg0, bg0, fg1, bg1)
    assert total_reward(*args) == 3
    assert total_reward(*args, use_csr=False) == 2
    assert total_reward(*args, use_idr1=False, use_idr2=False) == 1


def test_superpixel_histograms_counts():
    labels = np.array([[0, 0, 1], [1, -1, 2]])
    img = np.array([[5, 5, 7], [8, 9, 255]], float)
    h = superpixel_histograms(img, labels, 3)
    assert h.shape == (3, 256)
    assert h[0, 5] == 2 and h[1, 7] == 1 and h[1, 8] == 1 and h[2, 255] == 1
    assert h.sum() == 5  # the -1 pixel is ignored


def test_prior_reward_inside_outside_and_restores():
    radius = np.array([0.2, 0.99, 1.0, 1.4])
    assert list(prior_reward(radius, np.ones(4))) == [1, 1, -1, -1]
    assert list(prior_reward(radius, -np.ones(4))) == [-1, -1, 1, 1]  # restoring flips it
    assert list(prior_reward(radius, np.zeros(4))) == [0, 0, 0, 0]
    assert list(prior_reward(radius, np.ones(4), prior_radius=1.2)) == [1, 1, 1, -1]
    assert list(prior_reward(radius, np.ones(4), core_radius=0.5)) == [2, 1, -1, -1]
