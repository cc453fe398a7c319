"""A trained LA-Net: class probabilities, lesion maps and Grad-CAM views.

>>> model = LANetModel.load("runs/lanet_busi")            # run folder or model file
>>> pred = model.predict([image])[0]
>>> pred.probabilities, pred.label, pred.lesion_map.shape  # (2,) benign/malignant, str, image shape
>>> cam = model.gradcam([image])[0]                      # (H, W) in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from flipseg.bundles import read_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.lanet.config import LANetConfig
from flipseg.networks.lanet import LANet
from flipseg.resize import resize

__all__ = ["CLASS_NAMES", "MODEL_FILE", "LANetModel", "LANetPrediction", "build_network", "to_input"]

#: Class index -> label; index 1 (malignant) is the positive class.
CLASS_NAMES = ("benign", "malignant")
MODEL_FILE = "lanet_model.pt"
_FORMAT = "flipseg-lanet-1"


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """A 2D image (0-255) -> float32 [size, size] in [0, 1] (bilinear resize).

    Raises
    ------
    FlipsegError
        The image is not 2D.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise FlipsegError(f"lanet works on 2D images, got shape {image.shape}")
    return np.clip(resize(image, (size, size)) / 255.0, 0.0, 1.0).astype(np.float32)


def build_network(cfg: LANetConfig) -> LANet:
    """The (randomly initialised) network described by ``cfg``."""
    return LANet(cfg.backbone, in_channels=1, num_classes=len(CLASS_NAMES), **cfg.network_kwargs())


@dataclass
class LANetPrediction:
    """LA-Net's answer for one image."""

    probabilities: np.ndarray
    """Class probabilities (2,): benign, malignant."""
    label: str
    """The more probable class."""
    lesion_map: np.ndarray
    """Lesion probability per pixel, float32 (H, W) of the input image."""
    mask: np.ndarray
    """``lesion_map > threshold`` (bool, H x W)."""

    @property
    def malignant_probability(self) -> float:
        return float(self.probabilities[1])


class _LogitsOnly(nn.Module):
    """The network seen as a plain classifier (what ``monai.visualize`` expects)."""

    def __init__(self, net: LANet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).logits


class LANetModel:
    """Configuration + weights of a trained LA-Net."""

    def __init__(
        self, cfg: LANetConfig, state_dict: dict | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.net = build_network(cfg)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.eval()
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path) -> "LANetModel":
        """From a run folder (its ``lanet_model.pt``) or a model file."""
        bundle = read_bundle(path, MODEL_FILE, _FORMAT, "lanet model")
        return cls(LANetConfig.from_dict(bundle["config"]), bundle["state_dict"], bundle.get("meta"))

    def bundle(self, state_dict: dict | None = None) -> dict[str, Any]:
        """The saved form (``state_dict`` defaults to the current weights)."""
        sd = state_dict if state_dict is not None else self.net.state_dict()
        return {"format": _FORMAT, "config": self.cfg.to_dict(), "meta": self.meta,
                "state_dict": {k: v.detach().cpu().clone() for k, v in sd.items()}}

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack([to_input(im, self.cfg.input_size) for im in images])[:, None])

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[LANetPrediction]:
        """Class probabilities and a lesion map (resized to each image) per 2D image."""
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        self.net.eval()
        out: list[LANetPrediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            res = self.net(self._batch(chunk))
            probs = torch.softmax(res.logits, dim=1).numpy()
            maps = res.lesion_map[:, 0].numpy()
            for im, p, m in zip(chunk, probs, maps):
                full = np.clip(resize(m.astype(np.float32), np.shape(im)), 0.0, 1.0)
                out.append(LANetPrediction(p.astype(np.float32), CLASS_NAMES[int(np.argmax(p))], full,
                                           full > self.cfg.threshold))
        return out

    def gradcam(
        self, images: Sequence[np.ndarray], *, class_index: int | None = None, batch_size: int = 16
    ) -> list[np.ndarray]:
        """Grad-CAM (``monai.visualize.GradCAM``) of the classifier at the last backbone stage.

        Parameters
        ----------
        images : 2D images (0-255)
        class_index : 0 (benign) or 1 (malignant); None = the predicted class of each image

        Returns
        -------
        one float32 (H, W) map in [0, 1] per image (resized to the image).
        """
        from monai.visualize import GradCAM

        if class_index is not None and class_index not in range(len(CLASS_NAMES)):
            raise FlipsegError(f"class_index {class_index!r} must be 0 (benign) or 1 (malignant)")
        self.net.eval()
        cam = GradCAM(nn_module=_LogitsOnly(self.net), target_layers=f"net.{self.net.cam_layer}")
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            maps = cam(self._batch(chunk), class_idx=class_index)  # [B, 1, S, S]
            maps = np.asarray(maps.detach().cpu().numpy() if torch.is_tensor(maps) else maps)
            for im, m in zip(chunk, maps[:, 0]):
                out.append(np.clip(resize(m.astype(np.float32), np.shape(im)), 0.0, 1.0))
        return out
