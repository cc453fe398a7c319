"""Evaluate box -> mask methods on a dataset the way the papers do.

:func:`evaluate_methods` runs one or more registered segmenters on the same
cases and the same (tight or shifted) boxes, scores every prediction with
:func:`flipseg.metrics.segmentation_metrics`, and writes per method
``cases.csv`` (one row per case and box repeat), ``summary.json`` and
``summary.md``; with two methods it adds paired t-tests (``compare.md``,
``compare.json``). Metrics of shifted-box repeats are averaged per case before
the dataset summary. Cases that fail are reported, listed in ``errors.csv``
and skipped; the run finishes.
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
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.metrics import paired_ttest, segmentation_metrics, summarize
from flipseg.segmenters import Segmenter

__all__ = ["case_boxes", "evaluate_methods", "REPORTED_METRICS", "format_table"]

#: Metrics written to summaries, in table order.
REPORTED_METRICS = ("dice", "jaccard", "con", "hd", "hd95", "asd", "iou_bg", "miou")
#: Metrics where larger is better (for reporting the direction of a comparison).
HIGHER_IS_BETTER = {"dice", "jaccard", "con", "iou", "iou_bg", "miou", "s_measure"}


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
) -> dict[str, Any]:
    """Run and score every method on every case with a mask and a box.

    Parameters
    ----------
    samples : sample dicts (cases without mask or box are skipped and counted)
    segmenters : method name -> segmenter
    box_shift : None/"0" for tight boxes, or a level like ``"0-10"``
    repeats : shifted copies per box (the papers use 3)
    errors : (case_id, message) pairs of cases that already failed to load

    Returns
    -------
    dict with per-method summaries, the comparison (if two methods) and errors.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shift = parse_shift_level(box_shift)
    reps = repeats if shift != (0, 0) else 1
    cases = [s for s in samples if s.get("mask") is not None and s.get("box") is not None]
    if not cases:
        raise FlipsegError(f"dataset {dataset!r} has no case with both a mask and a box")
    jobs = [(i, r, b) for i, s in enumerate(cases)  # (case index, repeat, box)
            for r, b in enumerate(case_boxes(s, shift, repeats=reps, seed=seed))]
    err_rows = [list(e) for e in errors]
    results: dict[str, Any] = {"dataset": dataset, "methods": {}, "errors": err_rows}
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    for name, seg in segmenters.items():
        rows: list[dict[str, Any]] = []
        bar = tqdm(total=len(jobs), desc=name, unit="case", disable=not progress)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            images = [cases[i]["image"] for i, _, _ in chunk]
            boxes = [b for _, _, b in chunk]
            t0 = time.perf_counter()
            try:
                preds = seg.segment_many(images, boxes, seed=seed)
            except FlipsegError:
                raise
            except Exception:  # retry one by one so a single bad case cannot sink the batch
                preds = []
                for (i, _, b), im in zip(chunk, images):
                    try:
                        preds.append(seg.segment(im, b, seed=seed))
                    except Exception as exc:  # noqa: BLE001 - reported per case, run goes on
                        preds.append(None)
                        msg = f"{name}: {type(exc).__name__}: {exc}".splitlines()[0]
                        err_rows.append([cases[i]["case_id"], msg])
                        tqdm.write(f"skipped case {cases[i]['case_id']}: {msg}")
            dt = (time.perf_counter() - t0) / max(1, len(chunk))
            for (i, r, b), pred in zip(chunk, preds):
                if pred is None:
                    continue
                s = cases[i]
                m = segmentation_metrics(pred, s["mask"], spacing=s.get("spacing"))
                row = {"case_id": s["case_id"], "repeat": r, "box": str(b)}
                row.update({k: float(v) for k, v in m.items()})
                row["seconds"] = dt
                rows.append(row)
            bar.update(len(chunk))
        bar.close()
        mdir = out / name if len(segmenters) > 1 else out
        summary = _write_method(mdir, name, dataset, rows, box_shift)
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


def _case_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    out = {}
    for cid, rs in by_case.items():
        keys = [k for k in rs[0] if k not in ("case_id", "repeat", "box")]
        out[cid] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
    return out


def _write_method(
    out: Path, name: str, dataset: str, rows: list[dict[str, Any]], box_shift: str | None
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out / "cases.csv", buf.getvalue())
    means = _case_means(rows)
    metrics = {}
    all_keys = list(next(iter(means.values())).keys()) if means else []
    for k in all_keys:
        if k == "seconds":
            continue
        s = summarize([m[k] for m in means.values()])
        metrics[k] = {"mean": s["mean"], "std": s["std"]}
    seconds = float(np.mean([r["seconds"] for r in rows])) if rows else float("nan")
    summary = {
        "method": name,
        "dataset": dataset,
        "box_shift": box_shift or "0",
        "n": len(means),
        "metrics": metrics,
        "seconds_per_case": seconds,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.md", format_table([summary]))
    return summary


def format_table(summaries: Sequence[dict[str, Any]], metrics: Sequence[str] = REPORTED_METRICS) -> str:
    """Markdown table of mean±std (Dice/Jaccard/CON/IoU in %, distances in pixels)."""
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
            f = 100.0 if m in HIGHER_IS_BETTER else 1.0
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
    lines = [f"Paired t-tests, {a} vs {b}, n = {len(common)} cases", "",
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
