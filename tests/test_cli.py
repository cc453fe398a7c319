"""End-to-end CLI runs on tiny data: error paths, evaluate, demo, train/segment flip."""

import json

import numpy as np
import pytest

from flipseg.cli import main
from flipseg.data.io import write_png
from flipseg.data.phantoms import phantom_dataset_2d


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in phantom_dataset_2d(3, seed=1):
        write_png(root / "images" / f"{s['case_id']}.png", np.clip(s["image"], 0, 255).astype(np.uint8))
        write_png(root / "masks" / f"{s['case_id']}.png", s["mask"])
    return root


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flipseg: error:"), err
    return err[0]


def test_missing_folder_is_one_line(tmp_path, capsys):
    rc = main(["evaluate", "--dataset", "folder", "--data-root", str(tmp_path / "nope"),
               "--method", "ellipse", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "nope" in _one_line_error(capsys)


def test_unknown_method_lists_valid_ones(folder, tmp_path, capsys):
    rc = main(["evaluate", "--dataset", "folder", "--data-root", str(folder),
               "--method", "magic", "--out", str(tmp_path / "o")])
    assert rc == 2
    line = _one_line_error(capsys)
    assert "magic" in line and "ellipse" in line


def test_corrupt_png_and_box_outside_are_skipped_and_reported(folder, tmp_path, capsys):
    # the dataset is an index: an image is read when its case runs, so the corrupt file
    # (given a mask, so that evaluate scores it) is reported then, and the run goes on
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    first = sorted(p.stem for p in (folder / "images").glob("phantom*.png"))[0]
    (folder / "masks" / "broken.png").write_bytes((folder / "masks" / f"{first}.png").read_bytes())
    (folder / "boxes.csv").write_text(f"case_id,x0,y0,x1,y1\n{first},900,900,950,950\n")
    out = tmp_path / "o"
    rc = main(["evaluate", "--dataset", "folder", "--data-root", str(folder),
               "--method", "ellipse", "--out", str(out), "--no-progress"])
    assert rc == 3
    printed = capsys.readouterr().out
    assert "broken" in printed and first in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2  # the two good cases were still scored
    assert "broken" in (out / "errors.csv").read_text()


def test_evaluate_writes_summary_and_compare(folder, tmp_path):
    out = tmp_path / "o"
    rc = main(["evaluate", "--dataset", "folder", "--data-root", str(folder),
               "--compare", "box", "ellipse", "--out", str(out), "--no-progress"])
    assert rc == 0
    s = json.loads((out / "ellipse" / "summary.json").read_text())
    assert s["method"] == "ellipse" and s["n"] == 3
    for k in ("dice", "jaccard", "hd", "hd95", "asd", "con"):
        assert set(s["metrics"][k]) == {"mean", "std"}
    assert 0 <= s["metrics"]["dice"]["mean"] <= 1
    assert "| dice |" in (out / "compare.md").read_text()
    rows = (out / "box" / "cases.csv").read_text().splitlines()
    assert len(rows) == 4


def test_box_shift_repeats(folder, tmp_path):
    out = tmp_path / "o"
    rc = main(["evaluate", "--dataset", "folder", "--data-root", str(folder), "--method", "box",
               "--box-shift", "10-20", "--out", str(out), "--no-progress"])
    assert rc == 0
    rows = (out / "cases.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 3


def test_demo_with_ellipse(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--method", "ellipse", "--out", str(out)]) == 0
    assert len(list((out / "overlays").glob("*.png"))) >= 8
    table = (out / "metrics.md").read_text()
    assert "ellipse" in table and "grabcut" in table


def test_train_segment_evaluate_flip_tiny(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["--set", "epochs=1", "--set", "levels=16", "--set", "num_envs=4", "--set", "warmup=8",
            "--set", "replay_size=64", "--set", "batch_size=8", "--set", "state_size=16"]
    rc = main(["train", "flip", "--dataset", "phantom2d", "--out", str(run), "--classifier-epochs",
               "1", "--no-progress", *tiny])
    assert rc == 0
    assert (run / "flip_model.safetensors").exists() and (run / "config.json").exists()
    assert (run / "classifier" / "classifier_report.json").exists()
    # resume: a finished run re-run does no more epochs and keeps its files
    assert main(["train", "flip", "--dataset", "phantom2d", "--out", str(run), "--no-progress"]) == 0
    seg = tmp_path / "seg"
    img = tmp_path / "img.png"
    s = phantom_dataset_2d(1, seed=9)[0]
    write_png(img, np.clip(s["image"], 0, 255).astype(np.uint8))
    b = s["box"]
    rc = main(["segment", "--model", str(run), "--image", str(img), "--box",
               f"{b.x0},{b.y0},{b.x1},{b.y1}", "--out", str(seg)])
    assert rc == 0
    for suffix in ("mask", "overlay", "flipped", "curve"):
        assert (seg / f"img_{suffix}.png").exists()
    curve = (seg / "img_curve.csv").read_text().splitlines()
    assert curve[0] == "step,erased_area,normal_score,dice" and len(curve) > 2
    out = tmp_path / "ev"
    rc = main(["evaluate", "--dataset", "phantom2d", "--method", "flip", "--model", str(run),
               "--limit", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 3
    # a box outside the image is a one-line error for a single segmentation
    capsys.readouterr()
    rc = main(["segment", "--model", str(run), "--image", str(img), "--box", "5000,5000,5010,5010",
               "--out", str(seg)])
    assert rc == 2
    assert "outside" in _one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["train", "lanet", "--dataset", "mnist"], "unknown dataset 'mnist' for lanet"),
    (["train", "cam-mt", "--engine", "sam"], "--engine sam needs --sam-checkpoint"),
])
def test_train_recipes_report_user_mistakes_in_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_parser_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, flipseg.cli; flipseg.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_segment_runs_a_whole_image_model_without_a_box(tmp_path, monkeypatch):
    from flipseg.methods import load_methods
    from flipseg.registry import METHODS, MethodSpec
    from flipseg.segmenters import Segmenter

    class Half(Segmenter):  # a stand-in whole-image model: the left half of any image
        name = "half-test"
        needs_box = False

        def segment(self, image, box, *, seed=0):
            assert box.x0 == 0 and box.y0 == 0 and (box.y1, box.x1) == image.shape[:2]
            m = np.zeros(image.shape[:2], bool)
            m[:, : image.shape[1] // 2] = True
            return m

    load_methods()
    monkeypatch.setitem(METHODS._items, "half-test", MethodSpec(
        name="half-test", kind="image", dims=(2,), help="left half", factory=lambda **_: Half()))
    img = np.full((20, 30), 90, np.uint8)
    write_png(tmp_path / "im.png", img)
    assert main(["segment", "--method", "half-test", "--image", str(tmp_path / "im.png"),
                 "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "im_mask.png").exists()
    assert main(["segment", "--method", "ellipse", "--image", str(tmp_path / "im.png"),
                 "--out", str(tmp_path / "o2")]) == 2  # a box method still needs --box


def test_segment_takes_the_method_from_the_model(tmp_path, capsys):
    """`segment --model RUN` without --method runs the model's own recipe (here a tiny
    cam-mt U-Net, a whole-image model, so no box is needed); non-segmenters and foreign
    files are one-line errors."""
    import torch

    from flipseg.bundles import save_bundle
    from flipseg.methods import method_of_model
    from flipseg.methods.cam_mt.config import MeanTeacherConfig
    from flipseg.methods.cam_mt.mean_teacher import CamMTModel

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    model = CamMTModel(MeanTeacherConfig(image_size=16, channels=(4, 8)))
    save_bundle(run / "cam_mt_model.safetensors", model.bundle())
    assert method_of_model(run) == "cam-mt" and method_of_model(run / "cam_mt_model.safetensors") == "cam-mt"
    write_png(tmp_path / "im.png", np.full((20, 30), 90, np.uint8))
    assert main(["segment", "--model", str(run), "--image", str(tmp_path / "im.png"),
                 "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "im_mask.png").exists()
    assert json.loads((tmp_path / "o" / "segment.json").read_text())[0]["method"] == "cam-mt"

    save_bundle(tmp_path / "lanet.safetensors", {"format": "flipseg-lanet-1"})
    (tmp_path / "junk.safetensors").write_text("not a model")
    for bad, words in ((tmp_path / "lanet.safetensors", "flipseg classify"),
                       (tmp_path / "junk.safetensors", "cannot read"),
                       (tmp_path / "missing", "not found"), (tmp_path / "o", "no trained model")):
        capsys.readouterr()
        assert main(["segment", "--model", str(bad), "--image", str(tmp_path / "im.png"),
                     "--out", str(tmp_path / "o3")]) == 2
        assert words in capsys.readouterr().err


def test_several_and_negative_boxes(tmp_path, capsys):
    """Several --box options segment each box (<image>-box<K>_*); a negative number in a
    box is read as a number (the box is clipped to the image); a box wholly outside is a
    one-line error."""
    img = np.full((40, 60), 90, np.uint8)
    write_png(tmp_path / "im.png", img)
    assert main(["segment", "--method", "box", "--image", str(tmp_path / "im.png"),
                 "--box", "1,1,10,10", "--box", "20,5,50,30", "--out", str(tmp_path / "o")]) == 0
    rows = json.loads((tmp_path / "o" / "segment.json").read_text())
    assert [r["case_id"] for r in rows] == ["im-box1", "im-box2"]
    from flipseg.data.io import read_image

    assert (read_image(tmp_path / "o" / "im-box2_mask.png") > 0).sum() == 30 * 25
    assert main(["segment", "--method", "box", "--image", str(tmp_path / "im.png"),
                 "--box", "-20,1,10,10", "--out", str(tmp_path / "o2")]) == 0
    assert (read_image(tmp_path / "o2" / "im_mask.png") > 0).sum() == 10 * 9
    capsys.readouterr()
    assert main(["segment", "--method", "box", "--image", str(tmp_path / "im.png"),
                 "--box", "-20,-9,-10,-1", "--out", str(tmp_path / "o3")]) == 2
    assert "-20" in _one_line_error(capsys)


def test_one_default_method_everywhere(capsys):
    import pytest as _pytest

    from flipseg.cli import build_parser
    from flipseg.methods import default_method

    assert (default_method(2), default_method(3)) == ("flip-vote", "flip")
    for cmd in ("demo", "segment", "evaluate"):
        with _pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "flip-vote" in capsys.readouterr().out
    args = build_parser().parse_args(["demo"])
    assert args.method is None  # resolved to default_method(2) when run
