"""End-to-end Flip Learning training: classifier -> eraser sources -> agents.

``flipseg train flip`` calls :func:`train_flip_cli`; library users call
:func:`train_flip` with sample dicts. Only boxes are used for training; masks
of the held-out validation boxes (when present) are used to log a Dice curve,
never to train or to select the model.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from flipseg import runs
from flipseg.devices import resolve_device
from flipseg.errors import FlipsegError
from flipseg.methods.flip.classifier import (
    CLASSIFIER_3D_PRESET,
    CLASSIFIER_PAPER_PRESET,
    ClassifierConfig,
    train_classifier,
)
from flipseg.methods.flip.config import FlipConfig, default_config
from flipseg.methods.flip.curriculum import level_for_epoch
from flipseg.methods.flip.eraser import choose_eraser_sources
from flipseg.methods.flip.infer import FlipModel
from flipseg.methods.flip.train import MODEL_FILE, BoxCase, FlipTrainer
from flipseg.metrics import compute_dice

__all__ = ["box_cases", "train_flip", "train_flip_cli"]


def box_cases(samples: Sequence[dict], scorer, cfg: FlipConfig, *, keep_masks: bool) -> list[BoxCase]:
    """Choose every box's eraser source (one batched classifier pass per chunk)."""
    usable = [s for s in samples if s.get("box") is not None]
    cases: list[BoxCase] = []
    for start in range(0, len(usable), 256):
        chunk = usable[start : start + 256]
        sources = choose_eraser_sources(
            [s["image"] for s in chunk], [s["box"] for s in chunk], scorer,
            mode=cfg.eraser, margin=cfg.margin, size=cfg.classifier_size,
        )
        for s, src in zip(chunk, sources):
            cases.append(BoxCase(
                case_id=s["case_id"], image=s["image"], box=s["box"], source=src[0],
                mask=s.get("mask") if keep_masks else None,
            ))
    return cases


def train_flip(
    train_samples: Sequence[dict],
    val_samples: Sequence[dict],
    cfg: FlipConfig,
    ccfg: ClassifierConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
) -> Path:
    """Train the classifier and the agents; returns the path of the model file."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, cfg.num_threads))
    cfg.save(run / "config.json")
    classifier, report = train_classifier(
        list(train_samples), list(val_samples), ccfg, run / "classifier", progress=progress
    )
    net = classifier.network
    scorer = classifier.scorer()  # on the classifier's device; scores come back to the CPU
    train_cases = box_cases(train_samples, scorer, cfg, keep_masks=False)
    val_cases = box_cases(val_samples, scorer, cfg, keep_masks=True)
    trainer = FlipTrainer(
        cfg, scorer, run,
        classifier_state={"config": {**asdict(ccfg), "device": "cpu"},
                          "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                          "report": report},
        progress=progress,
    )

    def validate(epoch: int) -> dict[str, float]:
        with_mask = [c for c in val_cases if c.mask is not None]
        if not with_mask:
            return {}
        model = FlipModel(cfg, trainer.agent.q_network.state_dict(), trainer.classifier_state)
        lv = cfg.levels[level_for_epoch(cfg, epoch)]
        res = model.segment_many([c.image for c in with_mask], [c.box for c in with_mask],
                                 level=lv)
        d = [compute_dice(r.mask, c.mask) for r, c in zip(res, with_mask)]
        return {"val_dice": float(np.mean(d))}

    trainer.fit(train_cases, validate=validate)
    return run / MODEL_FILE


def _device_flag(args: argparse.Namespace, sets: Sequence[str]) -> str | None:
    """``--device`` (default ``auto``), resolved; None when it is not given and ``sets``
    (``--set`` / ``--classifier-set``) name a ``device`` of their own."""
    given = getattr(args, "device", None)
    if given is None and any(s.split("=", 1)[0].strip() == "device" for s in sets):
        return None
    return resolve_device(given or "auto")


def train_flip_cli(args: argparse.Namespace) -> int:
    """``flipseg train flip``: the configuration is resolved as everywhere (preset < the run
    folder's saved config < ``--config`` < ``--set``, :func:`flipseg.runs.resolve_config`)."""
    samples, dataset = runs.read_box_cases(args)
    data_dims = int(np.ndim(samples[0]["image"]))
    dims = getattr(args, "dims", None) or data_dims
    if dims != data_dims:
        raise FlipsegError(f"--dims {dims} but dataset {dataset!r} holds {data_dims}D images")
    preset = getattr(args, "preset", None) or "cpu"
    out = Path(args.out)
    cfg = runs.resolve_config(FlipConfig, preset=default_config(dims, preset).to_dict(),
                              saved=out / "config.json", file=args.config, overrides=args.set,
                              flags={"device": _device_flag(args, args.set)}, what="flip")
    cfg = cfg.with_overrides(device=resolve_device(cfg.device))
    if cfg.dims != data_dims:
        raise FlipsegError(
            f"the configuration is for {cfg.dims}D images but dataset {dataset!r} holds "
            f"{data_dims}D images"
        )
    cpre = dict(CLASSIFIER_3D_PRESET) if cfg.dims == 3 else {}
    if preset == "paper":
        cpre.update(CLASSIFIER_PAPER_PRESET)
    cpre.update(seed=cfg.seed, input_size=cfg.classifier_size, margin=cfg.margin, dims=cfg.dims)
    ccfg = runs.resolve_config(
        ClassifierConfig, preset=cpre, saved=out / "classifier" / "classifier_config.json",
        overrides=getattr(args, "classifier_set", None) or [], what="classifier",
        flags={"epochs": args.classifier_epochs, "network": args.classifier_network,
               "device": _device_flag(args, getattr(args, "classifier_set", None) or [])})
    ccfg.device = resolve_device(ccfg.device)
    train_s, val_s = runs.hold_out_boxes(args, samples, dataset, cfg.seed, "Flip Learning")
    path = train_flip(train_s, val_s, cfg, ccfg, args.out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0
