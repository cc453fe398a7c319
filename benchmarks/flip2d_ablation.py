"""Flip Learning 2D ablations on BUS-BRA fold 5 at a reduced training budget.

Every variant shares one classifier (trained once, copied into each run) and
trains its agents on the first ``--train-boxes`` boxes of folds 1-4 for
``--epochs`` epochs, then is scored on the first ``--test-boxes`` boxes of fold 5
with paired t-tests against the full method. The budget is printed with the table.

    python benchmarks/flip2d_ablation.py                      # the shipped model's classifier
    python benchmarks/flip2d_ablation.py --classifier runs/flip_bb5/classifier
    python benchmarks/flip2d_ablation.py --variants "ours,box jitter 0-10 (half)" --box-shift 0-10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from flipseg.boxes import shifted_boxes
from flipseg.data import load_dataset
from flipseg.methods import get_segmenter
from flipseg.methods.flip.classifier import ClassifierConfig, write_finished_classifier
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.infer import FlipModel, default_model_path
from flipseg.methods.flip.pipeline import train_flip
from flipseg.metrics import paired_ttest, segmentation_metrics

VARIANTS: dict[str, dict] = {
    "ours": {},
    "ours seed 1": {"seed": 1},
    # rewards (the paper's eq. (1)-(5) and our box prior)
    "paper rewards (CSR+IDR1+IDR2 no prior)": {"use_csr": True, "use_idr1": True,
                                                "use_prior": False, "csr_tolerance": 0.0,
                                                "erase_cost": 0.0},
    "+ IDR1": {"use_idr1": True},
    "+ CSR": {"use_csr": True},
    "+ CSR tolerance 0.03": {"use_csr": True, "csr_tolerance": 0.03},
    "no IDR2": {"use_idr2": False},
    "no prior": {"use_prior": False},
    "no erase cost": {"erase_cost": 0.0},
    # state and post-processing
    "no global view": {"global_view": False},
    "no smoothing": {"smooth": 0.0},
    "no ellipse fusion": {"prior_fusion": 0.0},
    # agents
    "agents=1": {"agents": 1},
    "agents=3": {"agents": 3},
    "agents=4": {"agents": 4},
    "joint reward": {"reward_attribution": "joint"},
    # curriculum
    "mixed curriculum": {"curriculum": "mixed"},
    "no curriculum (last level)": {"curriculum": "fixed"},
    "coarse-to-fine (MICCAI)": {"curriculum": "c2f"},
    # environment
    "index order": {"order": "index"},
    "no standardisation": {"standard_short_side": 0},
    "seeds": {"superpixel_method": "seeds"},
    "lsc": {"superpixel_method": "lsc"},
    "mixup eraser": {"eraser": "mixup"},
    # training boxes (ours): jittered as the box-shift protocol, prior reward on the tight box
    "box jitter 0-10 (half)": {"train_box_shift": 10},
    "box jitter 0-10 (all)": {"train_box_shift": 10, "train_box_shift_prob": 1.0},
    "box jitter 0-20 (half)": {"train_box_shift": 20},
}


def classifier_folder(source: Path, dest: Path) -> Path:
    """A classifier folder to share: ``source`` itself, or the classifier inside a Flip model file."""
    if source.is_dir():
        return source
    from flipseg.bundles import read_bundle

    bundle = read_bundle(source, "flip_model.safetensors", "flipseg-flip-1", "Flip Learning model")
    return write_finished_classifier(bundle["classifier"], dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default=str(default_model_path(2)),
                    help="trained classifier folder, or a Flip model file whose classifier "
                         "is shared (default: the shipped 2D model)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--train-boxes", type=int, default=400)
    ap.add_argument("--test-boxes", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--levels", default="50,100,200")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--box-shift", default=None,
                    help="also score every variant with shifted test boxes, e.g. 0-10 "
                         "(one seeded shift per box, the same for every variant)")
    a = ap.parse_args(argv)
    train = [s for s in load_dataset("bus-bra", fold=5, part="train") if s["box"] is not None]
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))[: a.train_boxes]]
    test = load_dataset("bus-bra", fold=5, part="test")[: a.test_boxes]
    levels = tuple(int(v) for v in a.levels.split(","))
    base = FlipConfig(epochs=a.epochs, levels=levels, num_envs=64)
    ccfg_path = classifier_folder(Path(a.classifier), Path(a.out) / "shared_classifier")
    results: dict[str, dict[str, np.ndarray]] = {}
    shifted: dict[str, np.ndarray] = {}  # Dice with shifted boxes, per variant
    # one seeded shift per test box, the same for every variant
    shift_boxes = ([shifted_boxes(s["box"], s["image"].shape, a.box_shift, repeats=1, seed=i)[0]
                    for i, s in enumerate(test)] if a.box_shift else None)
    extra_head = f" Dice {a.box_shift} px shift | p vs ours |" if a.box_shift else ""
    lines = [f"Budget: {len(train)} training boxes (folds 1-4), {a.epochs} epochs, levels {levels}; "
             f"test: first {len(test)} boxes of fold 5.", "",
             "| variant | Dice | JAC | HD | ASD | p Dice vs ours | p HD vs ours | train min |"
             + extra_head,
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if a.box_shift else "")]

    def shift_cells(name: str, seg) -> str:
        """Dice with the shifted boxes and its paired p against ours (empty without --box-shift)."""
        if shift_boxes is None:
            return ""
        masks = seg([s["image"] for s in test], shift_boxes)
        shifted[name] = np.array([segmentation_metrics(m, s["mask"])["dice"]
                                  for m, s in zip(masks, test)])
        ref = shifted.get("ours")
        p = (paired_ttest(shifted[name], ref)["p"]
             if ref is not None and name != "ours" else float("nan"))
        return f" {100 * shifted[name].mean():.2f} | {p:.2g} |"

    unknown = [n for n in a.variants.split(",") if n not in VARIANTS]
    if unknown:
        print(f"flip2d_ablation: unknown variant(s) {unknown}; choose from: {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    for name in a.variants.split(","):
        cfg = base.with_overrides(**VARIANTS[name])
        run = Path(a.out) / name.replace(" ", "_").replace("(", "").replace(")", "")
        if not (run / "classifier" / "classifier.pt").exists():
            shutil.copytree(ccfg_path, run / "classifier", dirs_exist_ok=True)
        ccfg = ClassifierConfig(**json.loads((ccfg_path / "classifier_config.json").read_text()))
        t0 = time.time()
        train_flip(train, [], cfg, ccfg, run, progress=False)
        minutes = (time.time() - t0) / 60
        model = FlipModel.load(run)
        res = model.segment_many([s["image"] for s in test], [s["box"] for s in test])
        m = [segmentation_metrics(r.mask, s["mask"]) for r, s in zip(res, test)]
        results[name] = {k: np.array([x[k] for x in m]) for k in ("dice", "jaccard", "hd", "asd")}
        ref = results.get("ours")
        r = results[name]
        pd = paired_ttest(r["dice"], ref["dice"])["p"] if ref is not None and name != "ours" else float("nan")
        ph = paired_ttest(r["hd"], ref["hd"])["p"] if ref is not None and name != "ours" else float("nan")
        cells = shift_cells(name, lambda ims, bxs, m=model: [x.mask for x in m.segment_many(ims, bxs)])
        lines.append(
            f"| {name} | {100 * r['dice'].mean():.2f}±{100 * r['dice'].std(ddof=1):.2f} | "
            f"{100 * r['jaccard'].mean():.2f} | {r['hd'].mean():.2f} | {r['asd'].mean():.2f} | "
            f"{pd:.2g} | {ph:.2g} | {minutes:.1f} |" + cells
        )
        print(lines[-1], flush=True)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "report_partial.md").write_text("\n".join(lines) + "\n")
    ell = get_segmenter("ellipse")
    m = [segmentation_metrics(ell.segment(s["image"], s["box"]), s["mask"]) for s in test]
    r = {k: np.array([x[k] for x in m]) for k in ("dice", "jaccard", "hd", "asd")}
    ref = results.get("ours")
    pd = paired_ttest(r["dice"], ref["dice"])["p"] if ref is not None else float("nan")
    ph = paired_ttest(r["hd"], ref["hd"])["p"] if ref is not None else float("nan")
    cells = shift_cells("inscribed ellipse", ell.segment_many)
    lines.append(
        f"| inscribed ellipse (floor, no training) | {100 * r['dice'].mean():.2f}±"
        f"{100 * r['dice'].std(ddof=1):.2f} | {100 * r['jaccard'].mean():.2f} | "
        f"{r['hd'].mean():.2f} | {r['asd'].mean():.2f} | {pd:.2g} | {ph:.2g} | 0 |" + cells
    )
    text = "\n".join(lines)
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
