"""The hybrid-supervision recipe's one configuration (saved as ``config.json`` in every run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flipseg.methods.common import RecipeConfig
from flipseg.networks.hybrid import ENCODERS

__all__ = ["AUGMENTATIONS", "MODES", "HybridConfig"]

#: Training modes (see :class:`HybridConfig.mode`).
MODES = ("hybrid", "strong-only", "weak-only", "vanilla-hybrid")
AUGMENTATIONS = ("none", "flip")


@dataclass
class HybridConfig(RecipeConfig):
    """Every knob of hybrid-supervised training and inference (paper 004; defaults sized for a CPU)."""

    # ------------------------------------------------------------------- mode
    mode: str = "hybrid"
    """``hybrid`` (ours: dual decoder; masks of the strong subset train the
    segmentation decoder, reversed boxes train the background decoder);
    ``strong-only`` (single decoder, the strong subset's masks only);
    ``weak-only`` (single decoder, every training image's box as a filled
    rectangle, no mask); ``vanilla-hybrid`` (single decoder, masks of the strong
    subset and box rectangles of the weak subset used alike, i.e. "directly
    training with a mix of strong and weak labels")."""
    strong_fraction: float = 0.1
    """Fraction of training images (chosen by patient with ``seed``) that keep their
    mask; the others keep only their box. Ignored by ``weak-only``."""

    # ---------------------------------------------------------------- network
    encoder: str = "compact"
    """``compact`` (1 basic block per stage, 16-128 channels), ``resnet18``, ``resnet34``
    (the paper's layout, 64-512 channels) or ``resnet50`` (bottleneck blocks)."""
    backbone_weights: str = "auto"
    """Initial encoder weights: ``auto`` (flipseg's own pretrained encoder where one is
    shipped for ``encoder``, i.e. compact; else random), ``shipped``, ``none`` (random, as
    the tables of docs/hybrid.md were measured) or a backbone file / run folder
    (:mod:`flipseg.networks.backbone`). ``auto`` measured better on every row it was run
    on (docs/backbone.md)."""
    input_size: int = 128
    """Whole images are resized (bilinear) to ``input_size`` squared; a multiple of
    32 (the paper uses 352)."""
    disentangle: bool = True
    """Feature disentanglement (FD): split the deepest features by channel, one 1x1
    conv per half, lesion half to Dec_s, other half to Dec_a. Off: both get ``f``."""
    spatial_prompt: bool = True
    """Spatial prompting module (SPM): Dec_s reads ``f_r * (1 - background map)``."""
    prompt_detach: bool = False
    """Stop the segmentation loss's gradient at the uncertainty map (the paper does not
    say; off lets Dec_s's loss shape Dec_a as well)."""

    # ------------------------------------------------------------------ losses
    perception_loss: bool = True
    """Uncertain-area perception loss ``1 - TN / (TN + FP)`` on the background branch (PL)."""
    perception_weight: float = 1.0
    """Weight of the perception loss (Eq. 3 uses 1)."""
    aux_on_strong: bool = True
    """Strong images train the background decoder too, with the reversed box of their
    mask (boxes come free with masks); off: only the weak subset's boxes do."""
    ppa_kernel: int = 15
    """Window (odd, pixels of the network input) of the pixel-position-aware weight
    ``1 + gamma * |avgpool(y) - y|``; F3Net uses 31 at 352 px."""
    ppa_gamma: float = 5.0
    """gamma of the pixel-position-aware weight (F3Net: 5)."""

    # --------------------------------------------------------------- training
    epochs: int = 30
    """Passes over the training images (the paper: 50)."""
    batch_size: int = 8
    """Images per step (the paper: 8); steps with fewer than 2 images are skipped."""
    strong_per_batch: int = 0
    """``hybrid``/``vanilla-hybrid``: when > 0, every batch holds this many strong
    images (drawn in turn from a shuffled strong list) and ``batch_size`` minus that
    many weak ones; 0 = a plain shuffle of all training images (the paper)."""
    lr: float = 1e-3
    """Initial Adam learning rate (the paper: 1e-4 with a pre-trained encoder; ours
    starts from random weights)."""
    poly_power: float = 0.9
    """Poly decay: ``lr * (1 - epoch / epochs) ** poly_power``, set at each epoch start."""
    weight_decay: float = 0.0
    augment: str = "flip"
    """``none`` or ``flip`` (random horizontal and vertical flips, as in the paper)."""
    threshold: float = 0.5
    """Lesion probability -> mask threshold."""
    seed: int = 0
    """Seeds the weights, the strong subset, batch order and augmentation."""
    num_threads: int = 0
    """Torch CPU threads (0 = leave torch's default)."""

    option_word = "hybrid"

    def __post_init__(self) -> None:
        ENCODERS.get(self.encoder)  # unknown name -> FlipsegError listing the valid ones
        self.check_options({
            "mode": (self.mode in MODES, ", ".join(MODES)),
            "strong_fraction": (0 < self.strong_fraction <= 1, "in (0, 1]"),
            "input_size": (self.input_size >= 32 and self.input_size % 32 == 0, "a multiple of 32"),
            "perception_weight": (self.perception_weight >= 0, ">= 0"),
            "ppa_kernel": (self.ppa_kernel >= 1 and self.ppa_kernel % 2 == 1, "odd and >= 1"),
            "ppa_gamma": (self.ppa_gamma >= 0, ">= 0"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 2, ">= 2 (batch norm)"),
            "strong_per_batch": (0 <= self.strong_per_batch < self.batch_size, "in [0, batch_size)"),
            "lr": (self.lr > 0, "> 0"),
            "poly_power": (self.poly_power >= 0, ">= 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "augment": (self.augment in AUGMENTATIONS, " or ".join(AUGMENTATIONS)),
            "threshold": (0 < self.threshold < 1, "in (0, 1)"),
            "num_threads": (self.num_threads >= 0, ">= 0"),
        })

    @property
    def dual(self) -> bool:
        """The dual-decoder network (``mode="hybrid"``); the baselines use one decoder."""
        return self.mode == "hybrid"

    @property
    def uses_masks(self) -> bool:
        """Whether any training mask is used (all modes but ``weak-only``)."""
        return self.mode != "weak-only"

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`flipseg.networks.hybrid.HybridNet`."""
        return {"dual": self.dual, "disentangle": self.disentangle, "spatial_prompt": self.spatial_prompt,
                "prompt_detach": self.prompt_detach}
