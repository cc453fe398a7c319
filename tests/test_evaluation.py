"""flipseg.evaluation and ``flipseg evaluate``'s reports: hand-checked summaries of tiny
cases (undefined metrics, CON clipped), cases not scored, per-case seconds, worst.png,
mask sizes."""

import csv
import json
import math
import time

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from flipseg.boxes import Box
from flipseg.cli import main
from flipseg.data.folder import load_folder
from flipseg.errors import FlipsegError, MaskShapeError
from flipseg.evaluation import evaluate_methods
from flipseg.segmenters import Segmenter


def _square(y0, y1, x0, x1, shape=(10, 10)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


#: case id -> (truth, prediction); box (0, 0, 10, 10) for all.
#: a: perfect. b: 2x2 squares far apart (Dice 0, raw CON = 1 - 8 = -7).
#: c: the left half of a 2x4 truth (TP 4, FN 4: Dice 2/3, CON 0, HD 2).
#: d: empty prediction (Dice 0, raw CON -7, HD = HD95 = ASD = the diagonal sqrt(200)).
CASES = {
    "a": (_square(1, 3, 1, 3), _square(1, 3, 1, 3)),
    "b": (_square(1, 3, 1, 3), _square(6, 8, 6, 8)),
    "c": (_square(1, 3, 1, 5), _square(1, 3, 1, 3)),
    "d": (_square(1, 3, 1, 5), np.zeros((10, 10), bool)),
}


class Lookup(Segmenter):
    """Returns each case's prepared prediction (the image's value names the case)."""

    name = "lookup"

    def __init__(self, delays=None):
        self.delays = delays or {}

    def segment(self, image, box, *, seed=0):
        cid = "abcd"[int(image[0, 0])]
        time.sleep(self.delays.get(cid, 0.0))
        return CASES[cid][1]


class BatchLookup(Lookup):
    """The same, but segmenting a whole batch at once."""

    def segment_many(self, images, boxes, *, seed=0):
        time.sleep(0.02)
        return [Lookup.segment(self, im, b) for im, b in zip(images, boxes)]


def _samples(with_unscored=False):
    out = []
    for k, (cid, (gt, _)) in enumerate(CASES.items()):
        out.append({"case_id": cid, "image": np.full((10, 10), float(k), np.float32), "mask": gt,
                    "box": Box(0, 0, 10, 10), "spacing": (1.0, 1.0)})
    if with_unscored:
        out.append({"case_id": "n1", "image": np.zeros((10, 10), np.float32), "box": Box(0, 0, 5, 5)})
        out.append({"case_id": "e1", "image": np.zeros((10, 10), np.float32),
                    "mask": np.zeros((10, 10), bool), "box": None})
    return out


def test_summary_is_hand_checked_and_cannot_explode(tmp_path):
    res = evaluate_methods(_samples(with_unscored=True), {"lookup": Lookup()}, dataset="tiny",
                           out_dir=tmp_path, progress=False)
    s = res["methods"]["lookup"]
    assert s["n"] == 4
    assert s["metrics"]["dice"]["mean"] == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)
    # CON per case 1, -7 -> -1, 0, -7 -> -1: mean -1/4 (unclipped it would be -13/4)
    assert s["metrics"]["con"]["mean"] == pytest.approx(-0.25)
    assert s["metrics"]["hd"]["mean"] == pytest.approx((0 + math.sqrt(50) + 2 + math.sqrt(200)) / 4)
    assert s["undefined"]["con"] == 2 and s["clipped"]["con"] == 2
    assert s["undefined"]["hd"] == s["undefined"]["asd"] == 1 and s["undefined"]["dice"] == 0
    assert s["left_out"] == {} and s["distance_unit"] == "px"
    assert s["not_scored"] == {"without_mask": ["n1"], "without_box": ["e1"]}
    assert res["not_scored"] == s["not_scored"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["undefined"] == s["undefined"] and saved["not_scored"] == s["not_scored"]
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "cases.csv"))}
    assert float(rows["b"]["con"]) == -7.0  # cases.csv keeps the raw value
    assert rows["d"]["undefined"] == "con hd hd95 asd" and rows["a"]["undefined"] == ""
    md = (tmp_path / "summary.md").read_text()
    for text in ("| dice | Dice similarity coefficient", "| hd | Hausdorff distance", "| px |",
                 "| s/case | seconds per case", "| con | 2 of 4 | no overlap",
                 "| hd | 1 of 4 | a mask is empty", "clipped to [-100 %, 100 %] for 2 of 4 cases",
                 "1 image(s) without a mask: n1", "1 case(s) with a mask but no box", "`seconds`",
                 "`batch_size`"):
        assert text in md, text


def test_distances_in_mm_when_the_cases_have_a_spacing(tmp_path):
    samples = _samples()
    for s in samples:
        s["spacing"] = (0.5, 0.5)
    s = evaluate_methods(samples, {"lookup": Lookup()}, dataset="tiny", out_dir=tmp_path,
                         progress=False)["methods"]["lookup"]
    assert s["distance_unit"] == "mm"
    assert s["metrics"]["hd"]["mean"] == pytest.approx((0 + math.sqrt(50) + 2 + math.sqrt(200)) / 8)
    assert "| hd | Hausdorff distance: the largest distance between the two mask outlines | mm |" \
        in (tmp_path / "summary.md").read_text()


def test_seconds_are_measured_per_case_or_split_evenly_over_a_batch(tmp_path):
    evaluate_methods(_samples(), {"lookup": Lookup(delays={"c": 0.05})}, dataset="tiny",
                     out_dir=tmp_path / "alone", progress=False, worst=0)
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "alone" / "cases.csv"))}
    assert {r["batch_size"] for r in rows.values()} == {"1"}
    assert float(rows["c"]["seconds"]) >= 0.05 > float(rows["a"]["seconds"])
    assert json.loads((tmp_path / "alone" / "summary.json").read_text())["timing"] == "alone"
    assert not (tmp_path / "alone" / "worst.png").exists()  # worst=0
    evaluate_methods(_samples(), {"lookup": BatchLookup()}, dataset="tiny",
                     out_dir=tmp_path / "batch", progress=False, batch_size=3)
    rows = list(csv.DictReader(open(tmp_path / "batch" / "cases.csv")))
    assert [r["batch_size"] for r in rows] == ["3", "3", "3", "1"]
    assert rows[0]["seconds"] == rows[1]["seconds"] == rows[2]["seconds"]
    assert float(rows[0]["seconds"]) >= 0.02 / 3
    md = (tmp_path / "batch" / "summary.md").read_text()
    assert "segmented in batches (seconds = batch time / batch size)" in md


def test_a_failed_batch_is_re_run_and_timed_case_by_case(tmp_path):
    class Flaky(BatchLookup):
        def segment_many(self, images, boxes, *, seed=0):
            raise RuntimeError("out of memory")

        def segment(self, image, box, *, seed=0):
            if int(image[0, 0]) == 1:
                raise RuntimeError("case b is broken")
            return Lookup.segment(self, image, box)

    res = evaluate_methods(_samples(), {"flaky": Flaky()}, dataset="tiny", out_dir=tmp_path,
                           progress=False)
    assert res["errors"] == [["b", "flaky: RuntimeError: case b is broken"]]
    s = res["methods"]["flaky"]
    assert s["n"] == 3 and s["timing"] == "batch, some alone" and s["failed"] == 1
    rows = list(csv.DictReader(open(tmp_path / "cases.csv")))
    assert [r["case_id"] for r in rows] == ["a", "c", "d"] and {r["batch_size"] for r in rows} == {"1"}
    assert "could not be read or segmented: see errors.csv" in (tmp_path / "summary.md").read_text()


def test_worst_png_shows_the_lowest_dice_cases(tmp_path):
    evaluate_methods(_samples(), {"lookup": Lookup()}, dataset="tiny", out_dir=tmp_path,
                     progress=False, worst=2)
    pic = np.asarray(Image.open(tmp_path / "worst.png"))
    assert pic.shape[1] == 2 * 256 + 4  # two tiles in one row
    evaluate_methods(_samples(), {"lookup": Lookup()}, dataset="tiny", out_dir=tmp_path / "all",
                     progress=False)
    assert np.asarray(Image.open(tmp_path / "all" / "worst.png")).shape[1] == 4 * 256 + 3 * 4


def test_no_scorable_case_is_one_line(tmp_path):
    samples = [s for s in _samples(with_unscored=True) if s["case_id"] in ("n1", "e1")]
    with pytest.raises(FlipsegError, match=r"\(1 without a mask, 1 without a box\)"):
        evaluate_methods(samples, {"lookup": Lookup()}, dataset="tiny", out_dir=tmp_path,
                         progress=False)


# ----------------------------------------------------------------------------- the command


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _folder(root, mask_size=(40, 48)):
    img = np.full((40, 48), 90, np.uint8)
    img[10:25, 12:30] = 20
    _png(root / "images" / "a.png", img)
    _png(root / "images" / "b.png", img)
    _png(root / "images" / "nomask.png", img)
    m = np.zeros(mask_size, np.uint8)
    h, w = mask_size
    m[h * 10 // 40 : h * 25 // 40, w * 12 // 48 : w * 30 // 48] = 255
    _png(root / "masks" / "a.png", m)
    _png(root / "masks" / "b.png", np.where(np.arange(48)[None, :] < 30, m[:, :48], 0)
         if mask_size == (40, 48) else m)
    return root


def test_evaluate_lists_images_without_a_mask(tmp_path, capsys):
    root = _folder(tmp_path / "ds")
    assert main(["evaluate", "--dataset", "folder", "--data-root", str(root), "--method", "box",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) without a mask not scored (listed in summary.md): nomask" in out
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["n"] == 2 and s["not_scored"]["without_mask"] == ["nomask"]
    assert (tmp_path / "o" / "worst.png").exists()


def test_a_mask_of_another_size_is_one_line_unless_resized(tmp_path, capsys):
    root = _folder(tmp_path / "ds", mask_size=(80, 96))
    argv = ["evaluate", "--dataset", "folder", "--data-root", str(root), "--method", "box",
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flipseg: error: case 'a': mask a.png is 80x96 "
                                               "but its image is 40x48"), err
    assert "--resize-masks" in err[0]
    assert main([*argv, "--resize-masks"]) == 0
    err = capsys.readouterr().err
    assert "flipseg: warning: 2 mask(s) of another size than their image were resized" in err
    assert "a (a.png 80x96 -> 40x48)" in err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["n"] == 2 and s["masks_resized"]["a"] == ["a.png 80x96 -> 40x48"]
    assert s["metrics"]["dice"]["mean"] == pytest.approx(1.0)  # the box method on a box mask
    # the resize is nearest neighbour: a 2x mask comes back exactly
    (a,) = [c for c in load_folder(root, resize_masks=True) if c["case_id"] == "a"]
    assert a["mask"].sum() == 15 * 18 and a["mask"][10:25, 12:30].all()
    # datasets that read their masks themselves refuse the flag in one line
    assert main(["evaluate", "--dataset", "phantom2d", "--method", "box", "--resize-masks",
                 "--out", str(tmp_path / "p")]) == 2
    assert "--resize-masks: dataset 'phantom2d'" in capsys.readouterr().err


def test_segment_mask_of_another_size(tmp_path, capsys):
    root = _folder(tmp_path / "ds", mask_size=(20, 24))
    argv = ["segment", "--image", str(root / "images" / "a.png"), "--mask",
            str(root / "masks" / "a.png"), "--box", "12,10,30,25", "--method", "box",
            "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "mask a.png is 20x24 but its image is 40x48" in capsys.readouterr().err
    assert main([*argv, "--resize-masks"]) == 0
    assert "a (a.png 20x24 -> 40x48)" in capsys.readouterr().err


def test_volume_masks_must_match_unless_resized(tmp_path):
    vol = np.zeros((12, 10, 6), np.float32)  # stored (x, y, z)
    vol[2:6, 4:8, 2:4] = 100.0
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "images" / "v.nii.gz")
    big = np.repeat(np.repeat(np.repeat(vol > 0, 2, 0), 2, 1), 2, 2).astype(np.uint8)
    nib.save(nib.Nifti1Image(big, np.eye(4)), tmp_path / "masks" / "v.nii.gz")
    with pytest.raises(MaskShapeError, match=r"case 'v': mask v.nii.gz is 12x20x24 but its image "
                                             r"is 6x10x12"):
        load_folder(tmp_path, errors=[])  # not skipped as one bad case: it stops the reading
    (s,) = load_folder(tmp_path, resize_masks=True)
    np.testing.assert_array_equal(s["mask"], np.transpose(vol > 0, (2, 1, 0)))
    assert s["mask_resized"] == ["v.nii.gz 12x20x24 -> 6x10x12"]
