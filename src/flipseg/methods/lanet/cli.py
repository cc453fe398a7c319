"""``flipseg train lanet`` and ``flipseg classify``: argument parsing and the commands.

Registered in ``spec.py``: ``add_lanet_args`` gives the options, ``train_lanet_cli`` runs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipseg import runs
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods import common

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.lanet.config import LANetConfig

__all__ = ["LANET_DATASETS", "add_lanet_args", "classify_cli", "train_lanet_cli"]

#: Datasets ``flipseg train lanet`` reads (those carrying benign/malignant labels).
LANET_DATASETS = ("busi", "bus-bra", "folder", "phantom2d")


def add_lanet_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``flipseg train lanet`` (its help line is in the method's spec)."""
    common.add_data_args(p, LANET_DATASETS)
    p.add_argument("--loc-fraction", type=float, default=None,
                   help="fraction of training images that keep their location label, in (0, 1] "
                        "(default 1.0: all)")
    common.add_run_args(p, "LANetConfig", "--set stage2_epochs=5 --set backbone=resnet18")
    return p


def _resolve_config(args: argparse.Namespace) -> LANetConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.lanet.config import LANetConfig

    return common.resolve_run_config(LANetConfig, args, "lanet", {"loc_fraction": args.loc_fraction})


def train_lanet_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train lanet``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.methods.lanet.train import class_samples, split_train_val, train_lanet

    name = runs.check_recipe_args(args, LANET_DATASETS, "lanet", [
        (args.loc_fraction is not None and not 0 < args.loc_fraction <= 1,
         f"--loc-fraction must be in (0, 1], got {args.loc_fraction}"),
    ])
    cfg = _resolve_config(args)
    part, samples, _ = runs.load_recipe_samples(args, name)
    samples = class_samples(samples)
    if not samples:
        raise FlipsegError(f"dataset {name!r} has no benign or malignant images")
    train_s, val_s = split_train_val(samples, cfg)
    out = Path(args.out)
    runs.record_run_data(args, name, samples, part=part, n_train=len(train_s), n_val=len(val_s),
                         val_case_ids=[s["case_id"] for s in val_s])
    print(f"training lanet on {len(train_s)} images ({len(val_s)} for validation, "
          f"loc_fraction={cfg.loc_fraction}) -> {out}")
    path = train_lanet(train_s, val_s, cfg, out, progress=not args.no_progress,
                       device=common.train_device(args))
    print(f"model written to {path}")
    return 0


def classify_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg classify``: benign/malignant probabilities, lesion map and Grad-CAM.

    Writes per image ``<case>_lesion.png`` (the lesion mask over the image, with the
    ground truth in green when known), ``<case>_lesion_map.png`` (the lesion
    probability map) and ``<case>_gradcam.png`` (Grad-CAM of the predicted class),
    and for all images ``predictions.csv``; with true benign/malignant labels also
    ``metrics.json`` (accuracy, precision, recall, F1, AUC; malignant = positive).
    """
    import numpy as np

    from flipseg.data.folder import read_any_image
    from flipseg.methods.lanet.predict import CLASS_NAMES, LANetModel
    from flipseg.methods.training import write_log
    from flipseg.metrics import compute_classification_metrics
    from flipseg.runs import load_cases
    from flipseg.viz import heat_overlay, overlay, save_png

    model = LANetModel.load(args.model)
    if args.image:
        image, _, _ = read_any_image(args.image)
        if np.ndim(image) != 2:
            raise FlipsegError(f"LA-Net classifies 2D images; {args.image} is {np.ndim(image)}D")
        cases: list[dict[str, Any]] = [{"case_id": Path(args.image).stem, "image": image}]
    elif args.dataset:
        cases, errors, _ = load_cases(args)
        for cid, msg in errors:
            print(f"skipped case {cid}: {msg}")
        cases = [c for c in cases if np.ndim(c["image"]) == 2]
        if not cases:
            raise FlipsegError(f"dataset {args.dataset!r} has no 2D image")
    else:
        raise FlipsegError("give --image IMG or --dataset NAME")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    step = 32
    for start in range(0, len(cases), step):
        chunk = cases[start:start + step]
        images = [c["image"] for c in chunk]
        preds = model.predict(images)
        cams = model.gradcam(images) if args.gradcam else [None] * len(chunk)
        for c, p, cam in zip(chunk, preds, cams):
            cid = str(c["case_id"])
            gt = c.get("mask")
            save_png(out / f"{cid}_lesion.png", overlay(c["image"], p.mask, gt=gt))
            save_png(out / f"{cid}_lesion_map.png", heat_overlay(c["image"], p.lesion_map))
            if cam is not None:
                save_png(out / f"{cid}_gradcam.png", heat_overlay(c["image"], cam))
            true = c.get("label")
            rows.append({"case_id": cid, "true_label": true if true in CLASS_NAMES else "",
                         "predicted": p.label, "p_benign": f"{p.probabilities[0]:.4f}",
                         "p_malignant": f"{p.probabilities[1]:.4f}"})
        print(f"classified {min(start + step, len(cases))}/{len(cases)}", flush=True)
    write_log(out / "predictions.csv", rows)
    known = [r for r in rows if r["true_label"]]
    if len({r["true_label"] for r in known}) == 2:
        m = compute_classification_metrics([r["true_label"] == "malignant" for r in known],
                                           [float(r["p_malignant"]) for r in known])
        m["n"] = len(known)
        atomic_write_text(out / "metrics.json", json.dumps(m, indent=2))
        print(f"{len(known)} labelled images: " + ", ".join(
            f"{k} {v:.3f}" for k, v in m.items() if k != "n"))
    if len(rows) == 1:
        r = rows[0]
        print(f"{r['case_id']}: {r['predicted']} (p_malignant {r['p_malignant']})")
    print(f"wrote {len(rows)} prediction(s) to {out}")
    return 0
