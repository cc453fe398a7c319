"""A trained hybrid-supervised segmenter: whole-image lesion masks, no box needed.

>>> model = HybridModel.load("runs/hybrid_busbra")     # run folder or model file
>>> mask = model.predict(image)                        # bool, image.shape
>>> masks = model.predict_many(images)                 # batched through the network

``flipseg evaluate --method hybrid --model RUN`` uses :class:`HybridSegmenter`,
which ignores the box it is given: the network segments the whole image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.hybrid.config import HybridConfig
from flipseg.methods.whole_image import WholeImageModel, image_to_input
from flipseg.networks.hybrid import HybridNet
from flipseg.segmenters import Segmenter

__all__ = ["MODEL_FILE", "HybridModel", "HybridSegmenter", "build_network", "to_input"]

MODEL_FILE = "hybrid_model.safetensors"
_FORMAT = "flipseg-hybrid-1"


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """A 2D image (0-255) -> float32 [size, size] in [0, 1], bilinear
    (:func:`~flipseg.methods.whole_image.image_to_input`; FlipsegError when it is not 2D)."""
    return image_to_input(image, size, what=HybridModel.input_what)


def build_network(cfg: HybridConfig) -> HybridNet:
    """The (randomly initialised) network described by ``cfg``."""
    return HybridNet(cfg.encoder, in_channels=1, **cfg.network_kwargs())


class HybridModel(WholeImageModel):
    """Configuration + weights of a trained hybrid (or baseline) segmenter (``load`` reads a
    run folder's ``hybrid_model.safetensors`` or a model file; ``bundle()`` is the saved form)."""

    model_file = MODEL_FILE
    bundle_format = _FORMAT
    bundle_what = "hybrid model"
    config_class = HybridConfig
    input_what = "hybrid segments"
    cfg: HybridConfig

    def build_network(self, cfg: HybridConfig) -> HybridNet:
        return build_network(cfg)

    def probabilities(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Lesion probability maps, float32 in [0, 1], each at its image's resolution."""
        return self.probability_maps_of(images, lambda x: torch.sigmoid(self.net(x).seg_logits)[:, 0],
                                        batch_size=batch_size)

    def predict_many(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Bool lesion masks, each of its image's shape (``probability > threshold``)."""
        return [p > self.cfg.threshold for p in self.probabilities(images, batch_size=batch_size)]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Bool lesion mask of one 2D image, of the image's shape."""
        return self.predict_many([image])[0]


class HybridSegmenter(Segmenter):
    """``--method hybrid --model RUN``: a trained hybrid-supervised network. It segments
    the whole image; **the box argument is ignored** (kept for the segmenter protocol)."""

    name = "hybrid"
    dims = (2,)
    needs_box = False

    def __init__(self, model: str | Path | None = None, batch_size: int = 32) -> None:
        if model is None:
            raise FlipsegError("hybrid needs a trained model: --model RUN (train one with "
                               "`flipseg train hybrid --dataset bus-bra --fold 5 --out RUN`)")
        self.model = HybridModel.load(model)
        self.batch_size = batch_size

    def segment(self, image: np.ndarray, box: Box | None = None, *, seed: int = 0) -> np.ndarray:
        return self.model.predict(image)

    def segment_many(self, images, boxes=None, *, seed: int = 0) -> list[np.ndarray]:
        return self.model.predict_many(list(images), batch_size=self.batch_size)

