"""``evaluate_methods`` on large datasets: chunk by chunk, lazy samples read when their chunk
runs (a case that cannot be read is listed, the rest scored), and a stopped run resumed
from ``.progress.jsonl``."""

import csv
import json
import math

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data.sample import LazySample, make_sample
from flipseg.errors import FlipsegError, MaskShapeError
from flipseg.evaluation import evaluate_methods
from flipseg.io_utils import ProgressLog
from flipseg.segmenters import Segmenter

N = 10


def _case(k, shape=(32, 32)):
    """Image, mask and box of case ``k``: a square lesion that moves with ``k``."""
    rng = np.random.default_rng(k)
    image = rng.random(shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    y, x = 4 + k % 7, 5 + (k * 3) % 9
    mask[y : y + 8 + k % 4, x : x + 10] = True
    image[mask] += 0.5
    return image, mask, Box.from_mask(mask)


def _samples(n=N):
    out = []
    for k in range(n):
        image, mask, box = _case(k)
        out.append({"case_id": f"c{k:02d}", "image": image, "mask": mask, "box": box,
                    "spacing": (1.0, 1.0)})
    return out


class Threshold(Segmenter):
    """Batches: the bright pixels inside the box. Counts its calls and cases; raises
    KeyboardInterrupt on call ``stop_at`` (a run stopped half-way)."""

    name = "threshold"

    def __init__(self, stop_at=None):
        self.stop_at = stop_at
        self.calls = []  # number of cases of each call

    def segment(self, image, box, *, seed=0):
        out = np.zeros(image.shape, bool)
        out[box.slices()] = image[box.slices()] > 0.6
        return out

    def segment_many(self, images, boxes, *, seed=0):
        self.calls.append(len(images))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        return [self.segment(im, b, seed=seed) for im, b in zip(images, boxes)]


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "batch_size")}
                for r in csv.DictReader(f)]


def _run(samples, seg, out, **kw):
    kw.setdefault("batch_size", 3)
    kw.setdefault("worst", 0)
    return evaluate_methods(samples, {"threshold": seg}, dataset="tiny", out_dir=out,
                            progress=False, **kw)


@pytest.mark.parametrize("shift", [None, "0-10"])
def test_a_stopped_run_goes_on_where_it_stopped(tmp_path, shift):
    reps = 1 if shift is None else 2
    kw = {"box_shift": shift, "repeats": 2}
    ref = _run(_samples(), Threshold(), tmp_path / "ref", **kw)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(_samples(), Threshold(stop_at=2), out, **kw)
    lines = (out / ".progress.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["settings"]["method"] == "threshold" and header["settings"]["seed"] == 0
    assert len(lines) == 1 + 3  # the first chunk's rows
    assert not (out / "cases.csv").exists()

    seg = Threshold()
    res = _run(_samples(), seg, out, **kw)
    assert sum(seg.calls) == N * reps - 3  # only the jobs not done before
    assert _rows(out / "cases.csv") == _rows(tmp_path / "ref" / "cases.csv")
    assert not (out / ".progress.jsonl").exists()
    assert res["methods"]["threshold"]["n"] == ref["methods"]["threshold"]["n"] == N
    assert res["methods"]["threshold"]["metrics"] == ref["methods"]["threshold"]["metrics"]
    resumed = json.loads(lines[1])
    with open(out / "cases.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert first["seconds"] == str(resumed["seconds"])  # kept from the file


def test_changed_settings_start_afresh(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(_samples(), Threshold(stop_at=2), out, resume_key="opts a")
    seg = Threshold(stop_at=3)
    with pytest.raises(KeyboardInterrupt):  # another resume key: from the start
        _run(_samples(), seg, out, resume_key="opts b")
    assert seg.calls == [3, 3, 3]
    lines = (out / ".progress.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["settings"]["resume_key"] == "opts b"
    assert len(lines) == 1 + 6

    seg = Threshold()  # another seed: from the start
    _run(_samples(), seg, out, resume_key="opts b", seed=1)
    assert sum(seg.calls) == N
    assert not (out / ".progress.jsonl").exists()

    with pytest.raises(KeyboardInterrupt):
        _run(_samples(), Threshold(stop_at=2), out, resume_key="opts b")
    seg = Threshold()  # the same settings: goes on
    _run(_samples(), seg, out, resume_key="opts b")
    assert sum(seg.calls) == N - 3


def test_worst_png_of_resumed_cases_segments_them_again(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(_samples(), Threshold(stop_at=2), out, worst=N)
    seg = Threshold()
    _run(_samples(), seg, out, worst=N)
    assert sum(seg.calls) == N  # 7 left, then the 3 resumed ones again for worst.png
    assert seg.calls[-3:] == [1, 1, 1]
    assert (out / "worst.png").stat().st_size > 0


def test_progress_rows_keep_their_types(tmp_path):
    """The progress log evaluate (and segment --dataset) resume from: io_utils.ProgressLog."""
    path = tmp_path / ".progress.jsonl"
    settings = {"method": "m", "dataset": "d", "box_shift": "0-0", "repeats": 1, "seed": 0,
                "resume_key": None}
    assert ProgressLog(path, settings).rows == []
    row = {"case_id": "a", "repeat": 0, "box": "1,2,3,4", "dice": 1.0, "hd": float("nan"),
           "asd": float("inf"), "undefined": "hd", "seconds": 0.25, "batch_size": 3}
    ProgressLog(path, settings).append([row])
    with open(path, "a") as f:
        f.write('{"case_id": "a", "rep')  # a line cut short when the run stopped
    got = ProgressLog(path, settings).rows
    assert len(got) == 1 and list(got[0]) == list(row)
    assert type(got[0]["dice"]) is float and got[0]["dice"] == 1.0
    assert math.isnan(got[0]["hd"]) and got[0]["asd"] == math.inf
    assert type(got[0]["batch_size"]) is int
    log = ProgressLog(path, settings)  # rewritten whole: a row appended now stays readable
    log.append([{**row, "case_id": "b"}])
    assert [r["case_id"] for r in ProgressLog(path, settings).rows] == ["a", "b"]
    assert ProgressLog(path, {**settings, "seed": 1}).rows == []  # another run: afresh
    assert len(path.read_text().splitlines()) == 1


def _lazy(loads, bad=(), wrong_shape=(), box_known=True, empty=()):
    """LazySample entries of :func:`_case` that count their loads in ``loads``."""
    out = []
    for k in range(N):
        cid = f"c{k:02d}"

        def load(k=k, cid=cid):
            loads.append(cid)
            if cid in bad:
                raise FlipsegError(f"cannot read {cid}.png")
            if cid in wrong_shape:
                raise MaskShapeError(f"case {cid!r}: mask {cid}.png is 8x8 but its image is 32x32")
            image, mask, _ = _case(k)
            if cid in empty:
                mask[:] = False
            return make_sample(image, case_id=cid, mask=mask)

        known = {"box": _case(k)[2] if box_known else None, "spacing": (1.0, 1.0)}
        out.append(LazySample(cid, load, known=known, keys=["image", "mask"], ndim=2))
    return out


class Recorder(Threshold):
    """Notes how many samples were read when it was first called."""

    def __init__(self, loads):
        super().__init__()
        self.loads = loads
        self.loads_at_first_call = None

    def segment_many(self, images, boxes, *, seed=0):
        if self.loads_at_first_call is None:
            self.loads_at_first_call = len(self.loads)
        return super().segment_many(images, boxes, seed=seed)


def test_lazy_cases_are_read_chunk_by_chunk_and_a_bad_one_is_listed(tmp_path):
    loads = []
    seg = Recorder(loads)
    res = _run(_lazy(loads, bad={"c01"}), seg, tmp_path, batch_size=3, worst=0)
    assert seg.loads_at_first_call == 3  # the first chunk's cases, nothing up front
    assert seg.calls == [2, 3, 3, 1]  # c01 left out of the first chunk
    assert res["methods"]["threshold"]["n"] == N - 1
    assert res["methods"]["threshold"]["failed"] == 1
    with open(tmp_path / "errors.csv", newline="") as f:
        errs = list(csv.reader(f))
    assert errs[0] == ["case_id", "error"] and len(errs) == 2
    assert errs[1][0] == "c01" and "cannot read c01.png" in errs[1][1]
    assert "c01" not in {r["case_id"] for r in _rows(tmp_path / "cases.csv")}
    assert not (tmp_path / ".progress.jsonl").exists()

    # the same numbers as the loaded samples give
    ref = _run([s for s in _samples() if s["case_id"] != "c01"], Threshold(), tmp_path / "ref")
    assert res["methods"]["threshold"]["metrics"] == ref["methods"]["threshold"]["metrics"]


def test_lazy_cases_whose_box_comes_from_the_mask(tmp_path):
    loads = []
    seg = Recorder(loads)
    res = _run(_lazy(loads, box_known=False, empty={"c04"}), seg, tmp_path, worst=4)
    assert seg.loads_at_first_call == 3
    assert res["not_scored"]["without_box"] == ["c04"]
    assert res["methods"]["threshold"]["n"] == N - 1
    assert res["methods"]["threshold"]["not_scored"]["without_box"] == ["c04"]
    assert (tmp_path / "worst.png").exists()


def test_a_mask_of_another_size_stops_the_run(tmp_path):
    loads = []
    with pytest.raises(MaskShapeError, match="c05"):
        _run(_lazy(loads, wrong_shape={"c05"}), Threshold(), tmp_path)
