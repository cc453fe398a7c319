"""``flipseg train hybrid``: argument parsing and the command itself.

Wire it into the ``train`` sub-commands with ``add_hybrid_parser(tsub)`` and
dispatch ``args.recipe == "hybrid"`` to ``train_hybrid_cli(args)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text

if TYPE_CHECKING:  # the CLI parser must not import PyTorch
    from flipseg.methods.hybrid.config import HybridConfig

__all__ = ["HYBRID_DATASETS", "add_hybrid_parser", "train_hybrid_cli"]

#: Datasets ``flipseg train hybrid`` reads (2D images with masks and boxes).
HYBRID_DATASETS = ("bus-bra", "busi", "folder", "phantom2d")
_MODES = ("hybrid", "strong-only", "weak-only", "vanilla-hybrid")  # = config.MODES, without torch


def add_hybrid_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``hybrid`` recipe to the sub-parsers of ``flipseg train``; returns its parser."""
    p = subparsers.add_parser(
        "hybrid", help="hybrid supervision: a few masks + many boxes, dual decoder (whole-image model)")
    p.add_argument("--dataset", default=None, help="bus-bra or busi (also: folder, phantom2d)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: ../shared/data/...)")
    p.add_argument("--fold", type=int, default=None,
                   help="BUS-BRA official fold held out as test (training uses its training part; "
                        "its validation part is scored after every epoch)")
    p.add_argument("--strong-fraction", type=float, default=None,
                   help="fraction of training images (by patient) that keep their mask, in (0, 1] "
                        "(default 0.1); the others keep only their box")
    p.add_argument("--mode", default=None,
                   help=f"{', '.join(_MODES)} (default hybrid; the others are the paper's baselines)")
    p.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one HybridConfig field, e.g. --set epochs=5 --set encoder=resnet34")
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --data-opt n=40 (phantom2d)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _resolve_config(args: argparse.Namespace) -> HybridConfig:
    """Saved config of the run folder (when resuming) with the command-line overrides on top."""
    from flipseg.methods.flip.pipeline import parse_overrides
    from flipseg.methods.hybrid.config import HybridConfig

    overrides = parse_overrides(args.set, HybridConfig, "hybrid")
    if args.strong_fraction is not None:
        overrides["strong_fraction"] = args.strong_fraction
    if args.mode is not None:
        overrides["mode"] = args.mode
    saved = Path(args.out) / "config.json"
    base: dict[str, Any] = {}
    if saved.exists():
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise FlipsegError(f"cannot read {saved}: {exc}") from None
    return HybridConfig.from_dict({**base, **overrides})


def train_hybrid_cli(args: argparse.Namespace) -> int:
    """Run ``flipseg train hybrid``; user mistakes raise one-line :class:`FlipsegError`."""
    from flipseg.commands import parse_data_opts
    from flipseg.data import load_dataset
    from flipseg.methods.hybrid.train import lesion_samples, train_hybrid

    name = (args.dataset or "").lower()
    if not name:
        raise FlipsegError(f"give --dataset ({', '.join(HYBRID_DATASETS)})")
    if name not in HYBRID_DATASETS:
        raise FlipsegError(f"unknown dataset {args.dataset!r} for hybrid; choose one of: "
                           f"{', '.join(HYBRID_DATASETS)}")
    if args.strong_fraction is not None and not 0 < args.strong_fraction <= 1:
        raise FlipsegError(f"--strong-fraction must be in (0, 1], got {args.strong_fraction}")
    if args.mode is not None and args.mode not in _MODES:
        raise FlipsegError(f"unknown --mode {args.mode!r}; choose one of: {', '.join(_MODES)}")
    if args.limit is not None and args.limit < 1:
        raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
    cfg = _resolve_config(args)
    opts = parse_data_opts(getattr(args, "data_opt", None) or [])
    if args.fold is not None:
        opts["fold"] = args.fold
    part = "train" if args.fold is not None else "all"
    errors: list = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, **opts)
    val: list = []
    if args.fold is not None:
        val = load_dataset(name, args.data_root, part="val", errors=errors, **opts)
    for case_id, msg in errors:
        print(f"skipped case {case_id}: {msg}")
    if args.limit is not None:
        samples, val = samples[: args.limit], val[: args.limit]
    samples = lesion_samples(samples)
    if len(samples) < 2:
        raise FlipsegError(f"dataset {name!r} has {len(samples)} image(s) with a lesion box; need >= 2")
    out = Path(args.out)
    atomic_write_text(out / "data.json", json.dumps(
        {"dataset": name, "fold": args.fold, "part": part, "n_train": len(samples), "n_val": len(val)},
        indent=1))
    print(f"training hybrid ({cfg.mode}, strong_fraction={cfg.strong_fraction}) on {len(samples)} "
          f"images ({len(val)} validation images scored) -> {out}")
    path = train_hybrid(samples, val, cfg, out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0
