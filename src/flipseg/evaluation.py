"""Evaluate box -> mask methods on a dataset the way the papers do.

:func:`evaluate_methods` runs one or more registered segmenters on the same
cases and the same (tight or shifted) boxes, scores every prediction with
:func:`flipseg.metrics.segmentation_metrics`, and writes per method

- ``cases.csv``: one row per case and box repeat (its columns are explained in
  ``summary.md``: metrics as fractions and distances, ``undefined``, ``seconds``,
  ``batch_size``);
- ``summary.json`` and ``summary.md``: the dataset means, what each metric means and its
  unit, for how many cases each metric was undefined, and the cases that were not scored;
- ``worst.png``: a contact sheet of the lowest-Dice cases (up to ``worst``).

With two methods it adds paired t-tests (``compare.md``, ``compare.json``).
Metrics of shifted-box repeats are averaged per case before the dataset summary;
CON is clipped per case to [-1, 1] first (:func:`flipseg.metrics.clip_for_summary`).
Cases that fail are reported, listed in ``errors.csv`` and skipped; the run finishes.

Cases are read and segmented chunk by chunk (lazy samples, :class:`LazySample`, are read
when their chunk runs, never all at once). After each chunk its rows are appended to
``.progress.jsonl`` in the method's folder; a run stopped half-way and started again with
the same settings (method, dataset, box shift, repeats, seed, ``resume_key``) goes on from
there. The file is deleted once the method's reports are written.

Timing: a method that segments one case at a time (it keeps
:meth:`Segmenter.segment_many`'s loop) is timed case by case (``batch_size`` 1); a
method that batches is given up to ``batch_size`` cases at once and each case gets the
batch's seconds divided by its size (``batch_size`` N).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from flipseg.boxes import Box, parse_shift_level, shifted_boxes
from flipseg.data.sample import LazySample, case_ndim
from flipseg.errors import FlipsegError, MaskShapeError
from flipseg.io_utils import ProgressLog, atomic_write_text
from flipseg.metrics import (
    SUMMARY_BOUNDS,
    clip_for_summary,
    paired_ttest,
    segmentation_metrics,
    summarize,
    undefined_metrics,
)
from flipseg.segmenters import Segmenter

__all__ = ["case_boxes", "evaluate_methods", "REPORTED_METRICS", "format_table",
           "METRIC_HELP", "distance_unit"]

#: Metrics written to summaries, in table order.
REPORTED_METRICS = ("dice", "jaccard", "con", "hd", "hd95", "asd", "iou_bg", "miou")
#: Metrics where larger is better (for reporting the direction of a comparison).
HIGHER_IS_BETTER = {"dice", "jaccard", "con", "iou", "iou_bg", "miou", "s_measure"}
#: Distances: written in pixels (voxels), or in mm when the cases have a pixel spacing.
DISTANCES = ("hd", "hd95", "asd")
#: Metrics written in % in the tables (the others are distances).
PERCENT = HIGHER_IS_BETTER

#: column -> (what it measures, when it is undefined, the value a case then gets).
#: TP, FP, FN: pixels (voxels) in both masks, only in the prediction, only in the truth.
METRIC_HELP: dict[str, tuple[str, str, str]] = {
    "dice": ("Dice similarity coefficient, 2 TP / (2 TP + FP + FN)",
             "both masks empty", "100 %"),
    "jaccard": ("Jaccard index (lesion IoU), TP / (TP + FP + FN)", "both masks empty", "100 %"),
    "iou": ("lesion IoU (the same number as jaccard)", "both masks empty", "100 %"),
    "con": ("conformity (Chang et al. 2009), 1 - (FP + FN) / TP = (3 Dice - 2) / Dice: 0 at "
            "Dice 66.7 %, -100 % at Dice 50 %; clipped per case to [-100 %, 100 %] before "
            "averaging", "no overlap (TP = 0)", "-100 % (100 % when both masks are empty)"),
    "hd": ("Hausdorff distance: the largest distance between the two mask outlines",
           "a mask is empty", "the image diagonal (0 when both are empty)"),
    "hd95": ("95th-percentile Hausdorff distance", "a mask is empty",
             "the image diagonal (0 when both are empty)"),
    "asd": ("average symmetric surface distance between the outlines", "a mask is empty",
            "the image diagonal (0 when both are empty)"),
    "iou_bg": ("IoU of the backgrounds (everything outside the masks)",
               "both masks cover the whole image", "100 %"),
    "miou": ("mean of lesion IoU and background IoU", "a part is undefined",
             "the mean of the parts' values"),
    "s_measure": ("structure measure (Fan et al. 2017)", "never", ""),
}

_NOT_METRICS = ("case_id", "repeat", "box", "undefined", "seconds", "batch_size")


def _stable_seed(text: str) -> int:
    """A seed from a string that does not depend on Python's hash randomisation."""
    h = 0
    for ch in text.encode("utf-8"):
        h = (h * 131 + ch) % (2**31 - 1)
    return h


def case_boxes(sample: dict[str, Any], box_shift: str | tuple[int, int] | None, *,
               repeats: int = 3, seed: int = 0) -> list[Box]:
    """The boxes :func:`evaluate_methods` gives a method for one case: its box when
    ``box_shift`` is None or ``"0"``, else ``repeats`` shifted copies, seeded by ``seed``
    and the case id (the same copies for every method and run)."""
    shift = parse_shift_level(box_shift)
    if shift == (0, 0):
        return [sample["box"]]
    return shifted_boxes(sample["box"], sample["image"].shape, shift, repeats=repeats,
                         seed=_stable_seed(f"{seed}:{sample['case_id']}"))


def distance_unit(samples: Sequence[dict[str, Any]]) -> str:
    """The unit of HD, HD95 and ASD over ``samples``: ``"mm"`` when a case has a pixel
    spacing other than 1 (readers give DICOM, NIfTI and NRRD spacings in mm), else
    ``"px"`` (2D) or ``"voxels"`` (3D): no spacing known, distances count pixels."""
    for s in samples:
        sp = s.get("spacing")
        if sp is not None and any(float(v) != 1.0 for v in sp):
            return "mm"
    return "voxels" if samples and case_ndim(samples[0]) == 3 else "px"


def _has(sample: Any, key: str) -> bool:
    """Whether ``sample`` has ``key`` with a value other than None, without reading a
    :class:`LazySample`'s files when its reader declared its keys."""
    if isinstance(sample, LazySample):
        if key in sample.known:
            return sample.known[key] is not None
        return key in sample
    return sample.get(key) is not None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _batches(seg: Any) -> bool:
    """Whether ``seg`` segments several cases at once (overrides ``segment_many``)."""
    own = getattr(type(seg), "segment_many", None)
    return own is not None and own is not Segmenter.segment_many


def _segment_chunk(seg: Any, name: str, images: list[np.ndarray], boxes: list[Box],
                   case_ids: list[str], seed: int, failed: list[list[str]]
                   ) -> tuple[list[np.ndarray | None], list[float], list[int], bool]:
    """Masks of one chunk, with each case's seconds, the size of the batch it ran in, and
    whether a failed batch was re-run one by one.

    A batching method gets the whole chunk at once (each case: the batch's seconds / its
    size); if that raises anything but a FlipsegError, or the method does not batch, the
    cases are segmented and timed one by one. A case that raises is appended to
    ``failed`` as ``[case_id, message]`` and gets None (a FlipsegError of a method that
    segments one case at a time stops the run, as a batch's does).
    """
    n = len(images)
    batch_failed = False
    if _batches(seg):
        t0 = time.perf_counter()
        try:
            preds = list(seg.segment_many(images, boxes, seed=seed))
        except FlipsegError:
            raise
        except Exception:  # retry one by one so a single bad case cannot sink the batch
            batch_failed = True
        else:
            dt = (time.perf_counter() - t0) / max(1, n)
            return preds, [dt] * n, [n] * n, False
    out: list[np.ndarray | None] = []
    seconds: list[float] = []
    for im, b, cid in zip(images, boxes, case_ids):
        t0 = time.perf_counter()
        try:
            out.append(seg.segment(im, b, seed=seed))
        except Exception as exc:  # noqa: BLE001 - reported per case, run goes on
            if isinstance(exc, FlipsegError) and not batch_failed:
                raise
            out.append(None)
            failed.append([cid, f"{name}: {type(exc).__name__}: {exc}".splitlines()[0]])
        seconds.append(time.perf_counter() - t0)
    return out, seconds, [1] * n, batch_failed


class _Worst:
    """The ``limit`` cases of lowest Dice seen so far, each with its lowest-Dice repeat.

    The mask is None for rows resumed from ``.progress.jsonl`` (:func:`_write_worst`
    segments those cases again)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.kept: dict[int, tuple[float, int, Box, np.ndarray | None]] = {}

    def add(self, case: int, repeat: int, box: Box, pred: np.ndarray | None,
            dice: float) -> None:
        if self.limit == 0:
            return
        old = self.kept.get(case)
        if old is None or dice < old[0]:
            self.kept[case] = (float(dice), repeat, box,
                               None if pred is None else np.asarray(pred, bool))
        if len(self.kept) > 2 * self.limit:
            self.kept = dict(self.ranked())

    def ranked(self) -> list[tuple[int, tuple[float, int, Box, np.ndarray | None]]]:
        """(case index, (dice, repeat, box, mask)), lowest Dice first, at most ``limit``."""
        order = sorted(self.kept.items(), key=lambda kv: (kv[1][0], kv[0]))
        return order[: self.limit]


def evaluate_methods(
    samples: Sequence[dict],
    segmenters: dict[str, Segmenter],
    *,
    dataset: str,
    out_dir: str | Path,
    box_shift: str | None = None,
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    errors: Sequence[tuple[str, str]] = (),
    worst: int = 16,
    resume_key: str | None = None,
) -> dict[str, Any]:
    """Run and score every method on every case with a mask and a box.

    Parameters
    ----------
    samples : sample dicts (cases without mask or box are skipped, counted and listed)
    segmenters : method name -> segmenter
    box_shift : None/"0" for tight boxes, or a level like ``"0-10"``
    repeats : shifted copies per box (the papers use 3)
    batch_size : cases given at once to a method that batches
    errors : (case_id, message) pairs of cases that already failed to load
    worst : tiles of ``worst.png`` (the lowest-Dice cases); 0 writes none
    resume_key : anything else the results depend on (e.g. the methods' options), as a
        string: a ``.progress.jsonl`` left by a stopped run is resumed only when it was
        written with the same method, dataset, box shift, repeats, seed and ``resume_key``

    Returns
    -------
    dict with per-method summaries (``methods``), the comparison (``compare``, with two
    methods), the errors and ``not_scored`` (``without_mask``, ``without_box``: case ids).

    Raises
    ------
    FlipsegError
        No case has both a mask and a box.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shift = parse_shift_level(box_shift)
    reps = repeats if shift != (0, 0) else 1
    # presence only: a lazy sample whose reader declared its keys is not read here; one
    # whose index has no box (its box comes from its mask) is checked when read
    cases: list[Any] = []
    place: list[int] = []  # each case's place in samples
    not_scored: dict[str, list[str]] = {"without_mask": [], "without_box": []}
    boxless: dict[int, str] = {}  # place in samples -> case id, of cases with no box
    unread: list[list[str]] = []
    for k, s in enumerate(samples):
        try:
            has_mask = _has(s, "mask")
            has_box = has_mask and (_box_when_read(s) or _has(s, "box"))
        except MaskShapeError:
            raise
        except FlipsegError as exc:  # a lazy sample that had to be read to tell
            unread.append([str(s["case_id"]), _one_line(exc)])
            continue
        if not has_mask:
            not_scored["without_mask"].append(str(s["case_id"]))
        elif not has_box:
            boxless[k] = str(s["case_id"])
        else:
            cases.append(s)
            place.append(k)
    not_scored["without_box"][:] = boxless.values()
    if not cases:
        _no_cases(dataset, not_scored)
    context = {
        "box_shift": box_shift or "0", "repeats": reps, "unit": distance_unit(cases),
        "not_scored": not_scored, "load_errors": len(errors) + len(unread),
        "masks_resized": {str(s["case_id"]): list(s["mask_resized"]) for s in cases
                          if _has(s, "mask_resized") and s.get("mask_resized")},
    }
    jobs = [(i, r) for i in range(len(cases)) for r in range(reps)]  # (case index, repeat)
    index: dict[str, int] = {}
    for i, s in enumerate(cases):
        index.setdefault(str(s["case_id"]), i)
    err_rows = [list(e) for e in errors] + unread
    results: dict[str, Any] = {"dataset": dataset, "methods": {}, "errors": err_rows,
                               "not_scored": not_scored}
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    for name, seg in segmenters.items():
        mdir = out / name if len(segmenters) > 1 else out
        mdir.mkdir(parents=True, exist_ok=True)
        progress_path = mdir / ".progress.jsonl"
        settings = {"method": name, "dataset": dataset, "box_shift": "-".join(map(str, shift)),
                    "repeats": reps, "seed": seed, "resume_key": resume_key}
        progress_log = ProgressLog(
            progress_path, settings, key=lambda row: (str(row["case_id"]), row.get("repeat")),
            keep=lambda row: ({"case_id", "repeat", "box", "dice"} <= set(row)
                              and str(row["case_id"]) in index))
        rows = [{**row, "case_id": str(row["case_id"])} for row in progress_log.rows]
        failed: list[list[str]] = []
        worst_cases = _Worst(worst)
        for row in rows:
            worst_cases.add(index[row["case_id"]], row["repeat"], Box.parse(row["box"]), None,
                            row["dice"])
        done = {(r["case_id"], r["repeat"]) for r in rows}
        todo = [(i, r) for i, r in jobs if (str(cases[i]["case_id"]), r) not in done]
        # cases this method could not read, or (found by a method before) without a box
        skip = {i for i in range(len(cases)) if place[i] in boxless}
        timing = "batch" if _batches(seg) else "alone"
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=name, unit="case",
                   disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            read = _read_chunk(cases, chunk, shift, reps, seed, name, failed, skip,
                               boxless, place)
            ready = [(i, r) for i, r in chunk if i in read]
            if not ready:
                bar.update(len(chunk))
                continue
            preds, seconds, sizes, retried = _segment_chunk(
                seg, name, [read[i][0] for i, _ in ready], [read[i][2][r] for i, r in ready],
                [cases[i]["case_id"] for i, _ in ready], seed, failed)
            if retried:
                timing = "batch, some alone"
            new_rows: list[dict[str, Any]] = []
            for (i, r), pred, sec, size in zip(ready, preds, seconds, sizes):
                if pred is None:
                    continue
                s = cases[i]
                b = read[i][2][r]
                mask = read[i][1]
                m = segmentation_metrics(pred, mask, spacing=s.get("spacing"))
                row: dict[str, Any] = {"case_id": s["case_id"], "repeat": r, "box": str(b)}
                row.update({k: float(v) for k, v in m.items()})
                row["undefined"] = " ".join(undefined_metrics(pred, mask))
                row["seconds"] = sec
                row["batch_size"] = size
                new_rows.append(row)
                worst_cases.add(i, r, b, pred, m["dice"])
            rows.extend(new_rows)
            progress_log.append(new_rows)
            bar.update(len(chunk))
        bar.close()
        if boxless:
            not_scored["without_box"][:] = [boxless[k] for k in sorted(boxless)]
            if not rows and all(place[i] in boxless for i in range(len(cases))):
                progress_log.finish()
                _no_cases(dataset, not_scored)
        rows.sort(key=lambda row: (index[str(row["case_id"])], row["repeat"]))
        for cid, msg in failed:
            tqdm.write(f"skipped case {cid}: {msg}")
        err_rows.extend(failed)
        summary = _write_method(mdir, name, dataset, rows,
                                {**context, "failed": len(failed), "timing": timing})
        if worst_cases.limit and worst_cases.kept:
            _write_worst(mdir / "worst.png", cases, worst_cases, reps, seg, seed)
        progress_log.finish()
        results["methods"][name] = summary
        per_case[name] = _case_means(rows)
    if err_rows:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["case_id", "error"])
        w.writerows(err_rows)
        atomic_write_text(out / "errors.csv", buf.getvalue())
    if len(segmenters) == 2:
        a, b = list(segmenters)
        results["compare"] = _compare(out, a, b, per_case[a], per_case[b])
    return results


def _no_cases(dataset: str, not_scored: dict[str, list[str]]) -> None:
    raise FlipsegError(
        f"dataset {dataset!r} has no case with both a mask and a box "
        f"({len(not_scored['without_mask'])} without a mask, "
        f"{len(not_scored['without_box'])} without a box)")


def _box_when_read(sample: Any) -> bool:
    """Whether ``sample`` is a :class:`LazySample` whose box is known only once it is read
    (its index has none: the reader takes it from the mask)."""
    return isinstance(sample, LazySample) and sample.known.get("box") is None


def _read_chunk(cases: Sequence[Any], chunk: Sequence[tuple[int, int]],
                shift: tuple[int, int], reps: int, seed: int, name: str,
                failed: list[list[str]], skip: set[int], boxless: dict[int, str],
                place: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray, list[Box]]]:
    """Case index -> (image, mask, boxes) of the chunk's cases, each read once.

    A case whose files cannot be read (a :class:`FlipsegError`) is appended to
    ``failed`` once and left out; a :class:`MaskShapeError` propagates. A lazy case
    that turns out to have no box goes to ``boxless`` (by its place in the samples)."""
    read: dict[int, tuple[np.ndarray, np.ndarray, list[Box]]] = {}
    for i, _ in chunk:
        if i in read or i in skip:
            continue
        s = cases[i]
        try:
            image, mask = s["image"], s["mask"]
            if s.get("box") is None:
                skip.add(i)
                boxless[place[i]] = str(s["case_id"])
                continue
            boxes = case_boxes(s, shift, repeats=reps, seed=seed)
        except MaskShapeError:
            raise
        except FlipsegError as exc:
            skip.add(i)
            failed.append([str(s["case_id"]), f"{name}: {_one_line(exc)}"])
            continue
        read[i] = (image, mask, boxes)
    return read


def _write_worst(path: Path, cases: Sequence[Any], worst: _Worst, reps: int,
                 seg: Any, seed: int) -> None:
    """``worst.png``: a :func:`flipseg.viz.case_sheet` of the lowest-Dice cases (a case
    resumed from ``.progress.jsonl``, whose mask was not kept, is segmented again)."""
    from flipseg.viz import case_sheet, save_png

    tiles = []
    for i, (dice, r, box, pred) in worst.ranked():
        s = cases[i]
        try:
            image, mask = s["image"], s["mask"]
            if pred is None:
                pred = np.asarray(seg.segment_many([image], [box], seed=seed)[0], bool)
        except MaskShapeError:
            raise
        except FlipsegError:  # unreadable now: the tile is left out
            continue
        title = f"{s['case_id']}\nDice {dice * 100:.1f} %"
        if reps > 1:
            title += f" (box {r + 1} of {reps})"
        tiles.append((image, box, pred, mask, title))
    if tiles:
        save_png(path, case_sheet(tiles))


def _metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if k not in _NOT_METRICS] if rows else []


def _case_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per case: each metric's mean over the case's repeats, CON clipped per row first
    (:func:`clip_for_summary`), and the mean seconds."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    keys = _metric_keys(rows)
    out = {}
    for cid, rs in by_case.items():
        out[cid] = {k: float(np.mean([clip_for_summary(k, r[k]) for r in rs])) for k in keys}
        out[cid]["seconds"] = float(np.mean([r["seconds"] for r in rs]))
    return out


def _counts(rows: list[dict[str, Any]], keys: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Cases (not rows) for which each metric was undefined, and was clipped."""
    undefined: dict[str, set[str]] = {k: set() for k in keys}
    clipped: dict[str, set[str]] = {k: set() for k in keys if k in SUMMARY_BOUNDS}
    for r in rows:
        for k in str(r.get("undefined") or "").split():
            if k in undefined:
                undefined[k].add(r["case_id"])
        for k in clipped:
            if clip_for_summary(k, r[k]) != r[k]:
                clipped[k].add(r["case_id"])
    return {k: len(v) for k, v in undefined.items()}, {k: len(v) for k, v in clipped.items()}


def _write_method(out: Path, name: str, dataset: str, rows: list[dict[str, Any]],
                  context: dict[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out / "cases.csv", buf.getvalue())
    means = _case_means(rows)
    keys = _metric_keys(rows)
    metrics, left_out = {}, {}
    for k in keys:
        s = summarize([m[k] for m in means.values()])
        metrics[k] = {"mean": s["mean"], "std": s["std"]}
        if s["n"] < len(means):
            left_out[k] = len(means) - s["n"]
    undefined, clipped = _counts(rows, keys)
    seconds = float(np.mean([r["seconds"] for r in rows])) if rows else float("nan")
    summary = {
        "method": name,
        "dataset": dataset,
        "box_shift": context["box_shift"],
        "n": len(means),
        "metrics": metrics,
        "seconds_per_case": seconds,
        "distance_unit": context["unit"],
        "undefined": undefined,
        "clipped": clipped,
        "left_out": left_out,
        "timing": context["timing"],
        "not_scored": context["not_scored"],
        "failed": context["failed"] + context["load_errors"],
        "masks_resized": context["masks_resized"],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.md", _summary_markdown(summary, context["repeats"]))
    return summary


def _listed(ids: Sequence[str], limit: int = 50) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _summary_markdown(summary: dict[str, Any], repeats: int) -> str:
    """``summary.md``: the table, then what every column means, the undefined values, the
    cases not scored and the columns of ``cases.csv``."""
    unit = summary["distance_unit"]
    n = summary["n"]
    shown = [m for m in REPORTED_METRICS if m in summary["metrics"]]
    lines = [f"# {summary['method']} on {summary['dataset']}", "", format_table([summary]).rstrip(),
             "", f"Mean ± sample standard deviation over the n = {n} cases"
             + (f"; each case's {repeats} shifted boxes (box shift {summary['box_shift']}) are "
                "averaged first." if repeats > 1 else "."), "",
             "## What the columns mean", "", "| column | what it measures | unit |", "|---|---|---|"]
    for m in shown:
        what = METRIC_HELP[m][0]
        lines.append(f"| {m} | {what} | {unit if m in DISTANCES else '%'} |")
    lines += ["| s/case | seconds per case: the mean of `seconds` in cases.csv (see below) | s |",
              "", "TP, FP, FN: pixels (voxels) in both masks, only in the prediction, only in "
              "the truth. Distances are in "
              + ("mm (the cases' pixel spacing)." if unit == "mm" else
                 f"{unit} (no pixel spacing known)."), "",
              "## Undefined values", "",
              "A metric is undefined for a case when its formula has no value there. The case "
              "still counts, with the value below (one rule per metric, so no case can make "
              "the mean explode); cases.csv's `undefined` column names them per row.", "",
              "| metric | undefined for (cases of n) | when | value used |", "|---|---|---|---|"]
    for m in shown:
        _, when, value = METRIC_HELP[m]
        lines.append(f"| {m} | {summary['undefined'].get(m, 0)} of {n} | {when} | {value} |")
    for m, k in summary["clipped"].items():
        if m in shown:
            lo, hi = SUMMARY_BOUNDS[m]
            lines += ["", f"{m} was clipped to [{lo * 100:.0f} %, {hi * 100:.0f} %] for {k} of "
                      f"{n} cases before averaging (cases.csv keeps the unclipped values)."]
    for m, k in summary["left_out"].items():
        lines += ["", f"{m}: {k} of {n} cases had no value (NaN) and are left out of its mean."]
    ns = summary["not_scored"]
    lines += ["", "## Cases not scored", ""]
    if ns["without_mask"]:
        lines.append(f"- {len(ns['without_mask'])} image(s) without a mask: "
                     + _listed(ns["without_mask"]))
    if ns["without_box"]:
        lines.append(f"- {len(ns['without_box'])} case(s) with a mask but no box (an empty mask "
                     "and no boxes.csv row): " + _listed(ns["without_box"]))
    if summary["failed"]:
        lines.append(f"- {summary['failed']} case(s) could not be read or segmented: see "
                     "errors.csv")
    if not (ns["without_mask"] or ns["without_box"] or summary["failed"]):
        lines.append("None: every case was scored.")
    if summary["masks_resized"]:
        items = [f"{cid} ({'; '.join(notes)})" for cid, notes in summary["masks_resized"].items()]
        lines += ["", f"{len(items)} mask(s) of another size than their image were resized by "
                  "nearest neighbour (--resize-masks): " + _listed(items)]
    lines += ["", "## cases.csv", "",
              "One row per case and box. Metric columns are fractions (Dice 0.85, not 85 %) "
              f"and distances in {unit}; CON is not clipped there.", "",
              "- `undefined`: the metrics undefined for this row (see above).",
              "- `seconds`: wall-clock seconds to segment this case. With `batch_size` 1 the "
              "case was segmented and timed alone; with `batch_size` N > 1 the method "
              "segmented N cases at once and `seconds` is that batch's time divided by N. "
              f"This run: {_timing_words(summary['timing'])}.",
              "- `batch_size`: how many cases were segmented together with this one."]
    return "\n".join(lines) + "\n"


def _timing_words(timing: str) -> str:
    return {"alone": "the method segments one case at a time; every case was timed alone",
            "batch": "cases were segmented in batches (seconds = batch time / batch size)",
            "batch, some alone": "cases were segmented in batches (seconds = batch time / batch "
                                 "size); the cases of a batch that failed were re-run and timed "
                                 "alone (batch_size 1)"}[timing]


def format_table(summaries: Sequence[dict[str, Any]], metrics: Sequence[str] = REPORTED_METRICS) -> str:
    """Markdown table of mean±std (Dice/Jaccard/CON/IoU in %, distances in pixels or mm:
    each summary's ``distance_unit``; ``summary.md`` explains every column)."""
    present = [m for m in metrics if any(m in s["metrics"] for s in summaries)]
    head = "| method | dataset | n | " + " | ".join(present) + " | s/case |"
    sep = "|" + "---|" * (len(present) + 4)
    lines = [head, sep]
    for s in summaries:
        cells = []
        for m in present:
            v = s["metrics"].get(m)
            if v is None:
                cells.append("")
                continue
            f = 100.0 if m in PERCENT else 1.0
            cells.append(f"{v['mean'] * f:.2f}±{v['std'] * f:.2f}")
        lines.append(
            f"| {s['method']} | {s['dataset']} | {s['n']} | " + " | ".join(cells)
            + f" | {s['seconds_per_case']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _compare(
    out: Path, a: str, b: str, ca: dict[str, dict[str, float]], cb: dict[str, dict[str, float]]
) -> dict[str, Any]:
    common = sorted(set(ca) & set(cb))
    res: dict[str, Any] = {"a": a, "b": b, "n": len(common), "tests": {}}
    lines = [f"Paired t-tests, {a} vs {b}, n = {len(common)} cases (CON clipped per case to "
             "[-100 %, 100 %], as in summary.md)", "",
             f"| metric | {a} | {b} | mean diff (a-b) | t | p |", "|---|---|---|---|---|---|"]
    for m in REPORTED_METRICS:
        if not common or m not in ca[common[0]]:
            continue
        xa = np.array([ca[c][m] for c in common])
        xb = np.array([cb[c][m] for c in common])
        t = paired_ttest(xa, xb)
        res["tests"][m] = t
        f = 100.0 if m in HIGHER_IS_BETTER else 1.0
        lines.append(
            f"| {m} | {np.nanmean(xa) * f:.2f} | {np.nanmean(xb) * f:.2f} | "
            f"{t['mean_diff'] * f:+.2f} | {t['t']:.2f} | {t['p']:.2g} |"
        )
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "compare.json", json.dumps(res, indent=2))
    return res
