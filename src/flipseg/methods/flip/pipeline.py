"""End-to-end Flip Learning training: classifier -> eraser sources -> agents.

``flipseg train flip`` calls :func:`train_flip_cli`; library users call
:func:`train_flip` with sample dicts. Only boxes are used for training; masks
of the held-out validation boxes (when present) are used to log a Dice curve,
never to train or to select the model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

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
from flipseg.methods.flip.infer import FlipModel, make_scorer
from flipseg.methods.flip.train import MODEL_FILE, BoxCase, FlipTrainer
from flipseg.metrics import compute_dice

__all__ = ["train_flip", "train_flip_cli", "parse_overrides", "box_cases"]


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
    scorer = make_scorer(net)
    train_cases = box_cases(train_samples, scorer, cfg, keep_masks=False)
    val_cases = box_cases(val_samples, scorer, cfg, keep_masks=True)
    trainer = FlipTrainer(
        cfg, scorer, run,
        classifier_state={"config": asdict(ccfg),
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


def parse_overrides(items: Sequence[str], cls: type = FlipConfig, what: str = "flip") -> dict[str, Any]:
    """``["agents=2", "levels=100,200"]`` -> typed overrides of the dataclass ``cls``."""
    from dataclasses import fields

    types = {f.name: f.type for f in fields(cls)}
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise FlipsegError(f"--set {item!r} must look like KEY=VALUE")
        key, val = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in types:
            raise FlipsegError(
                f"unknown {what} option {key!r}; known: {', '.join(sorted(types))}"
            )
        t = str(types[key])
        try:
            if "tuple" in t:
                out[key] = tuple(int(v) for v in val.split(","))
            elif "bool" in t:
                if val.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(val)
                out[key] = val.lower() in ("1", "true", "yes", "on")
            elif "int" in t and "float" not in t:
                out[key] = int(val)
            elif "float" in t:
                out[key] = float(val)
            else:
                out[key] = val
        except ValueError:
            raise FlipsegError(f"--set {item!r}: {val!r} is not a valid {t}") from None
    return out


def train_flip_cli(args: argparse.Namespace) -> int:
    from flipseg.methods.common import hold_out_boxes, read_box_cases

    samples, dataset = read_box_cases(args)
    data_dims = int(np.ndim(samples[0]["image"]))
    dims = getattr(args, "dims", None) or data_dims
    if dims != data_dims:
        raise FlipsegError(f"--dims {dims} but dataset {dataset!r} holds {data_dims}D images")
    # a config file is complete; otherwise start from the preset of these dims
    preset = getattr(args, "preset", None) or "cpu"
    cfg = FlipConfig.load(args.config) if args.config else default_config(dims, preset)
    cfg = cfg.with_overrides(**parse_overrides(args.set))
    saved = Path(args.out) / "config.json"
    resuming = saved.exists() and not args.config and not args.set
    if resuming:
        cfg = FlipConfig.load(saved)  # resuming: keep the run's own configuration
    if cfg.dims != data_dims:
        raise FlipsegError(
            f"the configuration is for {cfg.dims}D images but dataset {dataset!r} holds "
            f"{data_dims}D images"
        )
    saved_c = Path(args.out) / "classifier" / "classifier_config.json"
    if resuming and saved_c.exists() and not getattr(args, "classifier_set", None):
        ccfg = ClassifierConfig.from_dict(json.loads(saved_c.read_text()))
    else:
        cpre = dict(CLASSIFIER_3D_PRESET) if cfg.dims == 3 else {}
        if preset == "paper":
            cpre.update(CLASSIFIER_PAPER_PRESET)
        cpre.update(seed=cfg.seed, input_size=cfg.classifier_size, margin=cfg.margin,
                    dims=cfg.dims)
        cpre.update(parse_overrides(getattr(args, "classifier_set", None) or [],
                                    ClassifierConfig, "classifier"))
        ccfg = ClassifierConfig(**cpre)
    if args.classifier_epochs is not None:
        ccfg.epochs = args.classifier_epochs
    if args.classifier_network:
        ccfg.network = args.classifier_network
    train_s, val_s = hold_out_boxes(args, samples, dataset, cfg.seed, "Flip Learning")
    path = train_flip(train_s, val_s, cfg, ccfg, args.out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0
