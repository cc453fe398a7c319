"""``--workers N`` and ``--num-parts K --part-id I`` on ``segment --dataset``, ``evaluate`` and
``label``: the same masks as one process, errors per case still reported, and the parts of
a run together equal the whole run."""

import csv
from pathlib import Path

import numpy as np

from flipseg.cli import main
from flipseg.data.io import read_image


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob(pattern))}


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p) > 0 for p in sorted(folder.glob("*.png"))}


def _rows(path: Path) -> list[dict[str, str]]:
    """cases.csv without the timing columns (they differ from run to run)."""
    rows = list(csv.DictReader(open(path)))
    return sorted(({k: v for k, v in r.items() if k not in ("seconds", "batch_size")} for r in rows),
                  key=lambda r: (r["case_id"], r["repeat"]))


def test_label_two_workers_equal_one_and_report_errors(folder, tmp_path, capsys):
    data = ["--images", str(folder), "--method", "boxinst", "--format", "png,coco", "--no-progress"]
    assert main(["label", *data, "--out", str(tmp_path / "one")]) == 3  # "gone" fails to load
    assert main(["label", *data, "--out", str(tmp_path / "two"), "--workers", "2"]) == 3
    assert "2 worker processes" in capsys.readouterr().out
    one, two = tmp_path / "one", tmp_path / "two"
    assert _masks(one / "png") and _masks(one / "png").keys() == _masks(two / "png").keys()
    assert all(np.array_equal(a, _masks(two / "png")[k]) for k, a in _masks(one / "png").items())
    assert (one / "coco.json").read_bytes() == (two / "coco.json").read_bytes()
    assert (one / "errors.csv").read_text() == (two / "errors.csv").read_text()
    assert "gone" in (two / "errors.csv").read_text()


def test_segment_and_evaluate_two_workers_equal_one(folder, tmp_path):
    data = ["--dataset", "folder", "--data-root", str(folder), "--method", "boxinst"]
    for n in ("1", "2"):
        assert main(["segment", *data, "--out", str(tmp_path / f"seg{n}"), "--workers", n]) == 3
        assert main(["evaluate", *data, "--out", str(tmp_path / f"ev{n}"), "--workers", n,
                     "--no-progress"]) == 3
    m1, m2 = _masks(tmp_path / "seg1"), _masks(tmp_path / "seg2")
    assert len([k for k in m1 if k.endswith("_mask.png")]) == 8
    assert m1.keys() == m2.keys() and all(np.array_equal(m1[k], m2[k]) for k in m1)
    rows = [(tmp_path / f"seg{n}" / "segment.json").read_text() for n in ("1", "2")]
    assert rows[0] == rows[1]
    assert _rows(tmp_path / "ev1" / "cases.csv") == _rows(tmp_path / "ev2" / "cases.csv")


def test_parts_together_equal_the_whole_run(folder, tmp_path, capsys):
    """Segment, evaluate and label, in 3 parts: the parts' outputs make the whole run's."""
    data = ["--dataset", "folder", "--data-root", str(folder), "--method", "ellipse"]
    assert main(["segment", *data, "--out", str(tmp_path / "seg")]) == 3
    assert main(["evaluate", *data, "--out", str(tmp_path / "ev"), "--no-progress"]) == 3
    for i in range(3):
        part = ["--num-parts", "3", "--part-id", str(i)]
        main(["segment", *data, *part, "--out", str(tmp_path / "segp")])
        main(["evaluate", *data, *part, "--out", str(tmp_path / "evp"), "--no-progress"])
    assert _files(tmp_path / "segp", "*.png") == _files(tmp_path / "seg", "*.png")
    parts = sorted((tmp_path / "segp").glob("segment-part-*-of-3.json"))
    assert [p.name for p in parts] == [f"segment-part-{i}-of-3.json" for i in range(3)]
    whole = _rows(tmp_path / "ev" / "cases.csv")
    union = sorted((r for i in range(3) for r in _rows(tmp_path / "evp" / f"part-{i}-of-3" / "cases.csv")),
                   key=lambda r: (r["case_id"], r["repeat"]))
    assert union == whole and len(whole) == 8

    label = ["label", "--images", str(folder), "--method", "ellipse", "--format", "png,coco",
             "--no-progress"]
    assert main([*label, "--out", str(tmp_path / "lab")]) == 3
    codes = [main([*label, "--out", str(tmp_path / "labp"), "--num-parts", "3", "--part-id", str(i)])
             for i in range(3)]
    assert codes == [3, 0, 0]  # part 0 reports the case that failed to load
    assert not (tmp_path / "labp" / "coco.json").exists()  # the parts only segment
    capsys.readouterr()
    assert main([*label, "--out", str(tmp_path / "labp")]) == 3  # writes the formats
    assert "(8 done before)" in capsys.readouterr().out
    for name in ("coco.json", "qc.csv", "errors.csv"):
        assert (tmp_path / "labp" / name).read_bytes() == (tmp_path / "lab" / name).read_bytes()
    assert _files(tmp_path / "labp", "png/**/*.png") == _files(tmp_path / "lab", "png/**/*.png")


def test_engine_options_are_checked_before_any_work(folder, tmp_path, capsys):
    data = ["--dataset", "folder", "--data-root", str(folder), "--method", "ellipse"]
    for argv, message in [
        (["segment", *data, "--workers", "0"], "--workers must be >= 1"),
        (["label", *data, "--num-parts", "2"], "together"),
        (["evaluate", *data, "--num-parts", "2", "--part-id", "5"], "not in 0..1"),
        (["label", *data, "--address", "auto"], "--address is for --engine ray"),
        (["segment", "--image", str(folder / "images" / "p0.png"), "--box", "1,1,9,9",
          "--workers", "2"], "are for --dataset"),
    ]:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
