"""BoxInst (box-supervised U-Net) beside Flip Learning, the ellipse floor and GrabCut.

    python benchmarks/boxinst.py --model runs/boxinst_bb5
    python benchmarks/boxinst.py --model runs/boxinst_bb5 --limit 50      # quick look

Tight boxes on BUS-BRA fold 5 (the test fold of a model trained on folds 1-4) and on
all BUSI lesion images (external): Dice, JAC, HD, ASD mean±std, and paired t-tests
of boxinst against every other row. ``--flip-model`` adds Flip Learning (default:
the shipped model when there is one).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import flipseg.baselines  # noqa: F401
from flipseg.data import load_dataset
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.methods import get_segmenter, load_methods
from flipseg.methods.flip.infer import default_model_path
from flipseg.metrics import paired_ttest

load_methods()

METRICS = ("dice", "jaccard", "hd", "asd")


def _cases(dataset: str, limit: int | None) -> list[dict]:
    s = load_dataset("bus-bra", fold=5, part="test") if dataset == "bus-bra" else load_dataset("busi")
    s = [x for x in s if x.get("mask") is not None and x.get("box") is not None]
    return s[:limit] if limit else s


def _per_case(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {r["case_id"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="boxinst run folder or model file")
    ap.add_argument("--flip-model", default=None, help="Flip run/model (default: the shipped one)")
    ap.add_argument("--datasets", default="bus-bra,busi")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_boxinst")
    a = ap.parse_args(argv)
    segs = {"boxinst": get_segmenter("boxinst", model=a.model)}
    flip = a.flip_model or (default_model_path(2) if default_model_path(2).exists() else None)
    if flip:
        segs["flip"] = get_segmenter("flip", model=str(flip))
    for name in ("ellipse", "grabcut", "box"):
        segs[name] = get_segmenter(name)
    lines = []
    for ds in a.datasets.split(","):
        cases = _cases(ds, a.limit)
        d = Path(a.out) / ds
        res = evaluate_methods(cases, segs, dataset=ds, out_dir=d, progress=True, batch_size=64)
        lines += [f"### {ds}: tight boxes", format_table(list(res["methods"].values()), METRICS)]
        pc = {m: _per_case(d / m / "cases.csv") for m in segs}
        lines.append("| boxinst vs | Dice diff (pp) | p (Dice) | HD diff | p (HD) |\n|---|---|---|---|---|")
        for ref in segs:
            if ref == "boxinst":
                continue
            common = sorted(set(pc["boxinst"]) & set(pc[ref]))
            mine, theirs = pc["boxinst"], pc[ref]
            td = paired_ttest([mine[c]["dice"] for c in common], [theirs[c]["dice"] for c in common])
            th = paired_ttest([mine[c]["hd"] for c in common], [theirs[c]["hd"] for c in common])
            lines.append(f"| {ref} | {100 * td['mean_diff']:+.2f} | {td['p']:.2g} | "
                         f"{th['mean_diff']:+.2f} | {th['p']:.2g} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
