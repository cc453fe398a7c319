"""The LA-Net recipe's one configuration (saved as ``config.json`` in every run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flipseg.methods.common import RecipeConfig
from flipseg.networks.lanet import BACKBONES

__all__ = ["AUGMENTATIONS", "LOCATION_LABELS", "LANetConfig"]

AUGMENTATIONS = ("none", "flip", "paper")
LOCATION_LABELS = ("mask", "box")


@dataclass
class LANetConfig(RecipeConfig):
    """Every knob of LA-Net training and inference (paper 003; defaults sized for a CPU)."""

    # ---------------------------------------------------------------- network
    backbone: str = "compact"
    """Feature extractor: ``compact`` (1 basic block per stage, 16-128 channels),
    ``resnet18`` or ``resnet50`` (MONAI ResNets, random init)."""
    backbone_weights: str = "none"
    """Initial feature-extractor weights: ``none`` (random), ``shipped`` (flipseg's own
    pretrained encoder, ``flipseg train backbone``; compact only) or a backbone file / run
    folder (:func:`flipseg.networks.backbone.load_backbone_into_resnet`)."""
    input_size: int = 128
    """Images are resized (bilinear) to ``input_size`` squared; a multiple of 32
    (the paper uses 256)."""
    channel_attention: bool = True
    """CBAM channel attention (CAM) on every stage in the LA-Net."""
    spatial_attention: bool = True
    """CBAM spatial attention (SAM) on every stage in the LA-Net."""
    mask_attention: bool = True
    """Mask attention (MAM) in the classifier: ``f + f * lesion_map``; off: ``f``."""
    cbam_reduction: int = 16
    """Channel-attention MLP reduction ratio (CBAM's r)."""
    spatial_kernel: int = 7
    """Spatial-attention convolution size (odd)."""
    map_stage: int = 4
    """Stage (1-4) whose resolution the lesion map has; 4 = the last one, as in the paper."""
    dropout: float = 0.0
    """Dropout before the classifier's linear layer."""

    # ------------------------------------------------------------------- data
    loc_fraction: float = 1.0
    """Fraction of training images (chosen by patient, with ``seed``) that keep
    their location label; the others only have their class label."""
    location_label: str = "mask"
    """``mask`` (the lesion mask, its box as a filled rectangle when no mask is
    known) or ``box`` (always the box as a filled rectangle)."""
    val_fraction: float = 0.15
    """Patient-level share of the training cases held out for validation (0 = none)."""
    augment: str = "flip"
    """``none``; ``flip`` (random horizontal flips); ``paper`` (random 90-degree
    rotations, horizontal and vertical flips, brightness/contrast jitter)."""

    # --------------------------------------------------------------- training
    stage1_epochs: int = 10
    """Stage 1: FEX + LA-Net on location-labelled images only (0 skips it)."""
    stage2_epochs: int = 20
    """Stage 2: everything, all images, hybrid loss."""
    batch_size: int = 16
    lr: float = 1e-3
    """Adam learning rate (both stages)."""
    weight_decay: float = 0.0
    lam: float = 0.5
    """lambda of Eq. 7: ``lam * L_cls + (1 - lam) * (L_loc + alpha * L_loc_pseudo)``."""
    alpha: float = 0.1
    """Weight of the pseudo-label localization loss (Eq. 7)."""
    tau: float = 0.8
    """An image without a location label gets a pseudo label (its own lesion map > 0.5)
    only when its top class probability exceeds ``tau``."""
    threshold: float = 0.5
    """Lesion map -> mask threshold (Eq. 3), also used to binarize pseudo labels."""
    seed: int = 0
    """Seeds the weights, the labelled subset, the validation split, batch order and augmentation."""
    num_threads: int = 0
    """Torch CPU threads (0 = leave torch's default)."""

    option_word = "lanet"

    def __post_init__(self) -> None:
        BACKBONES.get(self.backbone)  # unknown name -> FlipsegError listing the valid ones
        self.check_options({
            "input_size": (self.input_size >= 32 and self.input_size % 32 == 0, "a multiple of 32"),
            "cbam_reduction": (self.cbam_reduction >= 1, ">= 1"),
            "spatial_kernel": (self.spatial_kernel >= 1 and self.spatial_kernel % 2 == 1, "odd"),
            "map_stage": (1 <= self.map_stage <= 4, "1-4"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
            "loc_fraction": (0 < self.loc_fraction <= 1, "in (0, 1]"),
            "location_label": (self.location_label in LOCATION_LABELS, " or ".join(LOCATION_LABELS)),
            "val_fraction": (0 <= self.val_fraction < 1, "in [0, 1)"),
            "augment": (self.augment in AUGMENTATIONS, ", ".join(AUGMENTATIONS)),
            "stage1_epochs": (self.stage1_epochs >= 0, ">= 0"),
            "stage2_epochs": (self.stage2_epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 2, ">= 2 (batch norm)"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "lam": (0 <= self.lam <= 1, "in [0, 1]"),
            "alpha": (0 <= self.alpha <= 1, "in [0, 1]"),
            "tau": (0 <= self.tau <= 1, "in [0, 1]"),
            "threshold": (0 < self.threshold < 1, "in (0, 1)"),
            "num_threads": (self.num_threads >= 0, ">= 0"),
        })

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`flipseg.networks.lanet.LANet`."""
        return {
            "channel_attention": self.channel_attention,
            "spatial_attention": self.spatial_attention,
            "mask_attention": self.mask_attention,
            "reduction": self.cbam_reduction,
            "kernel_size": self.spatial_kernel,
            "map_stage": self.map_stage,
            "dropout": self.dropout,
        }
