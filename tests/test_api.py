"""The Python API: numpy in, numpy masks and per-mask details out."""

import numpy as np
import pytest

import flipseg
from flipseg.data.phantoms import phantom_dataset_2d
from flipseg.errors import FlipsegError


@pytest.fixture(scope="module")
def phantoms():
    return phantom_dataset_2d(3, seed=2)


def test_segment_numpy_in_masks_out(phantoms):
    s = phantoms[0]
    b = s["box"]
    masks = flipseg.segment(s["image"], [(b.x0, b.y0, b.x1, b.y1), b], method="ellipse")
    assert len(masks) == 2 and masks[0].dtype == bool and masks[0].shape == s["image"].shape
    assert np.array_equal(masks[0], masks[1]) and masks[0].any()
    assert not masks[0][: b.y0].any()  # inside the box only
    one = flipseg.segment(s["image"], f"{b.x0},{b.y0},{b.x1},{b.y1}", method="box")
    assert len(one) == 1 and one[0].sum() == b.size
    res = flipseg.segment(s["image"], b, method="box", details=True)[0]
    assert res.area == b.size and res.box_fill == 1.0 and res.method == "box"


def test_segment_uses_the_default_and_model_methods(phantoms):
    from flipseg.api import make_segmenter

    assert make_segmenter(dims=2).name == "flip-vote"
    assert make_segmenter(dims=3).name == "flip"
    s = phantoms[1]
    a = flipseg.segment(s["image"], s["box"], method="flip", segments=60)
    b = flipseg.load_model(_shipped_flip(), segments=60).segment(s["image"], s["box"])
    assert np.array_equal(a[0], b[0])


def _shipped_flip():
    from flipseg.methods.flip.infer import default_model_path

    return default_model_path(2)


def test_api_errors_are_flipseg_errors(phantoms):
    img = phantoms[0]["image"]
    with pytest.raises(FlipsegError, match="unknown method"):
        flipseg.segment(img, (1, 1, 9, 9), method="magic")
    with pytest.raises(FlipsegError, match="unknown flip option 'segmnts'"):
        flipseg.segment(img, (1, 1, 9, 9), method="flip", segmnts=3)
    with pytest.raises(FlipsegError, match="needs boxes"):
        flipseg.segment(img, None, method="ellipse")
    with pytest.raises(FlipsegError, match="4 .2D. or 6 .3D. numbers"):
        flipseg.segment(img, [(1, 2, 3)], method="ellipse")
    with pytest.raises(FlipsegError):
        flipseg.segment(img, (5_000, 1, 10_000, 9), method="ellipse")  # outside the image
    with pytest.raises(FlipsegError, match="takes no trained model"):
        flipseg.segment(img, (1, 1, 9, 9), method="ellipse", model="x")


def test_evaluate(phantoms):
    rep = flipseg.evaluate([s["image"] for s in phantoms], [s["box"] for s in phantoms],
                           [s["mask"] for s in phantoms], method="box")
    assert rep["n"] == 3 and 0 < rep["mean"]["dice"] < 1 and len(rep["cases"]) == 3
    perfect = flipseg.evaluate([phantoms[0]["image"]], [phantoms[0]["box"]],
                               [phantoms[0]["box"].to_mask(phantoms[0]["image"].shape)], method="box")
    assert perfect["mean"]["dice"] == 1.0 and perfect["mean"]["hd"] == 0.0
