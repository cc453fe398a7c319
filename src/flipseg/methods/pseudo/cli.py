"""``flipseg train pseudo``: argument parsing and the command itself.

Wire it into the ``train`` sub-commands with ``add_pseudo_parser(tsub)`` and
dispatch ``args.recipe == "pseudo"`` to ``train_pseudo_cli(args)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.pseudo.config import PseudoConfig

__all__ = ["PSEUDO_DATASETS", "add_pseudo_parser", "train_pseudo_cli"]

#: Datasets ``flipseg train pseudo`` reads (2D images with boxes and masks).
PSEUDO_DATASETS = ("bus-bra", "busi", "folder", "phantom2d")


def add_pseudo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``pseudo`` recipe to the sub-parsers of ``flipseg train``; returns its parser."""
    p = subparsers.add_parser(
        "pseudo", help="U-Net on a few real masks + pseudo masks from boxes (Flip, ellipse, ...)")
    p.add_argument("--dataset", default=None, help="bus-bra or busi (also: folder, phantom2d)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: ../shared/data/...)")
    p.add_argument("--fold", type=int, default=None,
                   help="BUS-BRA official fold held out as test (training uses the other folds)")
    p.add_argument("--masks-budget", default=None, metavar="N|P%|all",
                   help="real masks: N images, P%% of the training images, or all (default 5%%)")
    p.add_argument("--pseudo", default=None, metavar="METHOD",
                   help="box -> mask method for the other images: flip, ellipse, grabcut, box, ... "
                        "or none (default flip)")
    p.add_argument("--pseudo-model", default=None,
                   help="model of the pseudo-mask method (default: the shipped Flip model)")
    p.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one PseudoConfig field, e.g. --set epochs=20 --set input_size=96")
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --data-opt n=40 (phantom2d)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _resolve_config(args: argparse.Namespace) -> PseudoConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.flip.pipeline import parse_overrides
    from flipseg.methods.pseudo.config import PseudoConfig

    overrides = parse_overrides(args.set, PseudoConfig, "pseudo")
    for flag, key in (("masks_budget", "masks_budget"), ("pseudo", "pseudo"),
                      ("pseudo_model", "pseudo_model")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    saved = Path(args.out) / "config.json"
    base: dict[str, Any] = {}
    if saved.exists():
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise FlipsegError(f"cannot read {saved}: {exc}".splitlines()[0]) from None
    return PseudoConfig.from_dict({**base, **overrides})


def train_pseudo_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train pseudo``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.commands import parse_data_opts
    from flipseg.data import load_dataset
    from flipseg.methods.pseudo.config import budget_count
    from flipseg.methods.pseudo.train import lesion_samples, make_pseudo_engine, train_pseudo

    name = (args.dataset or "").lower()
    if not name:
        raise FlipsegError(f"give --dataset ({', '.join(PSEUDO_DATASETS)})")
    if name not in PSEUDO_DATASETS:
        raise FlipsegError(f"unknown dataset {args.dataset!r} for pseudo; choose one of: "
                           f"{', '.join(PSEUDO_DATASETS)}")
    if args.limit is not None and args.limit < 1:
        raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
    cfg = _resolve_config(args)
    if cfg.pseudo != "none":
        make_pseudo_engine(cfg.pseudo, cfg.pseudo_model)  # fail before loading any data
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
    samples = lesion_samples(samples)
    if not samples:
        raise FlipsegError(f"dataset {name!r} (part {part!r}) has no image with a lesion box")
    n_masked = sum(s.get("mask") is not None for s in samples)
    n_real = budget_count(cfg.masks_budget, n_masked)
    out = Path(args.out)
    atomic_write_text(out / "data.json", json.dumps(
        {"dataset": name, "fold": args.fold, "part": part, "n_train": len(samples),
         "n_masked": n_masked}, indent=1))
    print(f"training pseudo-unet on {len(samples)} images: {n_real} real masks "
          f"(budget {cfg.masks_budget}), pseudo masks by {cfg.pseudo} -> {out}")
    path = train_pseudo(samples, cfg, out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0
