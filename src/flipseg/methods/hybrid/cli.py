"""``flipseg train hybrid``: argument parsing and the command itself.

Registered in ``spec.py``: ``add_hybrid_args`` gives the options, ``train_hybrid_cli`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flipseg import runs
from flipseg.errors import FlipsegError
from flipseg.methods import common

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.hybrid.config import HybridConfig

__all__ = ["HYBRID_DATASETS", "add_hybrid_args", "train_hybrid_cli"]

#: Datasets ``flipseg train hybrid`` reads (2D images with masks and boxes).
HYBRID_DATASETS = ("bus-bra", "busi", "folder", "phantom2d")
_MODES = ("hybrid", "strong-only", "weak-only", "vanilla-hybrid")  # = config.MODES, without torch


def add_hybrid_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``flipseg train hybrid`` (its help line is in the method's spec)."""
    common.add_data_args(p, HYBRID_DATASETS,
                         "BUS-BRA official fold held out as test (training uses its training part; "
                         "its validation part is scored after every epoch)")
    p.add_argument("--strong-fraction", type=float, default=None,
                   help="fraction of training images (by patient) that keep their mask, in (0, 1] "
                        "(default 0.1); the others keep only their box")
    p.add_argument("--mode", default=None,
                   help=f"{', '.join(_MODES)} (default hybrid; the others are the paper's baselines)")
    common.add_run_args(p, "HybridConfig", "--set epochs=5 --set encoder=resnet34")
    return p


def _resolve_config(args: argparse.Namespace) -> HybridConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.hybrid.config import HybridConfig

    return common.resolve_run_config(HybridConfig, args, "hybrid",
                              {"strong_fraction": args.strong_fraction, "mode": args.mode})


def train_hybrid_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train hybrid``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.methods.hybrid.train import lesion_samples, train_hybrid

    name = runs.check_recipe_args(args, HYBRID_DATASETS, "hybrid", [
        (args.strong_fraction is not None and not 0 < args.strong_fraction <= 1,
         f"--strong-fraction must be in (0, 1], got {args.strong_fraction}"),
        (args.mode is not None and args.mode not in _MODES,
         f"unknown --mode {args.mode!r}; choose one of: {', '.join(_MODES)}"),
    ])
    cfg = _resolve_config(args)
    part, samples, val = runs.load_recipe_samples(args, name, with_val=True)
    samples = lesion_samples(samples)
    if len(samples) < 2:
        raise FlipsegError(f"dataset {name!r} has {len(samples)} image(s) with a lesion box; need >= 2")
    out = Path(args.out)
    runs.record_run_data(args, name, samples, part=part, n_train=len(samples), n_val=len(val))
    print(f"training hybrid ({cfg.mode}, strong_fraction={cfg.strong_fraction}) on {len(samples)} "
          f"images ({len(val)} validation images scored) -> {out}")
    path = train_hybrid(samples, val, cfg, out, progress=not args.no_progress,
                        device=common.train_device(args))
    print(f"model written to {path}")
    return 0
