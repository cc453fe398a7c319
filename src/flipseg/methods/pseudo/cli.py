"""``flipseg train pseudo``: its options and the command itself (registered in ``spec.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flipseg import runs
from flipseg.errors import FlipsegError
from flipseg.methods import common

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.pseudo.config import PseudoConfig

__all__ = ["PSEUDO_DATASETS", "add_pseudo_args", "train_pseudo_cli"]

#: Datasets ``flipseg train pseudo`` reads (2D images with boxes and masks).
PSEUDO_DATASETS = ("bus-bra", "busi", "folder", "phantom2d")


def add_pseudo_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``flipseg train pseudo`` (its help line is in the method's spec)."""
    common.add_data_args(p, PSEUDO_DATASETS)
    p.add_argument("--masks-budget", default=None, metavar="N|P%|all",
                   help="real masks: N images, P%% of the training images, or all (default 5%%)")
    p.add_argument("--pseudo", default=None, metavar="METHOD",
                   help="box -> mask method for the other images: flip, ellipse, grabcut, box, ... "
                        "or none (default flip)")
    p.add_argument("--pseudo-model", default=None,
                   help="model of the pseudo-mask method (default: the shipped Flip model)")
    common.add_run_args(p, "PseudoConfig", "--set epochs=20 --set input_size=96")
    return p


def _resolve_config(args: argparse.Namespace) -> PseudoConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.pseudo.config import PseudoConfig

    return common.resolve_run_config(PseudoConfig, args, "pseudo", {
        k: getattr(args, k, None) for k in ("masks_budget", "pseudo", "pseudo_model")})


def train_pseudo_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train pseudo``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.methods.pseudo.config import budget_count
    from flipseg.methods.pseudo.train import lesion_samples, make_pseudo_engine, train_pseudo

    name = runs.check_recipe_args(args, PSEUDO_DATASETS, "pseudo")
    cfg = _resolve_config(args)
    if cfg.pseudo != "none":
        make_pseudo_engine(cfg.pseudo, cfg.pseudo_model)  # fail before loading any data
    part, samples, _ = runs.load_recipe_samples(args, name)
    samples = lesion_samples(samples)
    if not samples:
        raise FlipsegError(f"dataset {name!r} (part {part!r}) has no image with a lesion box")
    n_masked = sum(s.get("mask") is not None for s in samples)
    n_real = budget_count(cfg.masks_budget, n_masked)
    out = Path(args.out)
    runs.record_run_data(args, name, samples, part=part, n_train=len(samples), n_masked=n_masked)
    print(f"training pseudo-unet on {len(samples)} images: {n_real} real masks "
          f"(budget {cfg.masks_budget}), pseudo masks by {cfg.pseudo} -> {out}")
    path = train_pseudo(samples, cfg, out, progress=not args.no_progress,
                        device=common.train_device(args))
    print(f"model written to {path}")
    return 0
