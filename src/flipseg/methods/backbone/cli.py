"""``flipseg train backbone``: options and the command (registered in ``spec.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flipseg import runs
from flipseg.errors import FlipsegError
from flipseg.methods import common

__all__ = ["BACKBONE_DATASETS", "add_backbone_args", "evaluation_ids", "train_backbone_cli"]

BACKBONE_DATASETS = ("bus-bra", "folder", "coco", "phantom2d")


def add_backbone_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    common.add_data_args(p, BACKBONE_DATASETS,
                         "BUS-BRA official fold held out (pretraining reads its training part "
                         "minus its validation part; --fold 5 = folds 1-4)")
    p.add_argument("--exclude-ids", default=None, metavar="FILE",
                   help="more evaluation case ids (one per line) that must not be pretrained on")
    common.add_run_args(p, "BackboneConfig", "--set epochs=10 --set encoder=resnet18")
    return p


def evaluation_ids(args: argparse.Namespace) -> dict[str, set[str]]:
    """The evaluation sets pretraining must not touch: BUS-BRA fold 5's test images (when
    BUS-BRA is at hand; ids read from its index, no image decoded) and ``--exclude-ids``."""
    from flipseg.data import load_dataset

    sets: dict[str, set[str]] = {}
    root = args.data_root if (args.dataset or "").lower() == "bus-bra" else None
    try:
        test = load_dataset("bus-bra", root, part="test", fold=5, lazy=True)
        sets["BUS-BRA fold 5"] = {str(s["case_id"]) for s in test}
    except FlipsegError:
        if (args.dataset or "").lower() == "bus-bra":
            raise
    if args.exclude_ids:
        path = Path(args.exclude_ids)
        if not path.is_file():
            raise FlipsegError(f"--exclude-ids file not found: {path}")
        sets[path.name] = {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}
    return sets


def train_backbone_cli(args: argparse.Namespace) -> int:
    from flipseg.methods.backbone.config import BackboneConfig
    from flipseg.methods.backbone.train import check_overlap, train_backbone

    name = runs.check_recipe_args(args, BACKBONE_DATASETS, "backbone")
    cfg = common.resolve_run_config(BackboneConfig, args, "backbone")
    part, samples, val = runs.load_recipe_samples(args, name, with_val=True)
    held = {str(s["case_id"]) for s in val}
    train = [s for s in samples if str(s["case_id"]) not in held and s.get("box") is not None]
    overlap = check_overlap([s["case_id"] for s in train + list(val)], evaluation_ids(args))
    runs.record_run_data(args, name, train, part=part, n_train=len(train), n_val=len(val))
    print(f"pretraining the {cfg.encoder} backbone on {len(train)} images of {name} "
          f"({len(val)} held out to score it; none of "
          f"{', '.join(overlap['checked']) or 'no evaluation set'} used) -> {args.out}")
    path = train_backbone(train, val, cfg, args.out, overlap=overlap,
                          data_record={"dataset": name, "fold": args.fold, "part": part,
                                       "n_train": len(train)},
                          progress=not args.no_progress, device=common.train_device(args))
    print(f"backbone written to {path}")
    return 0
