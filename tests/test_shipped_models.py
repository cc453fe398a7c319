"""The models shipped in the package load and give sensible masks on real/synthetic data."""

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data import load_dataset, make_phantom_3d
from flipseg.methods.flip.infer import FlipModel, default_model_path
from flipseg.metrics import compute_dice


@pytest.fixture(scope="module")
def samples():
    return load_dataset("samples")[:3]


def test_flip2d_model_segments_the_bundled_samples(samples):
    model = FlipModel.load(default_model_path(2))
    assert model.cfg.dims == 2
    res = model.segment_many([s["image"] for s in samples], [s["box"] for s in samples])
    dice = [compute_dice(r.mask, s["mask"]) for r, s in zip(res, samples)]
    assert np.mean(dice) > 0.6
    for r, s in zip(res, samples):
        assert not (r.mask & ~s["box"].to_mask(s["image"].shape)).any()
        assert r.curves["normal_score"][-1] >= r.curves["normal_score"][0]


def test_flip3d_model_segments_a_phantom_lesion():
    model = FlipModel.load(default_model_path(3))
    assert model.cfg.dims == 3
    ph = make_phantom_3d(seed=1000)
    res = model.segment_many([ph["image"]] * len(ph["boxes"]), ph["boxes"])
    dice = [compute_dice(r.mask, m) for r, m in zip(res, ph["lesion_masks"])]
    assert np.mean(dice) > 0.6


def test_flip_grabcut_refines_the_flip_masks_inside_the_box(samples):
    from flipseg.methods import get_segmenter, load_methods

    load_methods()
    cases = samples[:3]
    flip = get_segmenter("flip").segment_many([c["image"] for c in cases], [c["box"] for c in cases])
    refined = get_segmenter("flip-grabcut").segment_many([c["image"] for c in cases],
                                                        [c["box"] for c in cases])
    for c, a, b in zip(cases, flip, refined):
        assert b.shape == a.shape and b.any()
        assert not (b & ~c["box"].to_mask(b.shape)).any()
    assert any((a != b).any() for a, b in zip(flip, refined))


def test_flip_vote_keeps_the_pixels_two_of_flip_its_grabcut_and_boxinst_agree_on(samples):
    from flipseg.methods import get_segmenter, load_methods

    load_methods()
    ims, bxs = [s["image"] for s in samples], [s["box"] for s in samples]
    parts = [get_segmenter(m).segment_many(ims, bxs) for m in ("flip", "flip-grabcut", "boxinst")]
    seg = get_segmenter("flip-vote")
    voted = seg.segment_many(ims, bxs)
    for i, v in enumerate(voted):
        count = sum(p[i].astype(int) for p in parts)
        np.testing.assert_array_equal(v, count >= 2)
    # vote_parts (what `flipseg segment` draws) gives the same voters and vote
    shown = seg.vote_parts(ims, bxs)
    assert list(shown) == ["flip", "flip-grabcut", "boxinst", "flip-vote"]
    for got, want in zip(shown.values(), [*parts, voted]):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # the vote differs from each of its voters somewhere on these cases
    for p in parts:
        assert any((a != b).any() for a, b in zip(voted, p))


def test_majority_vote_and_the_2d_only_refinements():
    from flipseg.api import make_segmenter
    from flipseg.errors import FlipsegError
    from flipseg.methods.flip.infer import FlipSegmenter
    from flipseg.methods.vote.segmenter import majority_vote

    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    c = np.array([[0, 1, 1, 0]], bool)
    np.testing.assert_array_equal(majority_vote([a], [b], [c])[0], [[1, 1, 1, 0]])
    np.testing.assert_array_equal(majority_vote([a], [b])[0], [[1, 0, 0, 0]])
    with pytest.raises(FlipsegError, match="2D only"):
        FlipSegmenter(dims=3, refine="grabcut")
    for method in ("flip-grabcut", "flip-vote"):
        with pytest.raises(FlipsegError, match="segments 2D images, not 3D"):
            make_segmenter(method, dims=3)
    with pytest.raises(FlipsegError, match="choose grabcut or none"):
        FlipSegmenter(refine="crf")


def test_shipped_models_fuse_with_the_box_prior_and_the_segmenter_can_switch_it_off(samples):
    from flipseg.methods.flip.infer import FlipSegmenter

    for dims in (2, 3):
        assert FlipModel.load(default_model_path(dims)).cfg.prior_fusion == 0.4
    ims, bxs = [s["image"] for s in samples], [s["box"] for s in samples]
    fused = FlipSegmenter().segment_many(ims, bxs)
    raw_seg = FlipSegmenter(prior_fusion=0.0)
    assert raw_seg.model.cfg.prior_fusion == 0.0
    raw = raw_seg.segment_many(ims, bxs)
    assert any((a != b).any() for a, b in zip(fused, raw))


def test_shipped_boxinst_model_is_the_default_and_segments_inside_the_box(samples):
    from flipseg.methods import get_segmenter, load_methods

    load_methods()
    masks = get_segmenter("boxinst").segment_many([s["image"] for s in samples], [s["box"] for s in samples])
    for m, s in zip(masks, samples):
        assert not (m & ~s["box"].to_mask(m.shape)).any()
    assert np.mean([compute_dice(m, s["mask"]) for m, s in zip(masks, samples)]) > 0.7


def test_shipped_2d_model_erases_400_superpixels_and_the_segmenter_can_change_it(samples):
    from flipseg.methods.flip.infer import FlipSegmenter

    model = FlipModel.load(default_model_path(2))
    assert model.cfg.inference_segments == 400 and model.cfg.levels == (50, 100)
    ims, bxs = [s["image"] for s in samples], [s["box"] for s in samples]
    default = [r.mask for r in model.segment_many(ims, bxs)]
    explicit = [r.mask for r in model.segment_many(ims, bxs, level=400)]
    assert all((a == b).all() for a, b in zip(default, explicit))
    coarse = FlipSegmenter(segments=100)
    assert coarse.model.cfg.inference_segments == 100
    assert any((a != b).any() for a, b in zip(default, coarse.segment_many(ims, bxs)))


def test_shipped_box_refiner_tightens_shifted_boxes_of_the_samples():
    from flipseg.boxes import shifted_boxes
    from flipseg.methods.boxrefine.model import edge_error, load_refiner

    refiner = load_refiner(None)
    cases = load_dataset("samples")
    ims = [c["image"] for c in cases]
    tight = [c["box"] for c in cases]
    rough = [b for i, (im, t) in enumerate(zip(ims, tight))
             for b in shifted_boxes(t, im.shape, "0-10", repeats=2, seed=i)]
    ims2 = [im for im in ims for _ in range(2)]
    tight2 = [t for t in tight for _ in range(2)]
    refined = refiner.refine_many(ims2, rough)
    assert edge_error(refined, tight2) < 0.8 * edge_error(rough, tight2)


def test_demo_defaults_to_flip_vote_when_both_models_are_shipped():
    from flipseg.methods import default_method
    from flipseg.methods.boxinst.model import default_model_path as boxinst_model

    assert default_model_path(2).exists() and boxinst_model().exists()
    assert default_method(2) == "flip-vote" and default_method(3) == "flip"


def test_segment_flip_vote_writes_a_picture_of_its_voters(tmp_path):
    from flipseg.cli import main
    from flipseg.viz import mask_panels

    out = tmp_path / "seg"
    assert main(["segment", "--method", "flip-vote", "--dataset", "samples", "--limit", "2",
                 "--out", str(out)]) == 0
    pics = sorted(out.glob("*_voters.png"))
    masks = sorted(out.glob("*_mask.png"))
    assert len(pics) == 2 and len(masks) == 2
    # four tiles of a box-shaped region, 200 px high under a 24 px title bar
    img = np.zeros((100, 200), np.float32)
    box = Box.parse("40,30,120,70")
    m = box.to_mask(img.shape)
    pic = mask_panels(img, box, {"a": m, "b": m, "c": m, "d": ~m}, gt=m)
    assert pic.dtype == np.uint8 and pic.shape[0] == 224 and pic.shape[2] == 3
    one = mask_panels(img, box, {"a": m})
    assert pic.shape[1] == 4 * one.shape[1] + 3 * 4
