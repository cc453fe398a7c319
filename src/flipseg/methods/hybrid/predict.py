"""A trained hybrid-supervised segmenter: whole-image lesion masks, no box needed.

>>> model = HybridModel.load("runs/hybrid_busbra")     # run folder or model file
>>> mask = model.predict(image)                        # bool, image.shape
>>> masks = model.predict_many(images)                 # batched through the network

``flipseg evaluate --method hybrid --model RUN`` uses :class:`HybridSegmenter`,
which ignores the box it is given: the network segments the whole image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.hybrid.config import HybridConfig
from flipseg.networks.hybrid import HybridNet
from flipseg.resize import resize
from flipseg.segmenters import SEGMENTERS, Segmenter

__all__ = ["MODEL_FILE", "HybridModel", "HybridSegmenter", "build_network", "to_input"]

MODEL_FILE = "hybrid_model.pt"
_FORMAT = "flipseg-hybrid-1"


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """A 2D image (0-255) -> float32 [size, size] in [0, 1] (bilinear resize).

    Raises
    ------
    FlipsegError
        The image is not 2D.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise FlipsegError(f"hybrid segments 2D images, got shape {image.shape}")
    return np.clip(resize(image, (size, size)) / 255.0, 0.0, 1.0).astype(np.float32)


def build_network(cfg: HybridConfig) -> HybridNet:
    """The (randomly initialised) network described by ``cfg``."""
    return HybridNet(cfg.encoder, in_channels=1, **cfg.network_kwargs())


class HybridModel:
    """Configuration + weights of a trained hybrid (or baseline) segmenter."""

    def __init__(
        self, cfg: HybridConfig, state_dict: dict | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.net = build_network(cfg)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.eval()
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path) -> "HybridModel":
        """From a run folder (its ``hybrid_model.pt``) or a model file."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.exists():
            raise FlipsegError(f"model not found: {path}")
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise FlipsegError(f"cannot read model file {path}: {exc}") from None
        if not isinstance(bundle, dict) or bundle.get("format") != _FORMAT:
            raise FlipsegError(f"{path} is not a flipseg hybrid model")
        return cls(HybridConfig.from_dict(bundle["config"]), bundle["state_dict"], bundle.get("meta"))

    def bundle(self) -> dict[str, Any]:
        """The saved form (current weights)."""
        return {"format": _FORMAT, "config": self.cfg.to_dict(), "meta": self.meta,
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Lesion probability maps, float32 in [0, 1], each at its image's resolution."""
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        self.net.eval()
        S = self.cfg.input_size
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.from_numpy(np.stack([to_input(im, S) for im in chunk])[:, None])
            prob = torch.sigmoid(self.net(x).seg_logits)[:, 0].numpy()  # [B, S, S]
            out += [np.clip(resize(p, np.shape(im)), 0.0, 1.0) for p, im in zip(prob, chunk)]
        return out

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


@SEGMENTERS.register("hybrid")
def _hybrid_factory(**opts: Any) -> HybridSegmenter:
    return HybridSegmenter(**opts)
