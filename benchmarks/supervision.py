"""Box-only masks against a fully supervised model: the same U-Net, three teachers.

    python benchmarks/supervision.py --mask-run runs/boxinst_mask_bb5 \
        --pseudo-run runs/boxinst_pseudo_bb5
    python benchmarks/supervision.py ... --limit 50      # quick look

The box-prompted U-Net of ``flipseg train boxinst`` trained on BUS-BRA folds 1-4 with
``--set supervision=mask`` (the true masks: the fully supervised bound) and
``--set supervision=pseudo`` (flip-vote's masks of the same boxes: boxes only), beside
the shipped box-only methods (BoxInst, Flip, flip-vote), the same flip-vote with the
pseudo-mask U-Net as its third voter, and the inscribed ellipse. Tight boxes on BUS-BRA
fold 5 and on BUSI's lesions (one box per lesion; external). Prints Dice, JAC, HD, ASD
(mean±std) and paired t-tests of every row against the fully supervised U-Net and the
ellipse. Each method's per-case scores are kept under ``--out`` and read back on a re-run
with the same method, model and cases.

``--site-mask-runs R1,R2`` adds BUSI's in-domain bound: K runs trained with
``supervision=mask`` on BUSI's own masks, run k by
``flipseg train boxinst --dataset busi --data-opt per_lesion=true --data-opt cv=K
--fold k --set supervision=mask --set epochs=60``; each is scored on the lesions of
the fold it did not see, and the K folds make one row over all lesions.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

from flipseg.data import load_dataset
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.methods import get_segmenter, load_methods
from flipseg.metrics import paired_ttest, summarize

load_methods()

METRICS = ("dice", "jaccard", "hd", "asd")


def _cases(dataset: str, limit: int | None) -> list[dict]:
    if dataset == "bus-bra":
        s = load_dataset("bus-bra", fold=5, part="test")
    else:
        s = load_dataset("busi", per_lesion=True)
    s = [x for x in s if x.get("mask") is not None and x.get("box") is not None]
    return s[:limit] if limit else s


def _per_case(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {r["case_id"]: {m: float(r[m]) for m in (*METRICS, "seconds")}
                for r in csv.DictReader(f)}


def _methods(a: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """Row name -> (method, options), best-known box-only rows first."""
    rows = {
        "inscribed ellipse": ("ellipse", {}),
        "BoxInst (boxes)": ("boxinst", {}),
        "flip": ("flip", {}),
        "flip-vote": ("flip-vote", {}),
    }
    if a.pseudo_run:
        rows["U-Net on flip-vote masks (boxes)"] = ("boxinst", {"model": a.pseudo_run})
        rows["flip-vote, U-Net on flip-vote masks as voter"] = (
            "flip-vote", {"vote_model": a.pseudo_run})
    rows["U-Net on true masks (fully supervised)"] = ("boxinst", {"model": a.mask_run})
    return rows


def _scores(sub: Path, cases: list[dict], method: str, opts: dict, ds: str) -> dict:
    """Per-case scores of one method under ``sub``: read back when ``sub/spec.json`` names
    the same method, options and cases, else evaluated (one method: its files lie in sub)."""
    spec = {"method": method, "opts": {k: str(v) for k, v in opts.items()},
            "cases": [c["case_id"] for c in cases]}
    done = sub / "spec.json"
    if not (done.exists() and json.loads(done.read_text()) == spec
            and (sub / "cases.csv").exists()):
        evaluate_methods(cases, {method: get_segmenter(method, **opts)}, dataset=ds,
                         out_dir=sub, progress=True, batch_size=64)
        done.write_text(json.dumps(spec))
    return _per_case(sub / "cases.csv")


def _site_rows(runs: list[str], limit: int | None, out: Path) -> dict[str, dict[str, float]]:
    """Per-lesion scores of the cross-fitted in-domain runs, each on its held-out fold."""
    pc: dict[str, dict[str, float]] = {}
    for k, run in enumerate(runs, start=1):
        cases = load_dataset("busi", fold=k, part="test", per_lesion=True, cv=len(runs))
        cases = [x for x in cases if x.get("mask") is not None and x.get("box") is not None]
        pc.update(_scores(out / f"fold{k}", cases[:limit] if limit else cases, "boxinst",
                          {"model": run}, "busi"))
    return pc


def _summary(row: str, pc: dict[str, dict[str, float]]) -> dict:
    """A format_table row from per-case scores (as evaluate_methods summarises them)."""
    return {"method": row, "dataset": "busi", "n": len(pc),
            "seconds_per_case": summarize(v["seconds"] for v in pc.values())["mean"],
            "metrics": {m: summarize(v[m] for v in pc.values()) for m in METRICS}}


def _ttests(pc: dict[str, dict], ref: str) -> list[str]:
    out = [f"| vs {ref} | Dice diff (pp) | p (Dice) | HD diff (px) | p (HD) |",
           "|---|---|---|---|---|"]
    for name, mine in pc.items():
        if name == ref:
            continue
        theirs = pc[ref]
        common = sorted(set(mine) & set(theirs))
        td = paired_ttest([mine[c]["dice"] for c in common], [theirs[c]["dice"] for c in common])
        th = paired_ttest([mine[c]["hd"] for c in common], [theirs[c]["hd"] for c in common])
        out.append(f"| {name} | {100 * td['mean_diff']:+.2f} | {td['p']:.2g} | "
                   f"{th['mean_diff']:+.2f} | {th['p']:.2g} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mask-run", required=True,
                    help="`flipseg train boxinst --set supervision=mask` run")
    ap.add_argument("--pseudo-run", default=None,
                    help="`flipseg train boxinst --set supervision=pseudo` run")
    ap.add_argument("--site-mask-runs", type=lambda v: v.split(","), default=None,
                    help="comma-separated BUSI `supervision=mask` runs, run k trained "
                         "without fold k of a patient-level split into as many folds")
    ap.add_argument("--datasets", default="bus-bra,busi")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_supervision")
    a = ap.parse_args(argv)
    rows = _methods(a)
    lines = []
    for ds in a.datasets.split(","):
        cases = _cases(ds, a.limit)
        d = Path(a.out) / ds
        pc, summaries = {}, []
        site = ds == "busi" and a.site_mask_runs
        for row, (method, opts) in rows.items():
            sub = d / re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_")
            pc[row] = _scores(sub, cases, method, opts, ds)
            summaries.append({**json.loads((sub / "summary.json").read_text()),
                              "method": row})
        site_row = f"U-Net on BUSI's own masks ({len(site or [])}-fold, fully supervised in-domain)"
        if site:
            pc[site_row] = _site_rows(site, a.limit, d / "site_masks")
            summaries.append(_summary(site_row, pc[site_row]))
        lines += [f"### {ds}: tight boxes ({len(cases)} lesions)",
                  format_table(summaries, METRICS), ""]
        if ds == "busi":  # BUSI's case ids start with the class
            lines += ["| BUSI Dice by class | benign | malignant |", "|---|---|---|"]
            for name, cases_pc in pc.items():
                by = {c: [v["dice"] for k, v in cases_pc.items() if k.startswith(c)]
                      for c in ("benign", "malignant")}
                lines.append(f"| {name} | " + " | ".join(
                    f"{100 * sum(v) / max(len(v), 1):.2f} (n={len(v)})" for v in by.values()) + " |")
            lines.append("")
        lines += _ttests(pc, "U-Net on true masks (fully supervised)") + [""]
        lines += _ttests(pc, "inscribed ellipse") + [""]
        if site:
            lines += _ttests(pc, site_row) + [""]
    text = "\n".join(lines)
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
