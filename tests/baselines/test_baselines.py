"""Box -> mask baselines: output contract (2D/3D), quality on an easy disc, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from flipseg.baselines import BASELINES
from flipseg.boxes import Box
from flipseg.errors import FlipsegError

NAMES = [
    "box",
    "ellipse",
    "grabcut",
    "chan-vese",
    "gac",
    "random-walker",
    "sp-grow",
    "saliency-sr",
    "saliency-fg",
]
GOOD = ["grabcut", "chan-vese", "random-walker", "sp-grow"]


def _disc(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark disc (ball) of radius shape/5 in a noisy bright background; image, mask."""
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    center = [s / 2 + (2 if i == len(shape) - 1 else 0) for i, s in enumerate(shape)]
    r2 = sum(((g - c) / (s / 5)) ** 2 for g, c, s in zip(grids, center, shape))
    disc = r2 < 1
    img = np.where(disc, 60.0, 160.0) + rng.normal(0, 20, shape)
    return np.clip(img, 0, 255).astype(np.float32), disc


SHAPES = {2: (96, 96), 3: (32, 48, 48)}
CASES = [(n, nd) for n in NAMES for nd in BASELINES.get(n).dims]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("name,ndim", CASES)
def test_contract_bool_mask_inside_box_and_deterministic(name, ndim):
    img, disc = _disc(SHAPES[ndim])
    box = Box.from_mask(disc).expand(3)
    fn = BASELINES.get(name)
    mask = fn(img, box, rng=np.random.default_rng(0))
    assert mask.dtype == bool and mask.shape == img.shape
    assert mask.any()
    assert not (mask & ~box.to_mask(img.shape)).any()
    again = fn(img, box, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(mask, again)


@pytest.mark.parametrize("name,ndim", [(n, nd) for n, nd in CASES if n in GOOD])
def test_good_baselines_segment_an_easy_disc(name, ndim):
    img, disc = _disc(SHAPES[ndim], seed=1)
    box = Box.from_mask(disc).expand(3)
    mask = BASELINES.get(name)(img, box, rng=np.random.default_rng(0))
    assert _dice(mask, disc) > 0.8, name


@pytest.mark.parametrize("name", NAMES)
def test_box_partly_outside_is_clipped(name):
    img, _ = _disc((64, 80))
    box = Box(50, -10, 95, 30)  # leaves the image right and top
    mask = BASELINES.get(name)(img, box, rng=np.random.default_rng(0))
    assert mask.shape == img.shape
    assert not (mask & ~box.clip(img.shape).to_mask(img.shape)).any()


@pytest.mark.parametrize("name", NAMES)
def test_box_filling_the_image(name):
    img, disc = _disc((48, 48))
    box = Box(0, 0, 48, 48)
    mask = BASELINES.get(name)(img, box, rng=np.random.default_rng(0))
    assert mask.dtype == bool and mask.shape == img.shape and mask.any()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("box", [Box(20, 20, 23, 23), Box(10, 30, 60, 32)])
def test_tiny_or_thin_boxes(name, box):
    img, _ = _disc((64, 64))
    mask = BASELINES.get(name)(img, box, rng=np.random.default_rng(0))
    assert mask.shape == img.shape
    assert not (mask & ~box.to_mask(img.shape)).any()


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("box", "ellipse")])
def test_box_outside_or_wrong_dims_is_a_user_error(name):
    img, _ = _disc((32, 32))
    fn = BASELINES.get(name)
    with pytest.raises(FlipsegError):
        fn(img, Box(40, 40, 50, 50), rng=np.random.default_rng(0))
    with pytest.raises(FlipsegError):
        fn(img, Box(1, 1, 5, 5, 0, 2), rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", [n for n in NAMES if BASELINES.get(n).dims == (2,)])
def test_2d_only_baselines_reject_volumes(name):
    img, disc = _disc(SHAPES[3])
    with pytest.raises(FlipsegError, match="2D only"):
        BASELINES.get(name)(img, Box.from_mask(disc), rng=np.random.default_rng(0))


def test_grabcut_without_priors_still_returns_a_mask():
    img, disc = _disc((96, 96))
    box = Box.from_mask(disc).expand(3)
    mask = BASELINES.get("grabcut")(img, box, location=False, core=0.0)
    assert mask.any() and not (mask & ~box.to_mask(img.shape)).any()


def test_unknown_options_are_user_errors():
    img, disc = _disc((64, 64))
    box = Box.from_mask(disc)
    with pytest.raises(FlipsegError, match="gac init"):
        BASELINES.get("gac")(img, box, init="circle")
    with pytest.raises(FlipsegError, match="polarity"):
        BASELINES.get("saliency-sr")(img, box, polarity="bright")


def test_grabcut_refines_a_given_mask():
    img, gt = _disc((64, 64), seed=3)
    box = Box.from_mask(gt)
    grabcut = BASELINES.get("grabcut")
    ys, xs = np.nonzero(gt)
    yy, xx = np.ogrid[:64, :64]
    radius = np.sqrt(gt.sum() / np.pi)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    # initial masks 30% too small and 20% too large both move to the lesion edge
    for scale in (0.7, 1.2):
        init = (yy - ys.mean()) ** 2 + (xx - xs.mean()) ** 2 <= (scale * radius) ** 2
        out = grabcut(img, box, init=init, init_core=0.3)
        assert dice(out, gt) > dice(init, gt) + 0.1
        assert not (out & ~box.to_mask(gt.shape)).any()
    with pytest.raises(FlipsegError, match="init mask has shape"):
        grabcut(img, box, init=init[:10])
