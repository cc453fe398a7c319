"""Flip Learning 3D benchmark on held-out phantom volumes: quality and speed.

    python benchmarks/flip3d.py --model runs/flip3d_ph --model2d runs/flip_bb5
    python benchmarks/flip3d.py --model runs/flip3d_ph --volumes 4 --skip-speed   # quick look

Tables printed (markdown):
1. Held-out phantom volumes (``phantom3d``, seed 1000 by default, never used for
   training with the default seed 0), tight 3D boxes: Dice, JAC, HD, ASD
   (mean±std over lesions; HD/ASD in mm with the volumes' anisotropic spacing)
   for flip (3D; the model's post-processing incl. the ellipsoid-prior fusion),
   flip-nofusion (the same agents' mask without that fusion), flip2d-slices
   (the 2D model on every axial slice, when ``--model2d`` is given), ellipse
   (inscribed ellipsoid) and box; paired t-tests of flip against each of the others.
2. Speed: seconds to segment one cubic box (edge 32, 48, 64 voxels) against the
   supervoxel count (``scale_levels_to_box`` off, so the count is the one asked
   for), one box at a time, with the number of erasing steps.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from flipseg.boxes import Box
from flipseg.data import load_dataset, make_phantom_3d
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.methods import get_segmenter, load_methods
from flipseg.metrics import paired_ttest

load_methods()

METRICS = ("dice", "jaccard", "hd", "asd")


def _per_case(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {r["case_id"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}


def quality(model: str, model2d: str | None, volumes: int, seed: int, out: Path) -> str:
    cases = load_dataset("phantom3d", n=volumes, seed=seed)
    segs = {"flip": get_segmenter("flip", model=model),
            # the same agents without the ellipsoid-prior fusion (the papers' output)
            "flip-nofusion": get_segmenter("flip", model=model, prior_fusion=0.0)}
    if model2d:
        segs["flip2d-slices"] = get_segmenter("flip2d-slices", model=model2d)
    segs["ellipse"] = get_segmenter("ellipse")
    segs["box"] = get_segmenter("box")
    ds = f"phantom3d seed {seed} ({volumes} volumes)"
    res = evaluate_methods(cases, segs, dataset=ds, out_dir=out, progress=True, batch_size=64)
    lines = [f"### {ds}, {len(cases)} lesions, tight 3D boxes (HD/ASD in mm)",
             format_table(list(res["methods"].values()), METRICS)]
    pc = {m: _per_case(out / m / "cases.csv") for m in segs}
    for other in [m for m in segs if m != "flip"]:
        common = sorted(set(pc["flip"]) & set(pc[other]))
        lines.append(f"| flip vs {other} | mean diff | t | p |\n|---|---|---|---|")
        for m in METRICS:
            t = paired_ttest([pc["flip"][c][m] for c in common], [pc[other][c][m] for c in common])
            f = 100.0 if m in ("dice", "jaccard") else 1.0
            lines.append(f"| {m} | {t['mean_diff'] * f:+.2f} | {t['t']:.2f} | {t['p']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def speed(model: str, edges: list[int], levels: list[int], repeats: int) -> str:
    from flipseg.methods.flip.infer import FlipModel

    m = FlipModel.load(model)
    m.cfg = m.cfg.with_overrides(scale_levels_to_box=False)  # the count asked for, as is
    side = max(edges) + 32
    vol = make_phantom_3d(0, shape=(side, side, side), spacing=(0.5, 0.5, 0.5), n_lesions=1,
                          lesion_size_mm=(6.0, 8.0))
    centre = np.array(vol["boxes"][0].center).round().astype(int)
    lines = ["| box (voxels) | supervoxels asked | steps | s/box |", "|---|---|---|---|"]
    for e in edges:
        lo = np.clip(centre - e // 2, 0, side - e)
        box = Box.from_lo_hi(lo, lo + e)
        for lv in levels:
            times, steps = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = m.segment_many([vol["image"]], [box], level=lv, batch_size=1)[0]
                times.append(time.perf_counter() - t0)
                steps = int(r.curves["step"][-1])
            lines.append(f"| {e}^3 | {lv} | {steps} | {np.median(times):.2f} |")
    return "### speed: one box at a time (this machine)\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="3D run folder or model file")
    ap.add_argument("--model2d", default=None, help="2D run for flip2d-slices (skipped if absent)")
    ap.add_argument("--volumes", type=int, default=12, help="held-out phantom volumes")
    ap.add_argument("--seed", type=int, default=1000, help="phantom seed of the held-out volumes")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-edges", default="32,48,64")
    ap.add_argument("--speed-levels", default="50,100,200,400")
    ap.add_argument("--speed-repeats", type=int, default=1)
    ap.add_argument("--out", default="runs/bench_flip3d")
    a = ap.parse_args(argv)
    out = Path(a.out)
    parts = [quality(a.model, a.model2d, a.volumes, a.seed, out)]
    print(parts[-1], flush=True)
    if not a.skip_speed:
        parts.append(speed(a.model, [int(v) for v in a.speed_edges.split(",")],
                           [int(v) for v in a.speed_levels.split(",")], a.speed_repeats))
        print(parts[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
