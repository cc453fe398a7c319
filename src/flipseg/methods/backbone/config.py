"""Configuration of ``flipseg train backbone`` (saved as ``config.json`` in the run)."""

from __future__ import annotations

from dataclasses import dataclass

from flipseg.methods.common import RecipeConfig
from flipseg.networks.hybrid import ENCODERS

__all__ = ["BackboneConfig"]


@dataclass
class BackboneConfig(RecipeConfig):
    """Multi-task pretraining of the shared encoder from boxes and image labels.

    Three heads on one :class:`~flipseg.networks.hybrid.ResNetEncoder`: a U-Net decoder
    that draws the box's inscribed ellipse (a dense target from the box alone), a linear
    benign/malignant classifier and a linear box regressor (the box's corners as fractions
    of the image), all on the whole image resized to ``input_size``. No mask is used, so
    a backbone never learns from the masks a semi-supervised table pretends not to have.
    """

    encoder: str = "compact"
    """``compact`` (16-128 channels, shipped), ``resnet18``, ``resnet34`` or ``resnet50``
    (bottleneck blocks)."""
    input_size: int = 128
    """Whole images resized to this square (a multiple of 32)."""
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    """Adam, cosine decay to 0 over ``epochs``."""
    weight_decay: float = 1e-4
    seg_weight: float = 1.0
    """Weight of the ellipse map's BCE + soft-Dice loss."""
    cls_weight: float = 0.5
    """Weight of the benign/malignant cross-entropy (images without a label skip it)."""
    box_weight: float = 2.0
    """Weight of the box corners' smooth-L1 loss."""
    ssl_weight: float = 0.0
    """Weight of a self-supervised contrastive term (SimCLR-style NT-Xent): two random
    views of each image (crop 60-100 % of the side, flip, gamma, contrast) must find each
    other among the batch's views. 0 = off; with the other three weights at 0 the
    pretraining is self-supervised alone. docs/backbone.md compares them."""
    ssl_temperature: float = 0.2
    augment: bool = True
    """Random horizontal flips, gamma and contrast changes."""
    seed: int = 0
    num_threads: int = 0
    """Torch CPU threads (0 = torch's default)."""

    option_word = "backbone"

    def __post_init__(self) -> None:
        ENCODERS.get(self.encoder)
        self.check_options({
            "input_size": (self.input_size >= 32 and self.input_size % 32 == 0,
                           "a multiple of 32, >= 32"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 2, ">= 2"),
            "lr": (self.lr > 0, "> 0"),
            "ssl_weight": (self.ssl_weight >= 0, ">= 0"),
            "ssl_temperature": (self.ssl_temperature > 0, "> 0"),
            "seg_weight": (min(self.seg_weight, self.cls_weight, self.box_weight) >= 0
                           and self.seg_weight + self.cls_weight + self.box_weight
                           + self.ssl_weight > 0,
                           ">= 0, and one of seg/cls/box/ssl weights > 0"),
        })
