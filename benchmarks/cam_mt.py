"""Paper 002, Table II on BUSI: six U-Nets from one CAM image selection, scored by IoU.

One CAM classifier (tumor vs normal, image-level labels only) is trained on the
80% training part of a patient-level (near-duplicate group) 80/20 split of
BUSI; its CAMs select the subset L of the training tumor images V (ROIs at
alpha1 = 2.5% and alpha2 = 1%, IoU > 0.7); the box -> mask engine turns every
ROI into a pseudo mask. Six U-Nets are then trained and scored on the test
tumor images (tumor IoU, background IoU, mIoU, per-image means):
GT-Whole, GT-Subset, GT-MeanTeacher, Pseudo-Whole, Pseudo-Subset and
Pseudo-MeanTeacher (the method). Everything resumes from ``--out``.

    python benchmarks/cam_mt.py                                  # CPU preset, Flip Learning engine
    python benchmarks/cam_mt.py --engine sam --sam-checkpoint sam_vit_b_01ec64.pth
    python benchmarks/cam_mt.py --limit 80 --classifier-epochs 1 --epochs 1 --engine ellipse  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from flipseg.data import load_dataset
from flipseg.data.splits import split_by_patient
from flipseg.errors import FlipsegError
from flipseg.methods.cam_mt import TABLE_II_ROWS, CamMTConfig, paper_config, run_table_ii
from flipseg.methods.cam_mt.cli import subsample
from flipseg.methods.cam_mt.config import apply_overrides

#: The paper's Table II (tumor IoU, background IoU, mIoU; SAM pseudo labels, ResNet50 U-Net).
PAPER = {
    "GT-Whole": (67.9, 94.8, 81.3),
    "GT-Subset": (56.3, 93.9, 75.1),
    "GT-MeanTeacher": (64.0, 94.1, 79.0),
    "Pseudo-Whole": (48.5, 91.7, 70.1),
    "Pseudo-Subset": (35.2, 91.1, 63.1),
    "Pseudo-MeanTeacher": (56.3, 91.3, 73.8),
}
#: The paper's Table I: training tumor images V, selected L, unselected U.
PAPER_COUNTS = (518, 164, 354)


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def _config(a: argparse.Namespace) -> CamMTConfig:
    cfg = paper_config() if a.preset == "paper" else CamMTConfig()
    sets = list(a.set)
    if a.sam_checkpoint:
        sets += ["engine=sam", f"sam_checkpoint={a.sam_checkpoint}", f"sam_model_type={a.sam_model_type}"]
    elif a.engine:
        sets.append(f"engine={a.engine}")
    if a.engine_model:
        sets.append(f"engine_model={a.engine_model}")
    if a.classifier_epochs is not None:
        sets.append(f"classifier.epochs={a.classifier_epochs}")
    if a.epochs is not None:
        sets.append(f"mean_teacher.epochs={a.epochs}")
    sets.append(f"split_seed={a.split_seed}")
    cfg = apply_overrides(cfg, sets)
    if cfg.engine == "sam" and not cfg.sam_checkpoint:
        raise FlipsegError("--engine sam needs --sam-checkpoint PATH")
    return cfg


def report(result: dict, cfg: CamMTConfig, counts: dict, seconds: float) -> str:
    sel = result["selection"]
    lines = [
        f"### Paper 002 on BUSI ({counts['train']} training / {counts['test']} test images, "
        f"patient-level {100 * (1 - cfg.test_fraction):.0f}/{100 * cfg.test_fraction:.0f} split, "
        f"seed {cfg.split_seed})",
        "",
        f"Classifier: {cfg.classifier.variant} ({cfg.classifier.backbone}, {cfg.classifier.input_size} px, "
        f"{cfg.classifier.epochs} epochs); engine: {cfg.engine}; U-Net {cfg.mean_teacher.channels} at "
        f"{cfg.mean_teacher.image_size} px, {cfg.mean_teacher.epochs} epochs; {seconds / 60:.1f} min.",
        "",
        "| image selection | V (train tumors) | L (kept) | U | pseudo-mask IoU on L | on U |",
        "|---|---|---|---|---|---|",
        f"| ours | {sel['n_tumor']} | {sel['n_selected']} | {sel['n_unselected']} | "
        f"{_pct(sel['pseudo_iou_selected'])} | {_pct(sel['pseudo_iou_unselected'])} |",
        f"| paper (Table I) | {PAPER_COUNTS[0]} | {PAPER_COUNTS[1]} | {PAPER_COUNTS[2]} | - | - |",
        "",
        "| Table II row | labelled | unlabelled | tumor IoU | background IoU | mIoU | paper (SAM) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        p = PAPER[name]
        lines.append(f"| {name} | {r['n_labeled']} | {r['n_unlabeled']} | {_pct(r['tumor_iou'])} | "
                     f"{_pct(r['background_iou'])} | {_pct(r['miou'])} | {p[0]} / {p[1]} / {p[2]} |")
    lines.append("")
    if "Pseudo-MeanTeacher" in result["rows"]:
        ours = result["rows"]["Pseudo-MeanTeacher"]["tumor_iou"]
        lines.append(f"Pseudo-MeanTeacher tumor IoU with engine {cfg.engine}: {_pct(ours)}% "
                     f"(paper, with Segment Anything: 56.3%).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="BUSI folder (default: shared/data/BUSI)")
    ap.add_argument("--engine", default=None, help="box -> mask engine (default: flip)")
    ap.add_argument("--engine-model", default=None, help="model for the engine (flip/boxinst run or file)")
    ap.add_argument("--sam-checkpoint", default=None,
                    help="Segment Anything checkpoint (implies --engine sam)")
    ap.add_argument("--sam-model-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    ap.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    ap.add_argument("--limit", type=int, default=None, help="a seeded random subset of this many images")
    ap.add_argument("--classifier-epochs", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="U-Net epochs of every row")
    ap.add_argument("--rows", default=",".join(TABLE_II_ROWS), help="comma-separated Table II rows")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any CamMTConfig field, e.g. --set classifier.variant=cam")
    ap.add_argument("--out", default="runs/bench_cam_mt")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg = _config(a)
        errors: list = []
        samples = subsample(load_dataset("busi", a.data_root, errors=errors, include_normal=True),
                            a.limit, cfg.split_seed)
        train, test = split_by_patient(samples, (1 - cfg.test_fraction, cfg.test_fraction),
                                       seed=cfg.split_seed)
        for part, ss in (("train", train), ("test", test)):
            counts = sorted(Counter(s["label"] for s in ss).items())
            print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in counts))
        t0 = time.time()
        result = run_table_ii(train, test, cfg, a.out, rows=a.rows.split(","), progress=not a.no_progress)
    except FlipsegError as exc:
        print(f"cam_mt benchmark: error: {exc}", file=sys.stderr)
        return 2
    text = report(result, cfg, {"train": len(train), "test": len(test)}, time.time() - t0)
    print(text)
    out = Path(a.out)
    (out / "report.md").write_text(text + "\n")
    (out / "benchmark_args.json").write_text(json.dumps(vars(a), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
