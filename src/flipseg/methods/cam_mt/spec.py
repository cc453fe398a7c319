"""CAM selection + Mean Teacher's registration (paper 002): ``cam-mt`` (a whole-image U-Net
from image-level tags), ``sam`` (Segment Anything with a box prompt, one of its engines) and
``flipseg train cam-mt``."""

from __future__ import annotations

from dataclasses import dataclass

from flipseg.registry import MethodSpec, register_method

__all__ = ["CamMTOptions", "SamOptions"]


@dataclass
class CamMTOptions:
    """Inference-time options of ``cam-mt``."""

    batch_size: int = 16
    """Images per network call."""


@dataclass
class SamOptions:
    """Options of ``sam`` (its checkpoint is ``--model``)."""

    model_type: str = "vit_b"
    """The checkpoint's architecture: vit_b, vit_l or vit_h."""
    multimask: bool = False
    """Ask SAM for three masks and keep the best-scored one."""


register_method(MethodSpec(
    name="cam-mt", kind="image", dims=(2,),
    help="Mean Teacher U-Net trained from image-level tags (whole image, no box needed)",
    factory="flipseg.methods.cam_mt.mean_teacher:CamMTSegmenter",
    config="flipseg.methods.cam_mt.spec:CamMTOptions",
    model="required", model_formats=("flipseg-cam-mt-1",),
    model_files=("cam_mt_model.safetensors", "mean_teacher/cam_mt_model.safetensors"),
    recipe="cam-mt",
    recipe_help="segmentation from image-level labels: CAM image selection, pseudo masks from a "
                "box engine, Mean Teacher U-Net (paper 002)",
    add_train_args="flipseg.methods.cam_mt.cli:add_cam_mt_args",
    train="flipseg.methods.cam_mt.cli:train_cam_mt_cli", distributed=True,
    source=__name__,
))

register_method(MethodSpec(
    name="sam", kind="box", dims=(2,),
    help="Segment Anything with a box prompt (pip install 'flipseg[sam]' + torchvision; "
         "checkpoint as --model)",
    factory="flipseg.methods.cam_mt.engines:sam_segmenter",
    config="flipseg.methods.cam_mt.spec:SamOptions",
    model="required", source=__name__,
))
