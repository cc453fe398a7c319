"""Box -> mask baselines on BUSI lesions and BUS-BRA, tight and shifted boxes.

Prints one markdown table per dataset (Dice/JAC/CON in %, HD/HD95/ASD in pixels,
mean±std over cases; shifted boxes: 3 seeded repeats averaged per case) and
paired t-tests of every method against the inscribed ellipse.

    python benchmarks/box_to_mask.py                      # everything (long)
    python benchmarks/box_to_mask.py --limit 100 --shifts 0 --methods box,ellipse

A finished (dataset, shift, method) job is read back from its ``summary.json`` and
``cases.csv`` under ``--out``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from flipseg.data import load_dataset
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.methods import get_segmenter
from flipseg.metrics import paired_ttest

DEFAULT_METHODS = (
    "box,ellipse,grabcut,chan-vese,gac,random-walker,sp-grow,saliency-sr,saliency-fg"
)


@lru_cache(maxsize=2)  # each worker process reads a dataset once, not once per job
def _dataset(name: str, limit: int | None) -> list[dict]:
    if name == "busi":
        samples = load_dataset("busi")
    else:
        samples = load_dataset("bus-bra")
    samples = [s for s in samples if s.get("mask") is not None and s.get("box") is not None]
    return samples[:limit] if limit else samples


def _job(args: tuple) -> tuple[str, str, str, dict, dict]:
    dataset, method, shift, limit, out = args
    mdir = Path(out) / dataset / (shift or "tight") / method
    done = mdir / "summary.json"
    summary = json.loads(done.read_text()) if done.exists() else None
    if summary is None or (limit and summary["n"] != limit):
        samples = _dataset(dataset, limit)
        res = evaluate_methods(
            samples, {method: get_segmenter(method)}, dataset=dataset,
            out_dir=mdir, box_shift=shift, progress=False,
        )
        summary = res["methods"][method]
    cases = {}
    path = mdir / "cases.csv"
    with open(path) as f:
        for row in csv.DictReader(f):
            cases.setdefault(row["case_id"], []).append(row)
    per_case = {
        cid: {k: float(np.mean([float(r[k]) for r in rs])) for k in ("dice", "hd")}
        for cid, rs in cases.items()
    }
    return dataset, method, shift or "0", summary, per_case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="busi,bus-bra")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--shifts", default="0,0-10,10-20,20-30")
    ap.add_argument("--shift-methods", default=None,
                    help="methods run on shifted boxes (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="first N cases per dataset")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_box_to_mask")
    a = ap.parse_args(argv)
    methods = a.methods.split(",")
    shift_methods = a.shift_methods.split(",") if a.shift_methods else methods
    jobs = []
    for ds in a.datasets.split(","):
        for sh in a.shifts.split(","):
            shift = None if sh in ("0", "tight") else sh
            for m in methods if shift is None else [m for m in methods if m in shift_methods]:
                jobs.append((ds, m, shift, a.limit, a.out))
    t0 = time.time()
    results = []
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        for r in pool.map(_job, jobs):
            results.append(r)
            print(f"  done {r[0]} {r[2]} {r[1]} ({time.time() - t0:.0f} s)", file=sys.stderr)
    report = []
    for ds in a.datasets.split(","):
        for sh in a.shifts.split(","):
            rows = [r for r in results if r[0] == ds and r[2] == (sh if sh != "tight" else "0")]
            if not rows:
                continue
            title = f"### {ds}, box shift {sh} px" if sh not in ("0", "tight") else f"### {ds}, tight boxes"
            report.append(title)
            report.append(format_table([r[3] for r in rows]))
            ref = [r for r in rows if r[1] == "ellipse"]
            if ref:
                lines = ["| method vs ellipse | Dice diff (pp) | p (Dice) | HD diff (px) | p (HD) |",
                         "|---|---|---|---|---|"]
                for r in rows:
                    if r[1] == "ellipse":
                        continue
                    common = sorted(set(r[4]) & set(ref[0][4]))
                    td = paired_ttest([r[4][c]["dice"] for c in common],
                                      [ref[0][4][c]["dice"] for c in common])
                    th = paired_ttest([r[4][c]["hd"] for c in common],
                                      [ref[0][4][c]["hd"] for c in common])
                    lines.append(f"| {r[1]} | {100 * td['mean_diff']:+.2f} | {td['p']:.2g} | "
                                 f"{th['mean_diff']:+.2f} | {th['p']:.2g} |")
                report.append("\n".join(lines) + "\n")
    text = "\n".join(report)
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "report.md").write_text(text)
    (Path(a.out) / "results.json").write_text(
        json.dumps([r[3] for r in results], indent=2, default=str))
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
