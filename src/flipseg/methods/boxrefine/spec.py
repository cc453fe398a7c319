"""The box refiner's registration: ``box-refiner`` (rough box -> tight box, for
``--refine-box``) and ``flipseg train box-refiner``."""

from __future__ import annotations

import argparse

from flipseg import runs
from flipseg.registry import MethodSpec, register_method

__all__ = ["add_box_refiner_args"]


def add_box_refiner_args(p: argparse.ArgumentParser) -> None:
    """The options of ``flipseg train box-refiner``."""
    runs.add_box_recipe_args(p, "BoxRefineConfig", "--set epochs=10",
                             "held-out boxes, shifted, for the validation edge error")


register_method(MethodSpec(
    name="box-refiner", kind="refiner", dims=(2,),
    help="box refiner: a small CNN that moves each edge of a rough box to the lesion",
    factory="flipseg.methods.boxrefine.model:load_refiner",
    model="optional", model_formats=("flipseg-boxrefine-1",),
    model_files=("boxrefine_model.safetensors",),
    recipe="box-refiner",
    recipe_help="box refiner: learns to tighten rough boxes (for --refine-box), from boxes only",
    add_train_args="flipseg.methods.boxrefine.spec:add_box_refiner_args",
    train="flipseg.methods.boxrefine.model:train_box_refiner_cli", source=__name__,
))
