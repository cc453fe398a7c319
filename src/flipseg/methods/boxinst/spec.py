"""BoxInst's registration: the box-prompted U-Net ``boxinst`` and ``flipseg train boxinst``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from flipseg import runs
from flipseg.registry import MethodSpec, register_method

__all__ = ["BoxInstOptions", "add_boxinst_args"]


@dataclass
class BoxInstOptions:
    """Inference-time options of ``boxinst``."""

    batch_size: int = 64
    """Boxes per network call."""


def add_boxinst_args(p: argparse.ArgumentParser) -> None:
    """The options of ``flipseg train boxinst``."""
    runs.add_box_recipe_args(p, "BoxInstConfig", "--set epochs=10 --set supervision=pseudo",
                             "held-out boxes (their masks, when known, give the validation Dice)")


register_method(MethodSpec(
    name="boxinst", kind="box", dims=(2,),
    help="box-prompted U-Net trained from boxes (BoxInst projection + pairwise losses)",
    factory="flipseg.methods.boxinst.model:BoxInstSegmenter",
    config="flipseg.methods.boxinst.spec:BoxInstOptions",
    model="optional", model_formats=("flipseg-boxinst-1",),
    model_files=("boxinst_model.safetensors",),
    recipe="boxinst",
    recipe_help="box-supervised U-Net (BoxInst projection + pairwise losses; --set "
                "supervision=pseudo fits it to flip-vote's masks of the boxes, supervision=mask "
                "to the true masks)",
    add_train_args="flipseg.methods.boxinst.spec:add_boxinst_args",
    train="flipseg.methods.boxinst.model:train_boxinst_cli", distributed=True,
    source=__name__,
))
