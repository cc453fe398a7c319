"""How well CAM classifiers localise BUSI tumors, before any pseudo mask is made.

Paper 002's pipeline stands on its tumor-vs-normal classifier: the image
selection and the box prompts come from its class activation maps. This
benchmark trains one classifier per variant on the training part of the same
patient-level 80/20 split as ``benchmarks/cam_mt.py`` (image-level labels only)
and reports, per variant:

- test accuracy and AUC of tumor vs normal (the 20 % part);
- on the training tumor images V (what the selection sees): pointing (the CAM's
  peak lies inside the lesion mask), the IoU of the broader ROI (alpha1) with the
  lesion's bounding box, how many images the selection rule keeps, and the ROI
  IoU on those kept images.

Masks are read only to score. ``--variant NAME=KEY=VALUE;KEY=VALUE`` adds a variant
(``classifier.`` options, e.g. ``pooling=lse;convs_per_block=2``).

    python benchmarks/cam_classifier.py
    python benchmarks/cam_classifier.py --variant "deep=convs_per_block=2" --epochs 30
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flipseg.boxes import Box
from flipseg.data import load_dataset
from flipseg.data.splits import split_by_patient
from flipseg.errors import FlipsegError
from flipseg.methods.cam_mt import CamMTConfig
from flipseg.methods.cam_mt.cams import (
    TUMOR,
    _inputs,
    compute_cams,
    is_tumor,
    load_cam_classifier_model,
    select_image,
    train_cam_classifier,
)
from flipseg.methods.cam_mt.config import apply_overrides
from flipseg.metrics import compute_classification_metrics

#: name -> ``classifier.`` overrides (pooling spelt out: the default changed from avg to max
#: after this study, which is the table in docs/cam_mt.md).
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "avg pooling": ["pooling=avg"],
    "cam (one branch)": ["variant=cam", "pooling=avg"],
    "lse pooling": ["pooling=lse"],
    "2 convs per block": ["convs_per_block=2", "pooling=avg"],
    "augment": ["augment=true", "pooling=avg"],
    "2 convs + lse + augment": ["convs_per_block=2", "pooling=lse", "augment=true"],
    "2 convs + max": ["convs_per_block=2", "pooling=max"],
    "3 convs": ["convs_per_block=3", "pooling=avg"],
}


def _parse_variant(text: str) -> tuple[str, list[str]]:
    if "=" not in text:
        raise FlipsegError(f"--variant {text!r} must look like NAME=KEY=VALUE;KEY=VALUE")
    name, rest = text.split("=", 1)
    return name, [kv for kv in rest.split(";") if kv]


def score_variant(model, train, test) -> dict[str, float]:
    """Classification on ``test``; localisation and selection on the tumor images of ``train``."""
    probs = []
    with torch.no_grad():
        for i in range(0, len(test), 32):
            x = _inputs([s["image"] for s in test[i:i + 32]], model.cfg.input_size)
            probs.append(torch.softmax(model(x), 1)[:, TUMOR].numpy())
    p = np.concatenate(probs)
    y = np.array([is_tumor(s) for s in test])
    tumor = [s for s in train if is_tumor(s) and s.get("mask") is not None]
    cams = compute_cams(model, [s["image"] for s in tumor])
    point, roi_iou, kept, kept_iou = [], [], 0, []
    for s, cam in zip(tumor, cams):
        mask = np.asarray(s["mask"]) > 0
        point.append(bool(mask.flat[int(np.argmax(cam))]))
        sel = select_image(cam)
        iou = sel.roi1.iou(Box.from_mask(mask)) if sel.roi1 is not None else 0.0
        roi_iou.append(iou)
        if sel.selected:
            kept += 1
            kept_iou.append(iou)
    cls = compute_classification_metrics(y.astype(int), p)
    return {"accuracy": cls["accuracy"], "auc": cls["auc"],
            "pointing": float(np.mean(point)), "roi_iou": float(np.mean(roi_iou)),
            "kept": kept, "n_tumor": len(tumor),
            "kept_roi_iou": float(np.mean(kept_iou)) if kept_iou else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="BUSI folder (default: shared/data/BUSI)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE;...",
                    help="an extra variant (its name is added to --variants)")
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs of every variant")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_cam_classifier")
    a = ap.parse_args(argv)
    try:
        variants = dict(VARIANTS)
        names = [n for n in a.variants.split(",") if n]
        for text in a.variant:
            name, sets = _parse_variant(text)
            variants[name] = sets
            names.append(name)
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise FlipsegError(f"unknown variant(s) {unknown}; choose from {', '.join(variants)}")
        samples = load_dataset("busi", a.data_root, include_normal=True)
        base = apply_overrides(CamMTConfig(), [f"split_seed={a.split_seed}"])
        train, test = split_by_patient(samples, (1 - base.test_fraction, base.test_fraction),
                                       seed=base.split_seed)
        lines = ["| variant | test acc | test AUC | pointing | ROI1 IoU | kept | ROI1 IoU kept | min |",
                 "|---|---|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for name in names:
            sets = [f"classifier.{kv}" for kv in variants[name]]
            if a.epochs is not None:
                sets.append(f"classifier.epochs={a.epochs}")
            cfg = apply_overrides(base, sets).classifier
            t0 = time.time()
            run = Path(a.out) / name.replace(" ", "_").replace("(", "").replace(")", "")
            model = load_cam_classifier_model(train_cam_classifier(train, cfg, run, progress=False))
            r = score_variant(model, train, test)
            lines.append(f"| {name} | {r['accuracy']:.3f} | {r['auc']:.3f} | {r['pointing']:.3f} | "
                         f"{r['roi_iou']:.3f} | {r['kept']}/{r['n_tumor']} | {r['kept_roi_iou']:.3f} | "
                         f"{(time.time() - t0) / 60:.1f} |")
            print(lines[-1], flush=True)
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / "report.md").write_text("\n".join(lines) + "\n")
    except FlipsegError as exc:
        print(f"cam_classifier benchmark: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
