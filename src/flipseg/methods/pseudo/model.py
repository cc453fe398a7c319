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
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.pseudo.config import PseudoConfig
from flipseg.networks.unet import build_unet
from flipseg.resize import resize
from flipseg.segmenters import SEGMENTERS, Segmenter

__all__ = ["MODEL_FILE", "PseudoUNetModel", "PseudoUNetSegmenter", "postprocess", "to_input"]

MODEL_FILE = "pseudo_model.pt"
_FORMAT = "flipseg-pseudo-unet-1"


def to_input(image: np.ndarray, cfg: PseudoConfig) -> np.ndarray:
    """A 2D image (0-255) -> float32 [S, S] in [0, 1], ``S = cfg.input_size`` (bilinear).

    Raises
    ------
    FlipsegError
        The image is not 2D.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise FlipsegError(f"pseudo-unet segments 2D images, got shape {image.shape}")
    S = cfg.input_size
    x = resize(image, (S, S))
    if cfg.normalize == "percentile":
        lo, hi = np.percentile(x, (1, 99))
        x = (x - lo) / max(float(hi - lo), 1e-3)
    else:
        x = x / 255.0
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def postprocess(mask: np.ndarray, cfg: PseudoConfig) -> np.ndarray:
    """Fill holes and keep the largest component, as ``cfg`` says (bool in, bool out)."""
    mask = np.asarray(mask, bool)
    if cfg.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if cfg.largest_component and mask.any():
        lab, n = ndimage.label(mask)
        if n > 1:
            mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return mask


class PseudoUNetModel:
    """Configuration + weights of a U-Net trained on real and pseudo masks."""

    def __init__(
        self, cfg: PseudoConfig, state_dict: dict | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.net = build_unet(2, 1, 1, cfg.channels, num_res_units=cfg.num_res_units)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.eval()
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path) -> "PseudoUNetModel":
        """From a run folder (its ``pseudo_model.pt``) or a model file."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.exists():
            raise FlipsegError(f"model not found: {path}")
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a user mistake
            raise FlipsegError(f"cannot read model file {path}: {exc}".splitlines()[0]) from None
        if not isinstance(bundle, dict) or bundle.get("format") != _FORMAT:
            raise FlipsegError(f"{path} is not a flipseg pseudo-unet model")
        return cls(PseudoConfig.from_dict(bundle["config"]), bundle["state_dict"], bundle.get("meta"))

    def bundle(self) -> dict[str, Any]:
        """The saved form: format tag, config, meta and the current weights."""
        return {"format": _FORMAT, "config": self.cfg.to_dict(), "meta": self.meta,
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    @torch.no_grad()
    def probability_maps(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[np.ndarray]:
        """Lesion probability per pixel, float32 (H, W) of each 2D image (bilinear resize back)."""
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        self.net.eval()
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.from_numpy(np.stack([to_input(im, self.cfg) for im in chunk])[:, None])
            prob = torch.sigmoid(self.net(x))[:, 0].numpy()  # [B, S, S]
            out += [np.clip(resize(p, np.shape(im)), 0.0, 1.0) for im, p in zip(chunk, prob)]
        return out

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


@SEGMENTERS.register("pseudo-unet")
def _pseudo_unet_factory(**opts: Any) -> PseudoUNetSegmenter:
    return PseudoUNetSegmenter(**opts)
