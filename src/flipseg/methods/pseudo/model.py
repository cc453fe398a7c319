"""A trained pseudo-mask U-Net: whole image in, lesion mask out (no box needed).

>>> model = PseudoUNetModel.load("runs/pseudo_flip5")     # run folder or model file
>>> mask = model.predict(image)                          # bool, image.shape
>>> masks = model.predict_many(images, batch_size=32)    # batched

``flipseg evaluate --method pseudo-unet --model RUN`` scores it through the segmenter
registry: the registry hands every method a box, which this segmenter ignores (it
segments the whole image) unless ``restrict_to_box=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.pseudo.config import PseudoConfig
from flipseg.methods.whole_image import WholeImageModel, clean_mask, image_to_input
from flipseg.networks.unet import build_unet
from flipseg.segmenters import Segmenter

__all__ = ["MODEL_FILE", "PseudoUNetModel", "PseudoUNetSegmenter", "postprocess", "to_input"]

MODEL_FILE = "pseudo_model.safetensors"
_FORMAT = "flipseg-pseudo-unet-1"


def to_input(image: np.ndarray, cfg: PseudoConfig) -> np.ndarray:
    """A 2D image (0-255) -> float32 [S, S] in [0, 1], ``S = cfg.input_size``, intensities as
    ``cfg.normalize`` says (:func:`~flipseg.methods.whole_image.image_to_input`; FlipsegError
    when it is not 2D)."""
    return image_to_input(image, cfg.input_size, what=PseudoUNetModel.input_what, normalize=cfg.normalize)


def postprocess(mask: np.ndarray, cfg: PseudoConfig) -> np.ndarray:
    """Fill holes and keep the largest component, as ``cfg`` says (bool in, bool out)."""
    return clean_mask(mask, fill_holes=cfg.fill_holes, largest_component=cfg.largest_component)


class PseudoUNetModel(WholeImageModel):
    """Configuration + weights of a U-Net trained on real and pseudo masks (``load`` reads a
    run folder's ``pseudo_model.safetensors`` or a model file; ``bundle()`` is the saved form)."""

    model_file = MODEL_FILE
    bundle_format = _FORMAT
    bundle_what = "pseudo-unet model"
    config_class = PseudoConfig
    input_what = "pseudo-unet segments"
    cfg: PseudoConfig

    def build_network(self, cfg: PseudoConfig) -> nn.Module:
        return build_unet(2, 1, 1, cfg.channels, num_res_units=cfg.num_res_units,
                          encoder=cfg.encoder)

    def probability_maps(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Lesion probability per pixel, float32 (H, W) of each 2D image (bilinear resize back)."""
        return self.probability_maps_of(images, lambda x: torch.sigmoid(self.net(x))[:, 0],
                                        batch_size=batch_size)

    def predict_many(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Lesion masks (bool, each image's own shape), batched through the network."""
        maps = self.probability_maps(list(images), batch_size=batch_size)
        return [postprocess(m > self.cfg.threshold, self.cfg) for m in maps]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The lesion mask (bool, ``image.shape``) of one 2D image."""
        return self.predict_many([image])[0]


class PseudoUNetSegmenter(Segmenter):
    """``--method pseudo-unet --model RUN``: the U-Net of a ``flipseg train pseudo`` run.

    It segments the whole image: the box the registry passes is ignored unless
    ``restrict_to_box=True`` (then the mask is cut to the box).
    """

    name = "pseudo-unet"
    dims = (2,)
    needs_box = False

    def __init__(
        self, model: str | Path | None = None, batch_size: int = 32, restrict_to_box: bool = False
    ) -> None:
        if model is None:
            raise FlipsegError(
                "pseudo-unet needs a trained model: --model RUN (train one with "
                "`flipseg train pseudo --dataset bus-bra --fold 5 --out RUN`)"
            )
        self.model = PseudoUNetModel.load(model)
        self.batch_size = int(batch_size)
        self.restrict_to_box = bool(restrict_to_box)

    def segment(self, image: np.ndarray, box: Box | None = None, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images, boxes=None, *, seed: int = 0) -> list[np.ndarray]:
        images = list(images)
        masks = self.model.predict_many(images, batch_size=self.batch_size)
        if not self.restrict_to_box:
            return masks
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        if len(boxes) != len(images) or any(b is None for b in boxes):
            raise FlipsegError("pseudo-unet with restrict_to_box=True needs one box per image")
        return [m & b.validate(m.shape).to_mask(m.shape) for m, b in zip(masks, boxes)]

