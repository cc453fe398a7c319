"""``flipseg train lanet``: argument parsing and the command itself.

Wire it into the ``train`` sub-commands with ``add_lanet_parser(tsub)`` and
dispatch ``args.recipe == "lanet"`` to ``train_lanet_cli(args)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods import common

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.lanet.config import LANetConfig

__all__ = ["LANET_DATASETS", "add_lanet_parser", "train_lanet_cli"]

#: Datasets ``flipseg train lanet`` reads (those carrying benign/malignant labels).
LANET_DATASETS = ("busi", "bus-bra", "folder", "phantom2d")


def add_lanet_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lanet`` recipe to the sub-parsers of ``flipseg train``; returns its parser."""
    p = subparsers.add_parser(
        "lanet", help="LA-Net: joint benign/malignant classification and lesion localization")
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

    name = common.check_recipe_args(args, LANET_DATASETS, "lanet", [
        (args.loc_fraction is not None and not 0 < args.loc_fraction <= 1,
         f"--loc-fraction must be in (0, 1], got {args.loc_fraction}"),
    ])
    cfg = _resolve_config(args)
    part, samples, _ = common.load_recipe_samples(args, name)
    samples = class_samples(samples)
    if not samples:
        raise FlipsegError(f"dataset {name!r} has no benign or malignant images")
    train_s, val_s = split_train_val(samples, cfg)
    out = Path(args.out)
    atomic_write_text(out / "data.json", json.dumps(
        {"dataset": name, "fold": args.fold, "part": part, "n_train": len(train_s), "n_val": len(val_s),
         "val_case_ids": [s["case_id"] for s in val_s]}, indent=1))
    print(f"training lanet on {len(train_s)} images ({len(val_s)} for validation, "
          f"loc_fraction={cfg.loc_fraction}) -> {out}")
    path = train_lanet(train_s, val_s, cfg, out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0
