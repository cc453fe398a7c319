"""BoxInst losses, crops, and a tiny train -> evaluate run from the CLI."""

import json

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.cli import main
from flipseg.errors import FlipsegError
from flipseg.methods.boxinst import BoxInstConfig, pairwise_loss, projection_loss
from flipseg.methods.boxinst.model import BoxInstSegmenter, crop_box


def _box_mask(shape=(1, 1, 32, 32), lo=(8, 10), hi=(20, 26)):
    m = torch.zeros(shape)
    m[..., lo[0] : hi[0], lo[1] : hi[1]] = 1
    return m


def test_projection_loss_is_zero_for_the_box_and_positive_otherwise():
    bm = _box_mask()
    exact = (bm * 2 - 1) * 50  # logits: inside +50, outside -50
    assert float(projection_loss(exact, bm)) < 1e-3
    ellipse_like = exact.clone()
    ellipse_like[..., 8, 10] = -50  # a corner off changes no projection
    assert float(projection_loss(ellipse_like, bm)) < 1e-3
    short = exact.clone()
    short[..., :, 22:] = -50  # mask ends before the right edge of the box
    assert float(projection_loss(short, bm)) > 0.05
    leak = exact.clone()
    leak[..., 2, 12] = 50  # mask above the box
    assert float(projection_loss(leak, bm)) > float(projection_loss(exact, bm))


def test_pairwise_loss_prefers_labels_that_follow_intensity_edges():
    img = torch.zeros(1, 1, 32, 32)
    img[..., :, 16:] = 1.0  # two flat halves
    bm = torch.ones(1, 1, 32, 32)
    follows = torch.where(img > 0.5, 20.0, -20.0)
    crosses = torch.where(torch.arange(32).view(1, 1, 32, 1) < 16, 20.0, -20.0).expand(1, 1, 32, 32)
    assert float(pairwise_loss(follows, img, bm)) < 1e-3
    assert float(pairwise_loss(crosses, img, bm)) > 0.5
    # only pairs inside the box count: a box on one flat half sees no edge at all
    half = _box_mask(lo=(0, 0), hi=(32, 14))
    assert float(pairwise_loss(crosses, img, half)) > 0.5
    assert float(pairwise_loss(torch.full_like(img, 20.0), img, half)) < 1e-3


def test_crop_box_maps_the_box_into_the_crop():
    cfg = BoxInstConfig(crop_size=32, margin=0.25)
    img = np.zeros((100, 120), np.float32)
    crop, smooth, bm, view = crop_box(img, Box.parse("40,30,80,70"), cfg)
    assert crop.shape == smooth.shape == bm.shape == (32, 32)
    ys, xs = np.nonzero(bm)
    # a 40x40 box with a 10 px margin on each side covers the middle two thirds
    assert abs(ys.min() - 5) <= 1 and abs(ys.max() - 26) <= 1
    assert abs(xs.min() - 5) <= 1 and abs(xs.max() - 26) <= 1
    with pytest.raises(FlipsegError, match="2D"):
        crop_box(np.zeros((4, 10, 10)), Box.parse("1,1,5,5,0,2"), cfg)


def test_boxinst_model_errors_and_options(tmp_path):
    with pytest.raises(FlipsegError, match="not found"):
        BoxInstSegmenter(model=tmp_path / "missing")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(FlipsegError, match="cannot read"):
        BoxInstSegmenter(model=tmp_path / "junk.pt")
    with pytest.raises(FlipsegError, match="crop_size"):
        BoxInstConfig(crop_size=30)


#: A U-Net small enough to train in a second on the phantom images.
TINY = ["--set", "crop_size=32", "--set", "batch_size=8", "--set", "channels=8,16,32"]


def _train_tiny(run, epochs: int) -> int:
    return main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(run),
                 "--no-progress", *TINY, "--set", f"epochs={epochs}"])


def test_train_and_evaluate_boxinst_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train_tiny(run, 2) == 0
    assert (run / "boxinst_model.safetensors").exists() and (run / "train_log.csv").exists()
    lines = (run / "train_log.csv").read_text().splitlines()
    assert len(lines) == 3 and "val_dice" in lines[0] and "val_fill" in lines[0]
    # a finished run re-run resumes: no more epochs
    assert main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(run),
                 "--no-progress"]) == 0
    assert len((run / "train_log.csv").read_text().splitlines()) == 3
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "phantom2d", "--method", "boxinst", "--model", str(run),
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "summary.json").exists()
    assert main(["evaluate", "--dataset", "phantom2d", "--method", "boxinst", "--model",
                 str(tmp_path / "nothing"), "--out", str(out), "--no-progress"]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(run),
                 "--set", "nope=1"]) == 2


def test_filling_the_whole_box_costs_more_than_the_lesion():
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 <= 12**2).float()[None, None]
    img = 0.8 - 0.6 * disc  # dark lesion on bright, flat tissue
    bm = _box_mask((1, 1, 48, 48), (12, 12), (37, 37))
    lesion = (disc * 2 - 1) * 20
    filled = (bm * 2 - 1) * 20
    assert float(pairwise_loss(filled, img, bm)) > float(pairwise_loss(lesion, img, bm)) + 0.5
    # both touch every box edge: the projection loss cannot tell them apart
    assert abs(float(projection_loss(filled, bm)) - float(projection_loss(lesion, bm))) < 0.05


def test_training_warns_when_the_unet_marks_almost_nothing_in_the_held_out_boxes(
        tmp_path, capsys, monkeypatch):
    from flipseg.methods.boxinst import model as bi

    def empty(self, images, boxes, **kw):
        return [np.zeros(np.shape(im), bool) for im in images]

    monkeypatch.setattr(bi.BoxInstModel, "segment_many", empty)
    assert _train_tiny(tmp_path / "a", 1) == 0
    assert "training collapsed" in capsys.readouterr().out
    monkeypatch.undo()
    assert _train_tiny(tmp_path / "b", 2) == 0
    log = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    fill = float(log[-1].split(",")[log[0].split(",").index("val_fill")])
    assert 0.25 < fill <= 1.0
    assert "training collapsed" not in capsys.readouterr().out


def test_a_trained_boxinst_run_is_flip_votes_third_voter_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train_tiny(run, 1) == 0
    data = ["--dataset", "phantom2d", "--data-opt", "n=2", "--no-progress"]
    assert main(["evaluate", *data, "--method", "flip-vote", "--vote-model", str(run),
                 "--out", str(tmp_path / "ev")]) == 0
    assert "flip-vote" in (tmp_path / "ev" / "summary.md").read_text()
    assert main(["evaluate", *data, "--method", "flip", "--vote-model", str(run),
                 "--out", str(tmp_path / "ev2")]) == 2
    assert "--vote-model does nothing for flip" in capsys.readouterr().err
    assert main(["evaluate", *data, "--method", "flip-vote", "--vote-model", str(tmp_path),
                 "--out", str(tmp_path / "ev3")]) == 2
    assert "no boxinst model" in capsys.readouterr().err


def test_mask_loss_is_lowest_for_the_target_mask():
    from flipseg.methods.boxinst import mask_loss

    tgt = _box_mask()
    exact = (tgt * 2 - 1) * 20
    assert float(mask_loss(exact, tgt)) < 1e-3
    assert float(mask_loss(-exact, tgt)) > 1.5
    half = exact.clone()
    half[..., :, 18:] = -20
    assert float(mask_loss(exact, tgt)) < float(mask_loss(half, tgt)) < float(mask_loss(-exact, tgt))


def test_pseudo_masks_are_the_methods_masks_drawn_once_and_kept(tmp_path, monkeypatch):
    from flipseg.data import load_dataset
    from flipseg.methods import get_segmenter
    from flipseg.methods.boxinst import model as bi

    samples = load_dataset("phantom2d", n=3)
    cfg = BoxInstConfig(supervision="pseudo", pseudo_method="ellipse")
    drawn = bi.pseudo_masks(samples, cfg, tmp_path, progress=False)
    ell = get_segmenter("ellipse")
    for s, m in zip(samples, drawn):
        assert m.shape == s["image"].shape and np.array_equal(m, ell.segment(s["image"], s["box"]))
    assert (tmp_path / "pseudo_masks.npz").exists()

    def no_method(name, **kw):
        raise AssertionError("drawn again")

    monkeypatch.setattr("flipseg.methods.get_segmenter", no_method)
    again = bi.pseudo_masks(samples, cfg, tmp_path, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(drawn, again))
    # another method, or other boxes, are drawn anew
    with pytest.raises(AssertionError, match="drawn again"):
        bi.pseudo_masks(samples, BoxInstConfig(supervision="pseudo", pseudo_method="box"), tmp_path)
    with pytest.raises(AssertionError, match="drawn again"):
        bi.pseudo_masks(samples[:2], cfg, tmp_path)


def test_the_unet_learns_the_masks_it_is_given(tmp_path):
    """Fitted to filled boxes it marks whole boxes; fitted to their inscribed ellipses,
    clearly less (pi/4 of each box once fully fitted)."""
    fills = {}
    for method in ("box", "ellipse"):
        run = tmp_path / method
        assert main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(run), "--no-progress",
                     *TINY, "--set", "epochs=80", "--set", "lr=3e-3", "--set", "supervision=pseudo",
                     "--set", f"pseudo_method={method}"]) == 0
        log = (run / "train_log.csv").read_text().splitlines()
        fills[method] = float(log[-1].split(",")[log[0].split(",").index("val_fill")])
    assert fills["box"] > 0.93
    assert 0.6 < fills["ellipse"] < fills["box"] - 0.06


def test_mask_supervision_needs_every_mask_and_pseudo_a_box_method(tmp_path):
    from flipseg.data import load_dataset
    from flipseg.methods.boxinst import model as bi

    samples = load_dataset("phantom2d", n=3)
    samples[1] = {**samples[1], "mask": None}
    with pytest.raises(FlipsegError, match="1 of 3 have none"):
        bi._targets(samples, BoxInstConfig(supervision="mask"), tmp_path, False)
    with pytest.raises(FlipsegError, match="unknown|not a"):
        bi.pseudo_masks(samples, BoxInstConfig(supervision="pseudo", pseudo_method="nope"), tmp_path)
    assert main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(tmp_path / "r"),
                 "--set", "supervision=masks"]) == 2
    # the phantoms have every mask: a fully supervised run logs its one loss, no box terms
    assert main(["train", "boxinst", "--dataset", "phantom2d", "--out", str(tmp_path / "m"),
                 "--no-progress", *TINY, "--set", "epochs=1", "--set", "supervision=mask"]) == 0
    head = (tmp_path / "m" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "loss" in head and "val_dice" in head and "pairwise" not in head


def test_pseudo_masks_resume_after_a_kill_and_draw_only_the_rest(tmp_path, monkeypatch):
    from flipseg.data import load_dataset
    from flipseg.methods import get_segmenter
    from flipseg.methods.boxinst import model as bi

    samples = load_dataset("phantom2d", n=5)
    cfg = BoxInstConfig(supervision="pseudo", pseudo_method="ellipse")
    drawn: list[int] = []

    class Killed(Exception):
        pass

    def counting(kill_after):
        ell = get_segmenter("ellipse")

        class Seg:
            needs_box, dims = True, (2,)

            def segment_many(self, images, boxes, seed=0):
                if len(drawn) >= kill_after:
                    raise Killed
                drawn.extend([1] * len(images))
                return ell.segment_many(images, boxes, seed=seed)
        return lambda name, **kw: Seg()

    monkeypatch.setattr("flipseg.methods.get_segmenter", counting(kill_after=3))
    with pytest.raises(Killed):
        bi.pseudo_masks(samples, cfg, tmp_path, progress=False, chunk=2)
    assert drawn == [1] * 4  # two chunks of two were drawn and kept before the kill
    drawn.clear()
    monkeypatch.setattr("flipseg.methods.get_segmenter", counting(kill_after=99))
    masks = bi.pseudo_masks(samples, cfg, tmp_path, progress=False, chunk=2)
    assert drawn == [1]  # only the fifth box is drawn again
    ell = get_segmenter("ellipse")
    assert all(np.array_equal(m, ell.segment(s["image"], s["box"])) for s, m in zip(samples, masks))


def test_a_run_refuses_other_data_and_fresh_starts_again(tmp_path, capsys):
    """A killed (or finished) run re-run on other data is a one-line error; --fresh moves
    the old run aside and trains afresh; the record is not rewritten by a same-data re-run."""
    run = tmp_path / "run"
    assert _train_tiny(run, 1) == 0
    record = (run / "data.json").read_text()
    assert json.loads(record)["dataset"] == "phantom2d" and json.loads(record)["case_ids_sha256"]
    assert _train_tiny(run, 1) == 0 and (run / "data.json").read_text() == record
    capsys.readouterr()
    other = ["train", "boxinst", "--dataset", "phantom2d", "--data-opt", "n=12", "--out", str(run),
             "--no-progress", *TINY, "--set", "epochs=1"]
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on dataset 'phantom2d'" in err[0] and "--fresh" in err[0]
    assert main([*other, "--fresh"]) == 0
    assert json.loads((run / "data.json").read_text())["data_opts"] == ["n=12"]
    moved = list(tmp_path.glob("run.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "data.json").read_text() == record
