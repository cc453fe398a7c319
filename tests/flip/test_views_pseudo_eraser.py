import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.flip.classifier import ClassifierConfig
from flipseg.methods.flip.eraser import (
    candidate_names,
    choose_eraser_sources,
    mixup_patch,
    neighbour_patches,
)
from flipseg.methods.flip.pseudo import (
    NODULE,
    NORMAL,
    PseudoSampleDataset,
    fill_mask,
    sample_negative_boxes,
    sample_positive_boxes,
    superpixel_fill,
)
from flipseg.methods.flip.views import extract_views, to_input, view_box
from flipseg.resize import resize
from flipseg.superpixels import superpixels


def _ramp(shape):
    """Every pixel holds a distinct value: 1000 * row + column (+ 100000 * slice)."""
    idx = np.indices(shape).astype(np.float32)
    weights = [100000.0, 1000.0, 1.0][-len(shape):]
    return sum(w * i for w, i in zip(weights, idx, strict=True))


def _blob_image(seed, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    img = 140 + 20 * rng.standard_normal(shape)
    yy, xx = np.indices(shape)
    cy, cx = shape[0] // 2 + rng.integers(-4, 5), shape[1] // 2 + rng.integers(-6, 7)
    m = ((yy - cy) / 8.0) ** 2 + ((xx - cx) / 11.0) ** 2 <= 1
    img[m] = 50
    return {"image": np.clip(img, 0, 255).astype(np.float32), "box": Box.from_mask(m),
            "case_id": f"b{seed}"}


# ------------------------------------------------------------------ views
def test_view_box_margin_and_clipping():
    assert view_box(Box(10, 20, 30, 40), (100, 100), 0.25) == Box(5, 15, 35, 45)
    assert view_box(Box(0, 2, 8, 10), (12, 12), 0.5) == Box(0, 0, 12, 12)
    assert view_box(Box(1, 1, 3, 3, 1, 5), (8, 8, 8), 0.25) == Box(0, 0, 4, 4, 0, 6)


def test_to_input_shapes_and_scaling():
    x = to_input([np.full((7, 9), 255.0), np.zeros((30, 11))])
    assert x.shape == (2, 1, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(1, 64, 64)) and float(x[1].abs().max()) == 0.0
    assert to_input([np.zeros((5, 6, 7))]).shape == (1, 1, 32, 32, 32)
    assert to_input([np.zeros((5, 6))], 16).shape == (1, 1, 16, 16)
    img = np.full((50, 50), 51.0)
    views = extract_views(img, [Box(5, 5, 20, 30)], size=8)
    assert torch.allclose(views, torch.full((1, 1, 8, 8), 0.2))


# ----------------------------------------------------------------- eraser
def test_neighbour_patches_exact_2d():
    img = _ramp((40, 30))
    box = Box(x0=10, y0=20, x1=14, y1=26)  # h=6, w=4
    p = neighbour_patches(img, box)
    assert list(p) == candidate_names(2)
    np.testing.assert_array_equal(p["up"], img[14:20, 10:14])
    np.testing.assert_array_equal(p["down"], img[26:32, 10:14])
    np.testing.assert_array_equal(p["left"], img[20:26, 6:10])
    np.testing.assert_array_equal(p["right"], img[20:26, 14:18])
    np.testing.assert_array_equal(p["up+down"], 0.5 * (img[14:20, 10:14] + img[26:32, 10:14]))
    np.testing.assert_array_equal(p["left+right"], 0.5 * (img[20:26, 6:10] + img[20:26, 14:18]))


def test_neighbour_patches_resized_and_omitted_at_borders():
    img = _ramp((40, 30))
    near_top = Box(x0=10, y0=3, x1=14, y1=9)  # only 3 rows above a 6-row box
    p = neighbour_patches(img, near_top)
    assert p["up"].shape == (6, 4)
    np.testing.assert_allclose(p["up"], resize(img[0:3, 10:14], (6, 4)))
    assert p["up"].min() >= img[0, 10] and p["up"].max() <= img[2, 13]
    at_top_left = Box(x0=0, y0=0, x1=4, y1=6)
    p = neighbour_patches(img, at_top_left)
    assert set(p) == {"down", "right"}  # no room up/left, so no pairs either
    whole = Box(0, 0, 30, 40)
    assert neighbour_patches(img, whole) == {}


def test_neighbour_patches_3d_front_back():
    vol = _ramp((20, 16, 16))
    box = Box(x0=5, y0=6, x1=9, y1=10, z0=8, z1=11)
    p = neighbour_patches(vol, box)
    assert list(p) == candidate_names(3) and len(p) == 9
    np.testing.assert_array_equal(p["front"], vol[5:8, 6:10, 5:9])
    np.testing.assert_array_equal(p["back"], vol[11:14, 6:10, 5:9])
    np.testing.assert_array_equal(p["up"], vol[8:11, 2:6, 5:9])


def test_mixup_ramp_values():
    w = 8
    img = np.full((10, 3 * w), 999.0, np.float32)
    img[:, :w] = 10.0
    img[:, 2 * w :] = 110.0
    box = Box(x0=w, y0=2, x1=2 * w, y1=8)
    patch = mixup_patch(img, box, band=0)
    expect = 10 + 100 * np.arange(w) / w  # alpha = x / ((w_f + w_g) / 2)
    np.testing.assert_allclose(patch, np.broadcast_to(expect, (6, w)), rtol=1e-6)
    # a thinner right strip (w/2) reaches alpha = 1 earlier and is resized to the box
    img2 = img[:, : 2 * w + w // 2]
    patch2 = mixup_patch(img2, box, band=0)
    alpha = np.clip(np.arange(w) / ((w + w // 2) / 2), 0, 1)
    np.testing.assert_allclose(patch2[0], 10 + 100 * alpha, rtol=1e-6)
    # seam smoothing touches only the border band
    smooth = mixup_patch(img, box, band=1, kernel=3)
    np.testing.assert_allclose(smooth[1:-1, 1:-1], patch[1:-1, 1:-1])
    assert not np.allclose(smooth[0], patch[0])


def test_mixup_one_side_and_no_room():
    img = _ramp((12, 12))
    box = Box(0, 2, 4, 6)  # touches the left border: right proposal only
    np.testing.assert_array_equal(mixup_patch(img, box, band=0), img[2:6, 4:8])
    with pytest.raises(FlipsegError):
        mixup_patch(img, Box(0, 0, 12, 12))


def _mean_scorer(calls):
    def scorer(x):
        calls.append(len(x))
        return x.flatten(1).mean(1) * 0.9 + 0.05 * x.flatten(1)[:, 0]

    return scorer


def test_batched_choice_equals_per_box_choice():
    items = [_blob_image(s) for s in range(3)]
    images, boxes = [i["image"] for i in items], [i["box"] for i in items]
    calls = []
    batched = choose_eraser_sources(images, boxes, _mean_scorer(calls), size=16)
    assert len(calls) == 1 and calls[0] == sum(len(neighbour_patches(i, b)) for i, b in
                                               zip(images, boxes, strict=True))
    for im, b, got in zip(images, boxes, batched, strict=True):
        (patch, name, score), = choose_eraser_sources([im], [b], _mean_scorer([]), size=16)
        assert got[1] == name and got[2] == pytest.approx(score)
        np.testing.assert_array_equal(got[0], patch)
        assert patch.shape == b.shape and name in candidate_names(2)


def test_fixed_and_mixup_modes():
    img = _blob_image(0)["image"]
    box = Box(0, 10, 10, 20)  # no room on the left
    (patch, name, score), = choose_eraser_sources([img], [box], None, mode="right")
    assert name == "right" and np.isnan(score)
    (_, name, score), = choose_eraser_sources([img], [box], _mean_scorer([]), mode="left", size=8)
    assert name != "left" and np.isfinite(score)  # replaced by the classifier's choice
    (patch, name, _), = choose_eraser_sources([img], [box], None, mode="mixup")
    assert name == "mixup" and patch.shape == (10, 10)
    with pytest.raises(FlipsegError, match="unknown eraser source"):
        choose_eraser_sources([img], [box], None, mode="front")


# ------------------------------------------------------------ pseudo boxes
def test_positive_boxes_cover_more_than_half():
    rng = np.random.default_rng(0)
    shape = (60, 80)
    for box in (Box(20, 15, 50, 40), Box(0, 0, 12, 10), Box(70, 50, 80, 60)):
        for b in sample_positive_boxes(box, shape, 50, rng):
            lo, hi = np.maximum(b.lo, box.lo), np.minimum(b.hi, box.hi)
            inter = np.prod(np.clip(hi - lo, 0, None))
            assert inter > 0.5 * box.size
            assert b.clip(shape) == b and min(b.shape) >= 2


def test_negative_boxes_do_not_overlap():
    rng = np.random.default_rng(1)
    shape = (60, 80)
    box = Box(20, 15, 50, 40)
    negs = sample_negative_boxes(box, shape, 60, rng)
    assert len(negs) == 60
    for b in negs:
        assert b.iou(box) == 0.0 and b.clip(shape) == b
        assert 0.1 < b.size / box.size < 2.5
    vol = sample_negative_boxes(Box(2, 2, 6, 6, 2, 6), (12, 12, 12), 10, rng)
    assert vol and all(b.iou(Box(2, 2, 6, 6, 2, 6)) == 0.0 for b in vol)
    assert sample_negative_boxes(Box(1, 1, 79, 59), shape, 5, rng) == []  # no room


def test_fill_ratio_within_one_superpixel():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 255, (40, 50)).astype(np.float32)
    labels = superpixels(img, 30)
    areas = np.bincount(labels.ravel())
    order = rng.permutation(labels.max() + 1)
    for ratio in (0.0, 0.2, 0.45, 0.55, 0.9, 1.0):
        m = fill_mask(labels, order, ratio)
        assert abs(m.mean() - ratio) <= areas.max() / labels.size
    big = np.zeros((60, 70), np.float32)
    box = Box(10, 10, 60, 50)
    src = np.full(box.shape, 200.0, np.float32)
    out = superpixel_fill(big, box, src, labels, order, 0.3)
    filled = out[box.slices()] == 200.0
    assert abs(filled.mean() - 0.3) <= areas.max() / labels.size
    out[box.slices()] = 0
    assert not out.any()  # nothing outside the box changes


def _dataset_cfg(**kw):
    base = dict(input_size=16, positives=2, negatives=2, superpixels=20, fill_prob=0.5)
    return ClassifierConfig(**(base | kw))


def test_dataset_is_deterministic_per_epoch():
    samples = [_blob_image(s) for s in range(3)]
    a = PseudoSampleDataset(samples, _dataset_cfg(), seed=3)
    b = PseudoSampleDataset(samples, _dataset_cfg(), seed=3)
    assert len(a) == 12
    for i in (0, 5, 11):
        xa, ya = a[i]
        xb, yb = b[i]
        assert ya == yb and torch.equal(xa, xb) and xa.shape == (1, 16, 16)
    assert [a[i][1] for i in range(4)] == [NODULE, NODULE, NORMAL, NORMAL]
    x0 = torch.stack([a[i][0] for i in range(len(a))])
    a.set_epoch(1)
    x1 = torch.stack([a[i][0] for i in range(len(a))])
    assert not torch.equal(x0, x1)
    assert 0.0 <= float(x1.min()) and float(x1.max()) <= 1.0


def test_dataset_fill_labels_follow_ratio():
    samples = [_blob_image(s) for s in range(2)]
    cfg = _dataset_cfg(fill_prob=1.0, input_size=32, superpixels=40, fill_gap=0.1)
    ds = PseudoSampleDataset(samples, cfg, seed=0, augment=False)
    c = ds.boxes[0]
    tol = np.bincount(c.labels.ravel()).max() / c.labels.size
    for i in range(4):
        x, y = ds[i]
        inner = x[0].numpy()[c.canvas_box.slices()] * 255
        changed = ~np.isclose(inner, c.canvas[c.canvas_box.slices()], atol=1e-3)
        if y == NODULE:
            assert changed.mean() <= 0.4 + tol
        else:
            assert changed.mean() >= 0.6 - tol


def test_residual_fill_scheme_clears_the_centre_only_for_normal():
    from flipseg.methods.flip.pseudo import _residual_fill

    cfg = _dataset_cfg(fill_scheme="residual")
    order = np.arange(50)
    rng = np.random.default_rng(0)
    for _ in range(60):
        ratio, o = _residual_fill(order, NORMAL, cfg, rng)
        assert ratio >= cfg.residual_normal_min and np.array_equal(o, order)
        ratio, o = _residual_fill(order, NODULE, cfg, rng)
        if np.array_equal(o, order):  # inner-first: the lesion's rim is still visible
            assert ratio <= cfg.residual_inner_max
        elif np.array_equal(o, order[::-1]):  # outer-first: the centre is still visible
            assert ratio <= cfg.residual_outer_max
        else:  # scattered remnants
            assert sorted(o) == list(order) and ratio <= cfg.residual_random_max
    with pytest.raises(FlipsegError):
        _dataset_cfg(fill_scheme="magic")
    samples = [_blob_image(s) for s in range(2)]
    ds = PseudoSampleDataset(samples, _dataset_cfg(fill_prob=1.0, fill_scheme="residual"), seed=0)
    assert [ds[i][1] for i in range(4)] == [NODULE, NODULE, NORMAL, NORMAL]
