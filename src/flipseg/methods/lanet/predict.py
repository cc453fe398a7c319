"""A trained LA-Net: class probabilities, lesion maps and Grad-CAM views.

>>> model = LANetModel.load("runs/lanet_busi")            # run folder or model file
>>> pred = model.predict([image])[0]
>>> pred.probabilities, pred.label, pred.lesion_map.shape  # (2,) benign/malignant, str, image shape
>>> cam = model.gradcam([image])[0]                      # (H, W) in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from flipseg.errors import FlipsegError
from flipseg.methods.lanet.config import LANetConfig
from flipseg.methods.whole_image import WholeImageModel, image_batches, image_to_input, maps_at_images
from flipseg.networks.lanet import LANet

__all__ = ["CLASS_NAMES", "MODEL_FILE", "LANetModel", "LANetPrediction", "build_network", "to_input"]

#: Class index -> label; index 1 (malignant) is the positive class.
CLASS_NAMES = ("benign", "malignant")
MODEL_FILE = "lanet_model.safetensors"
_FORMAT = "flipseg-lanet-1"


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """A 2D image (0-255) -> float32 [size, size] in [0, 1], bilinear
    (:func:`~flipseg.methods.whole_image.image_to_input`; FlipsegError when it is not 2D)."""
    return image_to_input(image, size, what=LANetModel.input_what)


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


def _minmax(t: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], high where the evidence is. (monai's default
    normaliser maps the maximum to 0, which shows the evidence inverted.)"""
    flat = t.reshape(t.shape[0], -1)
    lo = flat.min(dim=1).values.reshape(-1, *([1] * (t.ndim - 1)))
    hi = flat.max(dim=1).values.reshape(-1, *([1] * (t.ndim - 1)))
    return (t - lo) / torch.clamp(hi - lo, min=1e-12)


class LANetModel(WholeImageModel):
    """Configuration + weights of a trained LA-Net (``load`` reads a run folder's
    ``lanet_model.safetensors`` or a model file; ``bundle(state_dict)`` is the saved form)."""

    model_file = MODEL_FILE
    bundle_format = _FORMAT
    bundle_what = "lanet model"
    config_class = LANetConfig
    input_what = "lanet works on"
    cfg: LANetConfig
    net: LANet

    def build_network(self, cfg: LANetConfig) -> LANet:
        return build_network(cfg)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> list[LANetPrediction]:
        """Class probabilities and a lesion map (resized to each image) per 2D image."""
        self.prepare()
        out: list[LANetPrediction] = []
        for chunk, x in image_batches(images, batch_size, self.input_batch):
            res = self.net(x)
            probs = torch.softmax(res.logits, dim=1).cpu().numpy()
            for p, full in zip(probs, maps_at_images(res.lesion_map[:, 0].cpu().numpy(), chunk)):
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
        cam = GradCAM(nn_module=_LogitsOnly(self.net), target_layers=f"net.{self.net.cam_layer}",
                      postprocessing=_minmax)
        out: list[np.ndarray] = []
        for chunk, x in image_batches(images, batch_size, self.input_batch):
            maps = cam(x, class_idx=class_index)  # [B, 1, S, S]
            maps = np.asarray(maps.detach().cpu().numpy() if torch.is_tensor(maps) else maps)
            out += maps_at_images(maps[:, 0], chunk)
        return out
