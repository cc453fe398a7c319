"""Synthetic phantoms: determinism, exact masks, tight boxes, speed."""

import time

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data.phantoms import (
    LESION_SHAPES,
    make_phantom_2d,
    make_phantom_3d,
    phantom_dataset_2d,
)
from flipseg.errors import FlipsegError


def test_2d_same_seed_same_sample():
    a, b = make_phantom_2d(7), make_phantom_2d(7)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert a["box"] == b["box"] and a["case_id"] == "phantom2d-7"
    c = make_phantom_2d(np.random.default_rng(7))
    np.testing.assert_array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], make_phantom_2d(8)["image"])


@pytest.mark.parametrize("shape", LESION_SHAPES)
def test_2d_contract(shape):
    for seed in range(3):
        s = make_phantom_2d(seed, lesion_shape=shape, shape=(160, 200))
        img, mask = s["image"], s["mask"]
        assert img.shape == mask.shape == (160, 200)
        assert img.dtype == np.float32 and mask.dtype == bool
        assert 0.0 <= img.min() and img.max() <= 255.0
        assert s["box"] == Box.from_mask(mask)
        assert min(s["box"].lo) >= 2 and s["box"].y1 <= 158 and s["box"].x1 <= 198
        assert s["lesion_shape"] == shape
        assert s["label"] == ("malignant" if shape == "irregular" else "benign")
        # hypo-echoic: lesion darker than a ring around it
        ring = s["box"].expand(8).clip(img.shape).to_mask(img.shape) & ~s["box"].to_mask(img.shape)
        assert img[mask].mean() < img[ring].mean() - 15


def test_posterior_options_change_the_region_below():
    shadow = make_phantom_2d(3, lesion_shape="ellipse", posterior="shadow")
    plain = make_phantom_2d(3, lesion_shape="ellipse", posterior="none")
    bright = make_phantom_2d(3, lesion_shape="ellipse", posterior="enhancement")
    box = plain["box"]
    below = (slice(box.y1 + 4, min(box.y1 + 40, 190)), slice(box.x0 + 3, box.x1 - 3))
    assert shadow["image"][below].mean() < plain["image"][below].mean() - 10
    assert bright["image"][below].mean() > plain["image"][below].mean() + 5


def test_2d_is_fast():
    make_phantom_2d(0)
    t0 = time.perf_counter()
    for seed in range(10):
        make_phantom_2d(seed)
    assert (time.perf_counter() - t0) / 10 < 0.05


def test_dataset_prefix_stable():
    five = phantom_dataset_2d(5, seed=3)
    two = phantom_dataset_2d(2, seed=3)
    assert [s["case_id"] for s in five] == [f"phantom2d-3-{i}" for i in range(5)]
    for a, b in zip(two, five[:2], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert len({float(s["image"].sum()) for s in five}) == 5


def test_3d_contract():
    a = make_phantom_3d(5, n_lesions=3)
    b = make_phantom_3d(5, n_lesions=3)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].shape == a["mask"].shape == (48, 96, 96)
    assert a["spacing"] == (2.0, 0.5, 0.5)
    assert len(a["lesion_masks"]) == len(a["boxes"]) == 3
    union = np.zeros_like(a["mask"])
    for m, box in zip(a["lesion_masks"], a["boxes"], strict=True):
        assert box.ndim == 3 and box == Box.from_mask(m)
        assert not (union & m).any()  # separate lesions
        union |= m
    np.testing.assert_array_equal(union, a["mask"])
    assert a["box"] == Box.from_mask(a["mask"])
    assert 0 <= a["image"].min() and a["image"].max() <= 255
    n = {len(make_phantom_3d(s, shape=(24, 64, 64))["boxes"]) for s in range(6)}
    assert n <= {1, 2, 3} and len(n) > 1


def test_bad_options():
    with pytest.raises(FlipsegError, match="lesion_shape 'star'"):
        make_phantom_2d(0, lesion_shape="star")
    with pytest.raises(FlipsegError, match="shape"):
        make_phantom_2d(0, shape=(10, 10))
    with pytest.raises(FlipsegError, match="n_lesions 4"):
        make_phantom_3d(0, n_lesions=4)
    with pytest.raises(FlipsegError, match="speckle 'pink'"):
        make_phantom_2d(0, speckle="pink")
    assert make_phantom_2d(0, speckle="gamma")["image"].dtype == np.float32
