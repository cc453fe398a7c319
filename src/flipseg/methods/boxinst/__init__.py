"""Box-supervised U-Net with BoxInst's projection and pairwise losses (``boxinst``)."""

from flipseg.methods.boxinst.losses import (
    mask_loss,
    pairwise_affinity,
    pairwise_loss,
    projection_loss,
)
from flipseg.methods.boxinst.model import (
    BoxInstConfig,
    BoxInstModel,
    BoxInstSegmenter,
    train_boxinst,
)

__all__ = [
    "BoxInstConfig",
    "BoxInstModel",
    "BoxInstSegmenter",
    "mask_loss",
    "pairwise_affinity",
    "pairwise_loss",
    "projection_loss",
    "train_boxinst",
]
