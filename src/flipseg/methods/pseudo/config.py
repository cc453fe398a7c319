"""The pseudo-mask U-Net recipe's one configuration (saved as ``config.json`` in every run)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from flipseg.errors import FlipsegError
from flipseg.methods.common import RecipeConfig

__all__ = ["AUGMENTATIONS", "NORMALIZATIONS", "PseudoConfig", "budget_count", "parse_budget"]

AUGMENTATIONS = ("none", "flip")
NORMALIZATIONS = ("none", "percentile")


def parse_budget(text: str) -> tuple[str, float]:
    """``"30"`` -> ``("count", 30)``, ``"5%"`` -> ``("percent", 5.0)``, ``"all"`` -> ``("all", 0)``.

    Raises
    ------
    FlipsegError
        Not ``N`` (an integer >= 1), ``P%`` (0 < P <= 100) or ``all``.
    """
    t = str(text).strip().lower()
    if t == "all":
        return "all", 0.0
    try:
        if t.endswith("%"):
            p = float(t[:-1])
            if not (math.isfinite(p) and 0 < p <= 100):
                raise ValueError(t)
            return "percent", p
        n = int(t)
        if n < 1:
            raise ValueError(t)
        return "count", float(n)
    except ValueError:
        raise FlipsegError(f"masks budget {text!r} must be N (>= 1), P% (0 < P <= 100) or all") from None


def budget_count(text: str, n_available: int) -> int:
    """How many real masks the budget ``text`` gives out of ``n_available`` candidates.

    ``P%`` rounds to the nearest image, at least 1; ``all`` = every candidate.

    Raises
    ------
    FlipsegError
        A bad budget, or a count larger than ``n_available``.
    """
    kind, value = parse_budget(text)
    if kind == "all":
        return n_available
    n = int(value) if kind == "count" else max(1, int(round(value / 100.0 * n_available)))
    if n > n_available:
        raise FlipsegError(f"masks budget {text!r} asks for {n} masks but only {n_available} training "
                           f"images have one")
    return n


@dataclass
class PseudoConfig(RecipeConfig):
    """Every knob of pseudo-mask U-Net training and inference (paper 000, Table 4; CPU defaults)."""

    # ------------------------------------------------------------------- labels
    masks_budget: str = "5%"
    """Real masks used: ``N`` images, ``P%`` of the training images, or ``all`` (the fully
    supervised upper bound). Chosen by patient with ``seed``."""
    pseudo: str = "flip"
    """Box -> mask segmenter (a registered name: ``flip``, ``ellipse``, ``grabcut``, ``box``,
    ...) giving the pseudo mask of every other training image; ``none``: train on the real
    masks alone."""
    pseudo_model: str = ""
    """``model=`` of the pseudo-mask segmenter (a run folder or model file; empty = its default,
    e.g. the shipped Flip model)."""
    refresh_every: int = 10
    """Every this many epochs (not after the last one) each pseudo label is replaced by the
    model's own prediction inside the image's box; 0 = never. Real masks never change."""

    # ------------------------------------------------------------------ network
    input_size: int = 128
    """Whole images are resized (bilinear) to ``input_size`` squared."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """U-Net widths per level (full size: 32,64,128,256,512)."""
    encoder: str = "compact"
    """``compact``, ``resnet18``, ``resnet34`` or ``resnet50``: a U-Net on flipseg's ResNet-style
    encoder (:class:`flipseg.networks.unet.ResUNet`; ``input_size`` a multiple of 32);
    ``none``: the MONAI U-Net of ``channels`` (the default before the pretrained backbone;
    docs/backbone.md compares them). Model files saved without this field are ``none``."""
    backbone_weights: str = "auto"
    """Initial weights of that encoder: ``auto`` (flipseg's own pretrained weights where the
    layout has them, i.e. ``compact``; random otherwise), ``shipped``, ``none`` (random) or a
    backbone file (:mod:`flipseg.networks.backbone`)."""
    num_res_units: int = 1
    normalize: str = "none"
    """Image intensities: ``none`` (value / 255) or ``percentile`` (1st-99th percentile of
    the image stretched to 0-1)."""

    # ----------------------------------------------------------------- training
    epochs: int = 50
    min_steps_per_epoch: int = 20
    """An epoch is one pass over the training images but at least this many batches
    (seeded re-shuffles), so a handful of real masks alone still gets trained."""
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    """Loss = BCE + ``dice_weight`` * soft Dice loss."""
    augment: str = "flip"
    """``none`` or ``flip`` (random horizontal flips)."""

    # ---------------------------------------------------------------- inference
    threshold: float = 0.5
    """Probability -> mask threshold (also for the refreshed pseudo labels)."""
    fill_holes: bool = True
    largest_component: bool = True
    """Keep only the largest connected component of a predicted mask (inference only)."""

    seed: int = 0
    """Seeds the weights, the real-mask subset, batch order and augmentation."""
    num_threads: int = 0
    """Torch CPU threads (0 = leave torch's default)."""

    option_word = "pseudo"

    #: A configuration saved before ``encoder`` existed is the MONAI U-Net it was trained
    #: as, from random weights (:meth:`RecipeConfig.migrate`).
    legacy_values: ClassVar[dict[str, str]] = {"encoder": "none", "backbone_weights": "none"}

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.masks_budget = str(self.masks_budget).strip().lower()
        self.pseudo = str(self.pseudo).strip().lower()
        parse_budget(self.masks_budget)
        levels = 2 ** (len(self.channels) - 1)
        self.check_options({
            "input_size": (self.input_size >= 16 and self.input_size % levels == 0
                           and (self.encoder == "none" or self.input_size % 32 == 0),
                           f">= 16 and a multiple of {levels if self.encoder == 'none' else 32}"),
            "channels": (len(self.channels) >= 2 and min(self.channels) >= 1, "two or more widths"),
            "num_res_units": (self.num_res_units >= 0, ">= 0"),
            "encoder": (self.encoder in ("none", "compact", "resnet18", "resnet34", "resnet50"),
                        "none, compact, resnet18, resnet34 or resnet50"),
            "normalize": (self.normalize in NORMALIZATIONS, " or ".join(NORMALIZATIONS)),
            "epochs": (self.epochs >= 1, ">= 1"),
            "refresh_every": (self.refresh_every >= 0, ">= 0"),
            "min_steps_per_epoch": (self.min_steps_per_epoch >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 2, ">= 2 (batch norm)"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "dice_weight": (self.dice_weight >= 0, ">= 0"),
            "augment": (self.augment in AUGMENTATIONS, " or ".join(AUGMENTATIONS)),
            "threshold": (0 < self.threshold < 1, "in (0, 1)"),
            "num_threads": (self.num_threads >= 0, ">= 0"),
        })
