"""``flipseg train cam-mt``: the image-selection + Mean Teacher recipe on BUSI.

Registered in ``spec.py``: ``add_cam_mt_args`` gives the options, ``train_cam_mt_cli``
runs it.

The command reads BUSI with its normal images, splits it 80/20 by patient
(near-duplicate group), trains on the 80% from image-level labels only and
scores the 20% tumor images. Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from flipseg import runs
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods.cam_mt.config import CamMTConfig, apply_overrides, paper_config

__all__ = ["add_cam_mt_args", "resolve_config", "subsample", "train_cam_mt_cli"]


def add_cam_mt_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``flipseg train cam-mt`` (its help line is in the method's spec)."""
    p.add_argument("--data-root", default=None,
                   help="BUSI folder (benign/, malignant/, normal/); default: $FLIPSEG_DATA/BUSI "
                        "or shared/data/BUSI")
    p.add_argument("--engine", default=None, metavar="NAME",
                   help="box -> mask engine for the pseudo masks: sam, flip (default), ellipse, "
                        "grabcut, ... (any `flipseg evaluate --method` name)")
    p.add_argument("--sam-checkpoint", default=None, metavar="PATH",
                   help="Segment Anything checkpoint; implies --engine sam (needs "
                        "`pip install segment-anything`)")
    p.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set classifier.epochs=5 "
                        "--set mean_teacher.image_size=96 --set selection.alpha1=2.5")
    p.add_argument("--preset", choices=("cpu", "paper"), default=None,
                   help="cpu (default: compact networks, 128 px) or paper (ResNet50 at 224 px, 60 "
                        "epochs: days of CPU time)")
    p.add_argument("--limit", type=int, default=None,
                   help="use a random (seeded) subset of this many images, for a quick look")
    p.add_argument("--no-progress", action="store_true")
    return p


def resolve_config(args: argparse.Namespace) -> CamMTConfig:
    """Preset (or the run folder's saved config, or the defaults), ``--set``, then the engine flags."""
    saved = Path(args.out) / "config.json"
    if args.preset == "paper":
        cfg = paper_config()
    elif args.preset is None and saved.exists():
        cfg = CamMTConfig.from_dict(json.loads(saved.read_text()))
    else:
        cfg = CamMTConfig()
    cfg = apply_overrides(cfg, args.set)
    if args.sam_checkpoint is not None:
        if args.engine not in (None, "sam"):
            raise FlipsegError(f"--sam-checkpoint is for --engine sam, not --engine {args.engine}")
        cfg = apply_overrides(cfg, ["engine=sam", f"sam_checkpoint={args.sam_checkpoint}"])
    elif args.engine is not None:
        cfg = apply_overrides(cfg, [f"engine={args.engine}"])
    if cfg.engine == "sam" and cfg.sam_checkpoint is None:
        raise FlipsegError("--engine sam needs --sam-checkpoint PATH")
    return cfg


def subsample(samples: list[dict[str, Any]], n: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` samples drawn with ``seed`` (all when n is None), in their input order."""
    if n is None or n >= len(samples):
        return list(samples)
    if n < 1:
        raise FlipsegError(f"--limit {n} must be at least 1")
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:n])
    return [samples[i] for i in keep]


def train_cam_mt_cli(args: argparse.Namespace) -> int:
    """``flipseg train cam-mt``: train on 80% of BUSI by patient, score the other 20%."""
    from flipseg.data import load_dataset
    from flipseg.data.splits import split_by_patient
    from flipseg.methods.cam_mt.pipeline import run_cam_mt

    cfg = resolve_config(args)
    errors: list[tuple[str, str]] = []
    samples = load_dataset("busi", args.data_root, errors=errors, include_normal=True)
    for case_id, msg in errors:
        print(f"skipped case {case_id}: {msg}")
    samples = subsample(samples, args.limit, cfg.split_seed)
    train, test = split_by_patient(samples, (1 - cfg.test_fraction, cfg.test_fraction), seed=cfg.split_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.fold = None
    runs.record_run_data(args, "busi", samples, part="all", n_train=len(train), n_test=len(test))
    atomic_write_text(out / "split.json", json.dumps(
        {"train": [s["case_id"] for s in train], "test": [s["case_id"] for s in test]}, indent=2))
    print(f"cam-mt: {len(train)} training images ({len(test)} held out), engine {cfg.engine} -> {out}")
    summary = run_cam_mt(train, cfg, out, test_samples=test, progress=not args.no_progress,
                         device=getattr(args, "device", None) or "auto")
    print(f"selection kept {summary['n_selected']} of {summary['n_tumor']} training tumor images")
    if summary.get("test"):
        t = summary["test"]
        print(f"test ({t['n']} tumor images): tumor IoU {t['tumor_iou']:.3f}, background IoU "
              f"{t['background_iou']:.3f}, mIoU {t['miou']:.3f}")
    print(f"model: {out / 'mean_teacher'} (use it with: flipseg segment --model {out} --image IMG --out DIR)")
    return 0
