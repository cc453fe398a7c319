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

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.lanet.config import LANetConfig

__all__ = ["LANET_DATASETS", "add_lanet_parser", "train_lanet_cli"]

#: Datasets ``flipseg train lanet`` reads (those carrying benign/malignant labels).
LANET_DATASETS = ("busi", "bus-bra", "folder", "phantom2d")


def add_lanet_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lanet`` recipe to the sub-parsers of ``flipseg train``; returns its parser."""
    p = subparsers.add_parser(
        "lanet", help="LA-Net: joint benign/malignant classification and lesion localization")
    p.add_argument("--dataset", default=None, help="busi or bus-bra (also: folder, phantom2d)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: ../shared/data/...)")
    p.add_argument("--fold", type=int, default=None,
                   help="BUS-BRA official fold held out as test (training uses the other folds)")
    p.add_argument("--loc-fraction", type=float, default=None,
                   help="fraction of training images that keep their location label, in (0, 1] "
                        "(default 1.0: all)")
    p.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one LANetConfig field, e.g. --set stage2_epochs=5 --set backbone=resnet18")
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --data-opt n=40 (phantom2d)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _resolve_config(args: argparse.Namespace) -> LANetConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.flip.pipeline import parse_overrides
    from flipseg.methods.lanet.config import LANetConfig

    overrides = parse_overrides(args.set, LANetConfig, "lanet")
    if args.loc_fraction is not None:
        overrides["loc_fraction"] = args.loc_fraction
    saved = Path(args.out) / "config.json"
    base: dict[str, Any] = {}
    if saved.exists():
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise FlipsegError(f"cannot read {saved}: {exc}") from None
    return LANetConfig.from_dict({**base, **overrides})


def train_lanet_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train lanet``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.commands import parse_data_opts
    from flipseg.data import load_dataset
    from flipseg.methods.lanet.train import class_samples, split_train_val, train_lanet

    name = (args.dataset or "").lower()
    if not name:
        raise FlipsegError(f"give --dataset ({', '.join(LANET_DATASETS)})")
    if name not in LANET_DATASETS:
        raise FlipsegError(f"unknown dataset {args.dataset!r} for lanet; choose one of: "
                           f"{', '.join(LANET_DATASETS)}")
    if args.loc_fraction is not None and not 0 < args.loc_fraction <= 1:
        raise FlipsegError(f"--loc-fraction must be in (0, 1], got {args.loc_fraction}")
    if args.limit is not None and args.limit < 1:
        raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
    cfg = _resolve_config(args)
    part = "train" if args.fold is not None else "all"
    opts = parse_data_opts(getattr(args, "data_opt", None) or [])
    if args.fold is not None:
        opts["fold"] = args.fold
    errors: list = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, **opts)
    for case_id, msg in errors:
        print(f"skipped case {case_id}: {msg}")
    if args.limit is not None:
        samples = samples[: args.limit]
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
