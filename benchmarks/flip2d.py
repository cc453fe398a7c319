"""Flip Learning 2D benchmark: quality beside the ellipse/box floors, shifts, speed.

    python benchmarks/flip2d.py --model runs/flip_bb5            # full tables
    python benchmarks/flip2d.py --limit 50 --skip-speed          # quick look

Tables printed (markdown):
1. BUS-BRA fold 5 test and BUSI (external; per image, and per lesion: the 17
   images with several lesions give one box each), tight boxes: Dice, JAC, HD,
   ASD (mean±std) for flip, flip-grabcut (Flip masks refined by GrabCut),
   flip-vote (the majority of flip, flip-grabcut and the shipped BoxInst U-Net),
   flip-nofusion (the agents' mask without the ellipse-prior fusion), ellipse,
   box, grabcut and, with a box refiner, flip+refine, flip-grabcut+refine,
   flip-vote+refine and ellipse+refine (the boxes
   tightened first, ``--refine-box``); paired t-tests of the Flip rows against the
   ellipse (the floor) and GrabCut (the strongest classic baseline). Finished
   methods are read back from ``--out``, so an interrupted run resumes.
2. The same with 0-10 px box shifts (3 seeded repeats per box).
3. Speed: seconds per image amortised over a batch, and against the superpixel count.
4. Training time of the model's run (from its logs), when the run folder is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from flipseg.data import load_dataset
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.methods import get_segmenter, load_methods
from flipseg.metrics import paired_ttest

load_methods()

METRICS = ("dice", "jaccard", "hd", "asd")
#: Flip, Flip refined by GrabCut (ours), and the floors/baselines beside them.
METHODS = ("flip", "flip-grabcut", "flip-vote", "flip-nofusion", "ellipse", "box", "grabcut")
#: With a box refiner (``--refiner``): Flip and the ellipse on the refined boxes.
REFINED = ("flip+refine", "flip-grabcut+refine", "flip-vote+refine", "ellipse+refine")
#: Paired t-tests printed: method -> references.
TESTS = {"flip": ("ellipse", "grabcut", "flip-nofusion"), "flip-grabcut": ("ellipse", "grabcut"),
         "flip-vote": ("ellipse", "grabcut", "flip", "flip-grabcut"),
         "flip-nofusion": ("ellipse", "grabcut"),
         "flip+refine": ("ellipse", "ellipse+refine", "flip"),
         "flip-grabcut+refine": ("ellipse+refine", "flip+refine"),
         "flip-vote+refine": ("ellipse+refine", "flip+refine", "flip-grabcut+refine")}


def _segmenter(name: str, model: str | None, refiner: str | None = None):
    """``flip-nofusion`` is Flip with the ellipse-prior fusion switched off (the papers' output);
    ``<method>+refine`` runs the method on the boxes the refiner tightened."""
    if name.endswith("+refine"):
        from flipseg.methods.boxrefine.model import RefinedBoxSegmenter, load_refiner

        return RefinedBoxSegmenter(_segmenter(name[: -len("+refine")], model), load_refiner(refiner))
    opts: dict = {"model": model} if model and name.startswith("flip") else {}
    if name == "flip-nofusion":
        return get_segmenter("flip", prior_fusion=0.0, **opts)
    return get_segmenter(name, **opts)


def _cases(dataset: str, limit: int | None) -> list[dict]:
    if dataset == "bus-bra":
        s = load_dataset("bus-bra", fold=5, part="test")
    elif dataset == "busi-lesions":  # one box per lesion (mask file), not per image
        s = load_dataset("busi", per_lesion=True)
    else:
        s = load_dataset("busi")
    s = [x for x in s if x.get("mask") is not None and x.get("box") is not None]
    return s[:limit] if limit else s


def _per_case(path: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, list[dict]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["case_id"], []).append(r)
    return {c: {m: float(np.mean([float(r[m]) for r in rs])) for m in METRICS}
            for c, rs in rows.items()}


def quality(model: str | None, datasets: list[str], shift: str | None, limit: int | None,
            out: Path, refiner: str | None = None, only: list[str] | None = None) -> str:
    methods = METHODS + (REFINED if refiner else ())
    if only:
        methods = tuple(m for m in methods if m in only)
    lines = []
    for ds in datasets:
        cases = _cases(ds, limit)
        d = out / ds / (shift or "tight")
        # a method whose summary is already under --out is read back (the run resumes)
        todo = [m for m in methods if not (d / m / "summary.json").exists()]
        for m in todo:  # one method per call: each writes d/<method>/
            seg = _segmenter(m, model, refiner)
            evaluate_methods(cases, {m: seg}, dataset=ds, out_dir=d / m, box_shift=shift,
                             progress=True, batch_size=64)
        summaries = [json.loads((d / m / "summary.json").read_text()) for m in methods]
        title = f"### {ds}: {'tight boxes' if not shift else f'box shift {shift} px (3 repeats)'}"
        lines += [title, format_table(summaries, METRICS)]
        pc = {m: _per_case(d / m / "cases.csv") for m in methods}
        for meth in (m for m in TESTS if m in methods):
            for ref in (r for r in TESTS[meth] if r in methods):
                common = sorted(set(pc[meth]) & set(pc[ref]))
                lines.append(f"| {meth} vs {ref} | mean diff | t | p |\n|---|---|---|---|")
                for m in METRICS:
                    t = paired_ttest([pc[meth][c][m] for c in common], [pc[ref][c][m] for c in common])
                    f = 100.0 if m in ("dice", "jaccard") else 1.0
                    lines.append(f"| {m} | {t['mean_diff'] * f:+.2f} | {t['t']:.2f} | {t['p']:.2g} |")
                lines.append("")
        lines += per_class(cases, pc)
    return "\n".join(lines)


def per_class(cases: list[dict], pc: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Mean Dice per image label (BUSI: benign / malignant), when the cases have several."""
    labels = {c["case_id"]: c.get("label") for c in cases}
    classes = sorted({v for v in labels.values() if v})
    if len(classes) < 2:
        return []
    counts = {k: sum(v == k for v in labels.values()) for k in classes}
    lines = ["| method | " + " | ".join(f"{k} Dice (n={counts[k]})" for k in classes) + " |",
             "|---|" + "---|" * len(classes)]
    for meth, rows in pc.items():
        cells = [100 * np.mean([r["dice"] for c, r in rows.items() if labels.get(c) == k]) for k in classes]
        lines.append(f"| {meth} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    return lines + [""]


def speed(model: str | None, n: int, levels: list[int]) -> str:
    from flipseg.methods.flip.infer import FlipModel, default_model_path

    m = FlipModel.load(model or default_model_path(2))
    cases = _cases("bus-bra", n)
    ims = [c["image"] for c in cases]
    bxs = [c["box"] for c in cases]
    lines = ["| superpixels | images | batch | s/image (amortised) |", "|---|---|---|---|"]
    for lv in levels:
        t0 = time.perf_counter()
        m.segment_many(ims, bxs, level=lv, batch_size=64)
        dt = (time.perf_counter() - t0) / len(ims)
        lines.append(f"| {lv} | {len(ims)} | 64 | {dt:.3f} |")
    return "### speed (this machine)\n" + "\n".join(lines) + "\n"


def training_time(run: Path) -> str:
    log = run / "train_log.csv"
    if not log.exists():
        return ""
    with open(log) as f:
        rows = list(csv.DictReader(f))
    rl = sum(float(r["seconds"]) for r in rows)
    rep = run / "classifier" / "classifier_report.json"
    clf = json.loads(rep.read_text()).get("train_seconds", float("nan")) if rep.exists() else float("nan")
    lines = ["### training run " + str(run), "| epoch | level | val_dice | seconds |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['level']} | {float(r.get('val_dice', 'nan')):.4f} | "
                     f"{float(r['seconds']):.0f} |")
    lines.append(f"\nagents: {rl / 60:.1f} min; classifier: {clf / 60:.1f} min")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run folder or model file (default: shipped)")
    ap.add_argument("--datasets", default="bus-bra,busi,busi-lesions",
                    help="bus-bra (fold 5 test), busi (one box per image: the union of its "
                         "lesions), busi-lesions (one box per lesion)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--shifts", default="0,0-10")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-images", type=int, default=64)
    ap.add_argument("--speed-levels", default="50,100,200,400,1000,2000")
    ap.add_argument("--refiner", default="default",
                    help="box refiner for the +refine rows: default (the shipped one, when "
                         "present), a `flipseg train box-refiner` run, or none")
    ap.add_argument("--methods", default=None,
                    help="comma-separated subset of the rows (default: all), e.g. for a quicker "
                         "shifted-box table")
    ap.add_argument("--out", default="runs/bench_flip2d")
    a = ap.parse_args(argv)
    from flipseg.methods.boxrefine.model import default_model_path as refiner_path

    refiner = None if a.refiner == "none" or (
        a.refiner == "default" and not refiner_path().exists()) else a.refiner
    out = Path(a.out)
    parts = []
    for sh in a.shifts.split(","):
        parts.append(quality(a.model, a.datasets.split(","), None if sh == "0" else sh, a.limit, out,
                             refiner, a.methods.split(",") if a.methods else None))
        print(parts[-1], flush=True)
    if not a.skip_speed:
        parts.append(speed(a.model, a.speed_images, [int(v) for v in a.speed_levels.split(",")]))
        print(parts[-1], flush=True)
    if a.model and Path(a.model).is_dir():
        parts.append(training_time(Path(a.model)))
        print(parts[-1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
