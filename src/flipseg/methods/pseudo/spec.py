"""The pseudo-label U-Net's registration: ``pseudo-unet`` and ``flipseg train pseudo``."""

from __future__ import annotations

from dataclasses import dataclass

from flipseg.registry import MethodSpec, register_method

__all__ = ["PseudoUNetOptions"]


@dataclass
class PseudoUNetOptions:
    """Inference-time options of ``pseudo-unet``."""

    batch_size: int = 32
    """Images per network call."""
    restrict_to_box: bool = False
    """Cut the whole-image mask to the box, when a box is given."""


register_method(MethodSpec(
    name="pseudo-unet", kind="image", dims=(2,),
    help="U-Net trained on a few masks + box pseudo masks (whole image, no box needed)",
    factory="flipseg.methods.pseudo.model:PseudoUNetSegmenter",
    config="flipseg.methods.pseudo.spec:PseudoUNetOptions",
    model="required", model_formats=("flipseg-pseudo-unet-1",),
    model_files=("pseudo_model.safetensors",),
    recipe="pseudo",
    recipe_help="U-Net on a few real masks + pseudo masks from boxes (Flip, ellipse, ...)",
    add_train_args="flipseg.methods.pseudo.cli:add_pseudo_args",
    train="flipseg.methods.pseudo.cli:train_pseudo_cli", distributed=True,
    source=__name__,
))
