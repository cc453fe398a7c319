"""Box refinement: edge corrections, crops, learning to undo a jitter, resume, CLI."""

import json

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.cli import main
from flipseg.errors import FlipsegError
from flipseg.methods import get_segmenter
from flipseg.methods.boxrefine.model import (
    BoxRefineConfig,
    BoxRefiner,
    RefinedBoxSegmenter,
    _apply,
    crop_around,
    edge_error,
    edge_targets,
    train_box_refiner,
)

TINY = dict(input_size=32, channels=(8, 16), hidden=32, batch_size=16, num_threads=1)


def _discs(n, seed=0, shape=(64, 64)):
    """Dark discs of random place and size on bright speckle, with their tight boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = []
    for i in range(n):
        r = rng.uniform(8, 14)
        cy, cx = rng.uniform(r + 8, shape[0] - r - 8), rng.uniform(r + 8, shape[1] - r - 8)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        img = np.clip(170 + 15 * rng.standard_normal(shape), 0, 255)
        img[disc] = 50 + 10 * rng.standard_normal(int(disc.sum()))
        out.append({"case_id": f"d{i}", "image": img.astype(np.float32), "mask": disc,
                    "box": Box.from_mask(disc)})
    return out


def test_corrections_take_a_box_to_the_tight_one():
    tight = Box(x0=20, y0=10, x1=60, y1=40)
    loose = Box(x0=14, y0=13, x1=66, y1=35)
    t = edge_targets(loose, tight)
    assert _apply(loose, t, (100, 100)) == tight
    assert edge_error([loose], [tight]) == pytest.approx((3 + 6 + 5 + 6) / 4)
    # corrections are clipped to the image and keep at least 2 px
    assert _apply(loose, np.array([-5, -5, 5, 5], np.float32), (50, 70)).hi == (50, 70)
    squashed = _apply(loose, np.array([0.5, 0.5, -0.6, -0.6], np.float32), (100, 100))
    assert min(squashed.shape) >= 2


def test_crop_covers_the_margin_and_pads_at_the_border():
    cfg = BoxRefineConfig(**TINY, margin=0.5)
    img = np.zeros((40, 40), np.float32)
    img[:, 20:] = 255.0
    crop = crop_around(img, Box(x0=10, y0=10, x1=30, y1=30), cfg)  # view x 0..40
    assert crop.shape == (32, 32)
    assert crop[:, :14].max() == 0 and crop[:, 18:].min() == pytest.approx(1.0)
    edge = crop_around(img, Box(x0=0, y0=0, x1=10, y1=10), cfg)  # view beyond the image
    assert edge.shape == (32, 32) and np.isfinite(edge).all()
    dim = crop_around(img * 0.2 + 50, Box(x0=10, y0=10, x1=30, y1=30), cfg)
    stretched = crop_around(img * 0.2 + 50, Box(x0=10, y0=10, x1=30, y1=30),
                            BoxRefineConfig(**TINY, margin=0.5, normalize="percentile"))
    assert dim.max() < 0.5 and stretched.min() == 0.0 and stretched.max() == pytest.approx(1.0)
    with pytest.raises(FlipsegError, match="2D only"):
        crop_around(np.zeros((4, 8, 8)), Box(1, 1, 5, 5, 1, 3), cfg)
    with pytest.raises(FlipsegError, match="input_size"):
        BoxRefineConfig(input_size=30, channels=(8, 16))


def test_the_refiner_learns_to_undo_the_jitter_and_resumes(tmp_path):
    train, val = _discs(96, seed=0), _discs(24, seed=1)
    cfg = BoxRefineConfig(**TINY, epochs=25, lr=3e-3, train_shift=6, val_shift="0-6",
                          intensity_aug=False)
    path = train_box_refiner(train, val, cfg, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(log) == 26
    last = dict(zip(log[0].split(","), map(float, log[-1].split(","))))
    assert last["val_edge_error_after"] < 0.75 * last["val_edge_error_before"]
    refiner = BoxRefiner.load(path)
    boxes = refiner.refine_many([s["image"] for s in val], [s["box"] for s in val])
    assert all(b.is_valid() and b.hi[0] <= 64 and b.hi[1] <= 64 for b in boxes)
    # a finished run re-run trains nothing more; another configuration is refused
    train_box_refiner(train, val, cfg, tmp_path / "run", progress=False)
    assert len((tmp_path / "run" / "train_log.csv").read_text().splitlines()) == 26
    with pytest.raises(FlipsegError, match="another configuration"):
        train_box_refiner(train, val, cfg.__class__(**{**cfg.to_dict(), "margin": 0.2}),
                          tmp_path / "run", progress=False)


def test_refined_segmenter_wraps_box_prompted_methods_only(tmp_path):
    refiner = BoxRefiner(BoxRefineConfig(**TINY))
    seg = RefinedBoxSegmenter(get_segmenter("ellipse"), refiner)
    assert seg.name == "ellipse+refine"
    s = _discs(2)
    masks = seg.segment_many([x["image"] for x in s], [x["box"] for x in s])
    assert len(masks) == 2 and masks[0].shape == (64, 64)

    class WholeImage:
        name, needs_box, dims = "unet", False, (2,)

    with pytest.raises(FlipsegError, match="ignores the box"):
        RefinedBoxSegmenter(WholeImage(), refiner)


def test_box_refiner_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["--set", "epochs=2", "--set", "input_size=32", "--set", "channels=8,16",
            "--set", "hidden=16"]
    assert main(["train", "box-refiner", "--dataset", "phantom2d", "--out", str(run),
                 "--no-progress", *tiny]) == 0
    assert (run / "boxrefine_model.safetensors").exists()
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "phantom2d", "--method", "ellipse", "--method", "box",
                 "--refine-box", str(run), "--box-shift", "0-10", "--repeats", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "ellipse+refine" / "summary.json").exists() and (out / "compare.md").exists()
    img = tmp_path / "img.png"
    from flipseg.viz import save_png

    save_png(img, _discs(1)[0]["image"].astype(np.uint8))
    seg_out = tmp_path / "seg"
    assert main(["segment", "--method", "ellipse", "--image", str(img), "--box", "10,10,40,40",
                 "--refine-box", str(run), "--out", str(seg_out)]) == 0
    row = json.loads((seg_out / "segment.json").read_text())[0]
    assert row["given_box"] == "10,10,40,40" and "box" in row
    from flipseg.viz import overlay

    # the overlay draws the given box (cyan) beside the refined one (yellow); a 64 px image
    # is drawn 4 times larger (shorter side >= 256 px), so pixel row y is rows 4y..4y+3
    pic = overlay(np.zeros((64, 64)), None, box=Box(12, 12, 40, 40), given_box=Box(10, 10, 44, 44))
    assert (pic[4 * 10, 4 * 20] == (0, 200, 230)).all() and (pic[4 * 12, 4 * 20] == (250, 220, 0)).all()
    import cv2

    saved = cv2.cvtColor(cv2.imread(str(seg_out / "img_overlay.png")), cv2.COLOR_BGR2RGB)
    assert (saved == (0, 200, 230)).all(-1).any()
    # user mistakes: a refiner that is not there, a flip model given as refiner
    assert main(["evaluate", "--dataset", "phantom2d", "--method", "ellipse", "--refine-box",
                 str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "box refiner not found" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "phantom3d", "--data-opt", "n=1", "--method", "ellipse",
                 "--refine-box", str(run), "--out", str(out)]) == 2
    assert "2D only" in capsys.readouterr().err
    assert main(["segment", "--dataset", "phantom3d", "--data-opt", "n=1", "--method", "ellipse",
                 "--refine-box", str(run), "--out", str(tmp_path / "seg3d")]) == 2
    assert "2D only" in capsys.readouterr().err
