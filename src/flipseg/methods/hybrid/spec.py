"""The hybrid dual decoder's registration (paper 004): ``hybrid`` and ``flipseg train hybrid``."""

from __future__ import annotations

from dataclasses import dataclass

from flipseg.registry import MethodSpec, register_method

__all__ = ["HybridOptions"]


@dataclass
class HybridOptions:
    """Inference-time options of ``hybrid``."""

    batch_size: int = 32
    """Images per network call."""


register_method(MethodSpec(
    name="hybrid", kind="image", dims=(2,),
    help="dual-decoder U-Net from a few masks + many boxes (whole image, no box needed)",
    factory="flipseg.methods.hybrid.predict:HybridSegmenter",
    config="flipseg.methods.hybrid.spec:HybridOptions",
    model="required", model_formats=("flipseg-hybrid-1",),
    model_files=("hybrid_model.safetensors",),
    recipe="hybrid",
    recipe_help="hybrid supervision: a few masks + many boxes, dual decoder (whole-image model)",
    add_train_args="flipseg.methods.hybrid.cli:add_hybrid_args",
    train="flipseg.methods.hybrid.cli:train_hybrid_cli", distributed=True,
    source=__name__,
))
