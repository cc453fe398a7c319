"""Box refiner trained on the target site's own boxes: BUSI, 2-fold cross-fitting.

    python benchmarks/flip2d.py --datasets busi-lesions --shifts 0,0-10 --skip-speed \\
        --methods flip,ellipse,flip+refine --out runs/bench_flip2d_400      # the references
    python benchmarks/refine_adapt.py --reference runs/bench_flip2d_400/busi-lesions
    python benchmarks/refine_adapt.py --reference ... --method flip-vote    # another method
    python benchmarks/refine_adapt.py --reference ... --method flip-vote --site-voter

The shipped refiner learned BUS-BRA's way of drawing boxes. Here BUSI's lesions
(one box per lesion) are split into two patient-level folds (``--data-opt cv=2``);
for each fold a refiner is trained on the other fold's boxes (boxes only, no masks:
``flipseg train box-refiner --dataset busi --data-opt per_lesion=true --data-opt cv=2
--fold K``) and Flip runs on this fold's boxes after refinement, with 0-10 px shifts
(the same seeded shifts as the reference run) and with tight boxes. Both folds
together cover every lesion once, and the table sets them beside the references:
Flip on the given boxes and Flip after the shipped refiner. Also printed: the mean
edge error of the boxes before and after each refiner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from flip2d import _per_case  # the benchmarks folder is on sys.path when run as a script

from flipseg.data import load_dataset
from flipseg.errors import FlipsegError
from flipseg.evaluation import case_boxes, evaluate_methods
from flipseg.methods import get_segmenter, load_methods
from flipseg.methods.boxinst.model import train_boxinst_cli
from flipseg.methods.boxrefine.model import (
    RefinedBoxSegmenter,
    edge_error,
    load_refiner,
    train_box_refiner_cli,
)
from flipseg.metrics import paired_ttest

load_methods()
CV = 2


def _train(fold: int, out: Path, epochs: int, what: str = "refiner") -> Path:
    """The box refiner (or, ``what="voter"``, the BoxInst U-Net) trained on the boxes of
    the other fold."""
    run = out / f"{what}_fold{fold}"  # a finished run resumes at its end and returns
    args = SimpleNamespace(dataset="busi", data_root=None, fold=fold, part=None, limit=None,
                           data_opt=["per_lesion=true", f"cv={CV}"], out=str(run),
                           set=[f"epochs={epochs}"], val_cases=64, no_progress=True)
    (train_box_refiner_cli if what == "refiner" else train_boxinst_cli)(args)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True,
                    help="busi-lesions folder of a benchmarks/flip2d.py run (rows flip, ellipse, "
                         "flip+refine under 0-10/ and tight/)")
    ap.add_argument("--epochs", type=int, default=90, help="refiner training epochs (~300 boxes)")
    ap.add_argument("--method", default="flip",
                    help="box -> mask method run on the refined boxes (flip, flip-grabcut, "
                         "flip-vote, ...); the reference folder needs its <method>+refine rows")
    ap.add_argument("--out", default="runs/bench_refine_adapt")
    ap.add_argument("--site-voter", action="store_true",
                    help="with --method flip-vote: its BoxInst voter is trained on the other "
                         "fold's boxes too (`flipseg train boxinst`, --voter-epochs)")
    ap.add_argument("--voter-epochs", type=int, default=60, help="BoxInst epochs (~300 boxes)")
    a = ap.parse_args(argv)
    if a.site_voter and a.method != "flip-vote":
        raise FlipsegError("--site-voter needs --method flip-vote")
    out, ref = Path(a.out), Path(a.reference)
    mine_name = f"{a.method}+refine (BUSI boxes{' + BUSI voter' if a.site_voter else ''})"
    shipped_name = f"{a.method}+refine"
    shipped = load_refiner(None)
    folds = []  # (test cases, the refiner and voter trained on the other fold), read once
    for fold in range(1, CV + 1):
        cases = [s for s in load_dataset("busi", fold=fold, part="test", cv=CV, per_lesion=True)
                 if s.get("box") is not None and s.get("mask") is not None]
        voter = _train(fold, out, a.voter_epochs, "voter") if a.site_voter else None
        folds.append((cases, load_refiner(_train(fold, out, a.epochs)), voter))
    lines = []
    for shift in ("0-10", None):
        tag = shift or "tight"
        rows: dict[str, dict[str, dict[str, float]]] = {mine_name: {}}
        edges = {"given": [], "shipped refiner": [], "BUSI refiner": []}
        for fold, (cases, refiner, voter) in enumerate(folds, start=1):
            d = out / tag / f"fold{fold}" / (shipped_name + ("+voter" if voter else ""))
            if not (d / "summary.json").exists():
                opts = {"vote_model": voter} if voter else {}
                seg = RefinedBoxSegmenter(get_segmenter(a.method, **opts), refiner)
                evaluate_methods(cases, {shipped_name: seg}, dataset="busi-lesions", out_dir=d,
                                 box_shift=shift, progress=True, batch_size=64)
            rows[mine_name].update(_per_case(d / "cases.csv"))
            # edge error: one shift per box (the first of the evaluation's repeats)
            ims = [c["image"] for c in cases]
            tight = [c["box"] for c in cases]
            given = [case_boxes(c, shift)[0] for c in cases]
            edges["given"].append(edge_error(given, tight) * len(cases))
            edges["shipped refiner"].append(edge_error(shipped.refine_many(ims, given), tight) * len(cases))
            edges["BUSI refiner"].append(edge_error(refiner.refine_many(ims, given), tight) * len(cases))
        n = len(rows[mine_name])
        refs = [m for m in dict.fromkeys(("flip", "ellipse", "flip+refine", a.method, shipped_name))
                if (ref / tag / m / "cases.csv").exists()]
        for name in refs:
            rows[name] = _per_case(ref / tag / name / "cases.csv")
        common = sorted(set.intersection(*(set(r) for r in rows.values())))
        title = "0-10 px shifts (3 repeats)" if shift else "tight boxes"
        section = [f"### BUSI lesions, {title}: {len(common)} of {n} lesions, 2-fold cross-fitted",
                   "| method | Dice % | HD px |", "|---|---|---|"]
        for name, r in rows.items():
            section.append(f"| {name} | {100 * np.mean([r[c]['dice'] for c in common]):.2f} | "
                           f"{np.mean([r[c]['hd'] for c in common]):.2f} |")
        section += ["", "| comparison | Dice diff | p | HD diff | p |", "|---|---|---|---|---|"]
        mine = rows[mine_name]
        for other in reversed(refs):
            td = paired_ttest([mine[c]["dice"] for c in common], [rows[other][c]["dice"] for c in common])
            th = paired_ttest([mine[c]["hd"] for c in common], [rows[other][c]["hd"] for c in common])
            section.append(f"| {mine_name} vs {other} | {100 * td['mean_diff']:+.2f} | "
                           f"{td['p']:.2g} | {th['mean_diff']:+.2f} | {th['p']:.2g} |")
        section += ["", "| boxes | mean edge error px |", "|---|---|"]
        section += [f"| {k} | {sum(v) / n:.2f} |" for k, v in edges.items()] + [""]
        print("\n".join(section), flush=True)
        lines += section
    out.mkdir(parents=True, exist_ok=True)
    report = out / ("report.md" if a.method == "flip" else
                    f"report_{a.method}{'_voter' if a.site_voter else ''}.md")
    report.write_text("\n".join(lines))
    print(json.dumps({"report": str(report)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
