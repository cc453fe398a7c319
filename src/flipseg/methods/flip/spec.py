"""Flip Learning's registration: ``flip`` (2D/3D), ``flip-grabcut`` (2D), ``flip2d-slices``
(3D, the 2D model slice by slice) and the ``flipseg train flip`` recipe."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from flipseg import runs
from flipseg.registry import MethodSpec, register_method

__all__ = ["FlipGrabCutOptions", "FlipOptions", "FlipSlicesOptions", "add_flip_args"]


@dataclass
class FlipOptions:
    """Inference-time options of ``flip`` (``--set`` on ``segment`` / ``evaluate``)."""

    batch_size: int = 64
    """Boxes erased together in one vectorised environment."""
    segments: Optional[int] = None
    """Superpixels per box at inference (None: the model's own level)."""
    prior_fusion: Optional[float] = None
    """Weight of the ellipse prior fused into the agents' mask, in [0, 1) (None: the model's)."""
    threads: int = 0
    """PyTorch threads at inference (0: torch's default, every core)."""


@dataclass
class FlipGrabCutOptions(FlipOptions):
    """Options of ``flip-grabcut``: Flip's, and GrabCut's start from the Flip mask."""

    refine_core: float = 0.3
    """The part of the Flip mask deeper than this fraction of its largest inscribed radius is
    certain foreground for GrabCut."""


@dataclass
class FlipSlicesOptions:
    """Options of ``flip2d-slices``."""

    batch_size: int = 64
    """Slices erased together."""
    prior_fusion: float = 0.0
    """Weight of the ellipse prior fused into each slice's mask."""


def add_flip_args(t: argparse.ArgumentParser) -> None:
    """The options of ``flipseg train flip``."""
    runs.add_box_recipe_args(t, "FlipConfig", "--set agents=2 --set levels=100,200",
                             "held-out boxes for validation")
    t.add_argument("--dims", type=int, choices=(2, 3), default=None,
                   help="2 (BUS images) or 3 (ABUS volumes, with the 3D CPU preset); default: "
                        "that of the dataset")
    t.add_argument("--config", default=None, help="JSON file of FlipConfig fields")
    t.add_argument("--preset", choices=("cpu", "paper"), default=None,
                   help="cpu (default: compact networks, our additions on) or paper (the "
                        "journal paper's settings; days of CPU time)")
    t.add_argument("--classifier-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one ClassifierConfig field, e.g. --classifier-set epochs=20")
    t.add_argument("--classifier-epochs", type=int, default=None)
    t.add_argument("--classifier-network", default=None, help="compact or resnet18")


register_method(MethodSpec(
    name="flip", kind="box", dims=(2, 3),
    help="Flip Learning: agents erase the lesion until a classifier calls the box normal",
    factory="flipseg.methods.flip.infer:FlipSegmenter",
    config="flipseg.methods.flip.spec:FlipOptions",
    model="optional", model_formats=("flipseg-flip-1",), model_files=("flip_model.safetensors",),
    default_model="flipseg.methods.flip.infer:default_model_path",
    recipe="flip", recipe_help="Flip Learning from boxes only",
    add_train_args="flipseg.methods.flip.spec:add_flip_args",
    train="flipseg.methods.flip.pipeline:train_flip_cli",
    default_for=(3,), source=__name__,
))

register_method(MethodSpec(
    name="flip-grabcut", kind="box", dims=(2,),
    help="Flip's mask refined by GrabCut started from it",
    factory="flipseg.methods.flip.infer:flip_grabcut",
    config="flipseg.methods.flip.spec:FlipGrabCutOptions",
    model="optional", source=__name__,
))

register_method(MethodSpec(
    name="flip2d-slices", kind="box", dims=(3,),
    help="a 2D Flip model run slice by slice through a volume",
    factory="flipseg.methods.flip.slices:FlipSlicesSegmenter",
    config="flipseg.methods.flip.spec:FlipSlicesOptions",
    model="optional", source=__name__,
))
