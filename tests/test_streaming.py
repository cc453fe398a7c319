"""Datasets as an index: images are read when a case runs, a bounded cache holds the recent
ones, and ``segment --dataset`` goes on where a stopped run left off."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from flipseg.cli import main
from flipseg.data import load_dataset, make_phantom_2d, write_png
from flipseg.data.folder import load_folder
from flipseg.data.sample import CACHE, LazySample
from flipseg.errors import FlipsegError

BUSBRA = Path(__file__).parents[1].parent / "shared" / "data" / "BUS-BRA"


def _folder(root: Path, n: int = 8, side: int = 96) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = ["case_id,x0,y0,x1,y1,label"]
    for i in range(n):
        s = make_phantom_2d(i, shape=(side, side))
        write_png(root / "images" / f"c{i}.png", np.clip(s["image"], 0, 255).astype(np.uint8))
        write_png(root / "masks" / f"c{i}.png", s["mask"])
        b = s["box"]
        lines.append(f"c{i},{b.x0},{b.y0},{b.x1},{b.y1},{'benign' if i % 2 else 'malignant'}")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def small_cache(monkeypatch):
    monkeypatch.setattr(CACHE, "items", 3)
    CACHE.clear()
    yield CACHE
    CACHE.clear()


def test_a_lazy_index_reads_nothing_up_front_and_equals_the_eager_read(tmp_path, small_cache):
    root = _folder(tmp_path / "d")
    eager = load_folder(root)
    loads = small_cache.loads
    lazy = load_folder(root, lazy=True)
    assert all(isinstance(c, LazySample) for c in lazy)
    # ids, boxes, labels, presence of a mask: all known without reading an image
    assert [c["case_id"] for c in lazy] == [c["case_id"] for c in eager]
    assert [c["box"] for c in lazy] == [c["box"] for c in eager]
    assert [c["label"] for c in lazy] == [c["label"] for c in eager]
    assert all("mask" in c and c.get("volume_meta") is None for c in lazy)
    assert small_cache.loads == loads
    for a, b in zip(lazy, eager):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        assert a["spacing"] == b["spacing"] and a["file"] == b["file"]
    assert len(small_cache._data) <= 3  # the cache keeps the last three only
    assert np.array_equal(lazy[0]["image"], eager[0]["image"])  # read again when needed


def test_unreadable_and_missing_files(tmp_path, small_cache):
    root = _folder(tmp_path / "d", n=3)
    (root / "images" / "c1.png").write_bytes(b"not a png")
    (root / "masks" / "c2.png").unlink()
    errors: list = []
    lazy = load_folder(root, lazy=True, errors=errors)
    assert [c["case_id"] for c in lazy] == ["c0", "c1", "c2"]  # c2 without a mask now
    with pytest.raises(FlipsegError):
        lazy[1]["image"]
    # a lazy case travels to another process as its data, or as its error
    assert np.array_equal(pickle.loads(pickle.dumps(lazy[0]))["image"], lazy[0]["image"])
    with pytest.raises(FlipsegError):
        pickle.loads(pickle.dumps(lazy[1]))["image"]


@pytest.mark.skipif(not BUSBRA.is_dir(), reason="real BUS-BRA not found")
def test_busbra_lazy_equals_eager():
    eager = load_dataset("bus-bra", str(BUSBRA), part="test", fold=5)[:5]
    lazy = load_dataset("bus-bra", str(BUSBRA), part="test", fold=5, lazy=True)[:5]
    for a, b in zip(lazy, eager):
        assert a["case_id"] == b["case_id"] and a["box"] == b["box"]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        assert {k: a[k] for k in b if k not in ("image", "mask")} == \
            {k: v for k, v in b.items() if k not in ("image", "mask")}


def test_label_reads_an_image_only_when_its_chunk_runs(tmp_path, small_cache, monkeypatch):
    root = _folder(tmp_path / "d", n=10)
    from flipseg import label as label_module

    monkeypatch.setattr(label_module, "CHUNK", 2)
    seen = []
    real = label_module._segment_chunk

    def spy(seg, method, chunk, seed, parts):
        seen.append(small_cache.loads)
        return real(seg, method, chunk, seed, parts)

    monkeypatch.setattr(label_module, "_segment_chunk", spy)
    before = small_cache.loads
    rc = main(["label", "--images", str(root / "images"), "--boxes", str(root / "boxes.csv"),
               "--method", "ellipse", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    assert seen[0] - before == 0  # nothing read before the first chunk ran
    assert len(list((tmp_path / "o" / "png").glob("c*.png"))) == 10


def test_segment_dataset_goes_on_where_a_stopped_run_left_off(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", n=10)
    from flipseg import commands

    monkeypatch.setattr(commands, "SEGMENT_CHUNK", 3)
    real = commands._segment_and_write
    calls: list[list[str]] = []

    def stop_after_two(seg, method, cases, seed, out):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append([c["case_id"] for c in cases])
        return real(seg, method, cases, seed, out)

    argv = ["segment", "--dataset", "folder", "--data-root", str(root), "--method", "ellipse",
            "--out", str(tmp_path / "o")]
    monkeypatch.setattr(commands, "_segment_and_write", stop_after_two)
    assert main(argv) == 130  # the CLI's answer to Ctrl-C
    progress = tmp_path / "o" / ".segment-progress.jsonl"
    assert progress.is_file() and len(progress.read_text().splitlines()) == 1 + 6
    assert not (tmp_path / "o" / "segment.json").exists()

    def count(seg, method, cases, seed, out):
        calls.append([c["case_id"] for c in cases])
        return real(seg, method, cases, seed, out)

    calls.clear()
    monkeypatch.setattr(commands, "_segment_and_write", count)
    assert main(argv) == 0
    assert sorted(cid for ch in calls for cid in ch) == ["c6", "c7", "c8", "c9"]
    rows = json.loads((tmp_path / "o" / "segment.json").read_text())
    assert [r["case_id"] for r in rows] == [f"c{i}" for i in range(10)]
    assert not progress.exists()
    # a run with other settings starts afresh
    calls.clear()
    assert main([*argv, "--seed", "3"]) == 0
    assert len([c for ch in calls for c in ch]) == 10


def test_a_box_outside_its_image_fails_alone_when_its_case_is_read(tmp_path):
    root = _folder(tmp_path / "d", n=4)
    lines = (root / "boxes.csv").read_text().splitlines()
    lines[2] = "c1,500,500,600,600,benign"
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    rc = main(["segment", "--dataset", "folder", "--data-root", str(root), "--method",
               "ellipse", "--out", str(tmp_path / "o")])
    assert rc == 3
    errors = (tmp_path / "o" / "errors.csv").read_text()
    assert "c1" in errors and "outside the image" in errors
    assert len(json.loads((tmp_path / "o" / "segment.json").read_text())) == 3


def test_evaluate_from_the_cli_goes_on_where_it_stopped(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", n=6)
    from flipseg import evaluation

    real_eval, real_chunk = evaluation.evaluate_methods, evaluation._segment_chunk
    monkeypatch.setattr(evaluation, "evaluate_methods",
                        lambda *a, **k: real_eval(*a, **{**k, "batch_size": 2}))
    calls: list[int] = []
    stop = [True]

    def count(seg, name, images, *a, **k):
        calls.append(len(images))
        if len(calls) == 2 and stop[0]:
            raise KeyboardInterrupt
        return real_chunk(seg, name, images, *a, **k)

    monkeypatch.setattr(evaluation, "_segment_chunk", count)
    argv = ["evaluate", "--dataset", "folder", "--data-root", str(root), "--method", "ellipse",
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 130
    header = json.loads((tmp_path / "o" / ".progress.jsonl").read_text().splitlines()[0])
    assert "recipes" in header["settings"]["resume_key"]  # the methods' options count too
    stop[0] = False
    calls.clear()
    assert main(argv) == 0
    assert sum(calls) == 4  # the first chunk of 2 was kept
    assert not (tmp_path / "o" / ".progress.jsonl").exists()
    assert len((tmp_path / "o" / "cases.csv").read_text().splitlines()) == 1 + 6
