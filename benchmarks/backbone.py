"""Today's rows against the same rows trained from flipseg's pretrained backbone.

    python benchmarks/backbone.py hybrid runs/bench_hybrid_scratch runs/bench_hybrid_backbone
    python benchmarks/backbone.py lanet runs/bench_lanet_busi runs/bench_lanet_busi_backbone

Reads two output folders of the same benchmark (``benchmarks/hybrid.py`` or
``benchmarks/lanet.py``) run with and without ``--set backbone_weights=shipped`` and
prints, per run found in both: the metric before and after and, where the benchmark
keeps per-case values (hybrid: Dice per test image), a paired t-test. Runs in only one
folder are listed with the folder they are in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flipseg.metrics import paired_ttest


def _load(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the benchmark into {folder} first")
    return json.loads(path.read_text())


def hybrid(before: Path, after: Path) -> None:
    print("| run | test | Dice before | Dice after | diff | paired t | p |")
    print("|---|---|---|---|---|---|---|")
    for run in sorted(set(_load(before)) | set(_load(after))):
        fa, fb = before / run / "metrics.json", after / run / "metrics.json"
        if not (fa.is_file() and fb.is_file()):
            print(f"| {run} | | {'yes' if fa.is_file() else '-'} | {'yes' if fb.is_file() else '-'} | | | |")
            continue
        a, b = json.loads(fa.read_text())["tests"], json.loads(fb.read_text())["tests"]
        for test in a:
            ca = {c["case_id"]: c["dice"] for c in a[test]["cases"]}
            cb = {c["case_id"]: c["dice"] for c in b[test]["cases"]}
            ids = sorted(set(ca) & set(cb))
            t = paired_ttest([cb[i] for i in ids], [ca[i] for i in ids])
            ma, mb = 100 * np.mean([ca[i] for i in ids]), 100 * np.mean([cb[i] for i in ids])
            print(f"| {run} | {test} | {ma:.2f} | {mb:.2f} | {mb - ma:+.2f} | {t['t']:.2f} "
                  f"| {t['p']:.2g} |")


def lanet(before: Path, after: Path) -> None:
    ra, rb = _load(before), _load(after)
    print("| dataset | model | metric | before | after | diff |")
    print("|---|---|---|---|---|---|")
    for ds in sorted(set(ra) & set(rb)):
        for model in sorted(set(ra[ds]) & set(rb[ds])):
            ma, mb = ra[ds][model], rb[ds][model]
            if not isinstance(ma, dict):
                continue
            for key in ("accuracy", "f1", "auc", "dice"):
                va, vb = ma.get(key), mb.get(key)
                if isinstance(va, dict):
                    va, vb = va.get("mean"), (vb or {}).get("mean")
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                    print(f"| {ds} | {model} | {key} | {va:.3f} | {vb:.3f} | {vb - va:+.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmark", choices=("hybrid", "lanet"))
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args()
    (hybrid if a.benchmark == "hybrid" else lanet)(a.before, a.after)


if __name__ == "__main__":
    main()
