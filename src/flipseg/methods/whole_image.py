"""Whole-image networks: image -> network input -> batched maps -> maps at the image's resolution.

The recipes whose networks see the whole 2D image (``pseudo-unet``, ``hybrid``,
``lanet``, ``cam-mt``) resize it to a square input of 0-1 intensities, run it
through the network in batches and resize each output map back to its image.
:class:`WholeImageModel` is the configuration + weights + bundle of such a
network; the bundles' contents are unchanged (``format``, ``config``, ``meta``,
``state_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from flipseg.bundles import read_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.training import cpu_state, set_threads
from flipseg.resize import resize

__all__ = [
    "WholeImageModel",
    "clean_mask",
    "image_batches",
    "image_to_input",
    "images_to_batch",
    "maps_at_images",
    "normalize_intensity",
    "whole_image_maps",
]

M = TypeVar("M", bound="WholeImageModel")


def normalize_intensity(x: np.ndarray, mode: str = "none") -> np.ndarray:
    """0-255 intensities -> float32 in [0, 1]: ``none`` divides by 255, ``percentile``
    stretches the 1st-99th percentile of ``x`` to 0-1; clipped either way."""
    if mode == "percentile":
        lo, hi = np.percentile(x, (1, 99))
        x = (x - lo) / max(float(hi - lo), 1e-3)
    else:
        x = x / 255.0
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def image_to_input(image: np.ndarray, size: int, *, what: str, normalize: str = "none") -> np.ndarray:
    """A 2D image (0-255) -> float32 [size, size] in [0, 1] (bilinear resize, then
    :func:`normalize_intensity`).

    Parameters
    ----------
    image
        The 2D image.
    size
        Side of the square network input.
    what
        Start of the error message, e.g. ``"hybrid segments"``.
    normalize
        ``none`` or ``percentile``.

    Raises
    ------
    FlipsegError
        The image is not 2D: ``WHAT 2D images, got shape ...``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise FlipsegError(f"{what} 2D images, got shape {image.shape}")
    return normalize_intensity(resize(image, (size, size)), normalize)


def images_to_batch(images: Sequence[np.ndarray], size: int, *, what: str,
                    normalize: str = "none") -> torch.Tensor:
    """2D images -> the network batch ``[B, 1, size, size]`` (see :func:`image_to_input`)."""
    if not len(images):
        return torch.zeros(0, 1, size, size)
    return torch.from_numpy(np.stack([image_to_input(im, size, what=what, normalize=normalize)
                                      for im in images])[:, None])


def image_batches(images: Sequence[np.ndarray], batch_size: int, to_batch: Callable[[Sequence], torch.Tensor]
                  ) -> Iterator[tuple[Sequence[np.ndarray], torch.Tensor]]:
    """``(images of the batch, to_batch(them))`` for consecutive batches of ``batch_size`` images."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield chunk, to_batch(chunk)


def maps_at_images(maps: Sequence[np.ndarray], images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each [S, S] map resized (bilinear) to its image's shape, float32 clipped to [0, 1]."""
    return [np.clip(resize(np.asarray(m, np.float32), np.shape(im)), 0.0, 1.0) for m, im in zip(maps, images)]


@torch.no_grad()
def whole_image_maps(
    images: Sequence[np.ndarray],
    to_batch: Callable[[Sequence], torch.Tensor],
    probability: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Per-pixel probability maps of whole images, each at its image's resolution.

    Parameters
    ----------
    images
        2D images.
    to_batch
        Images -> network input ``[B, C, S, S]`` (e.g. :func:`images_to_batch`).
    probability
        Network input -> probabilities ``[B, S, S]`` (e.g. the sigmoid of the lesion logits),
        on any device (they are brought back to the CPU).
    batch_size
        Images per network call.
    """
    out: list[np.ndarray] = []
    for chunk, x in image_batches(images, batch_size, to_batch):
        out += maps_at_images(probability(x).cpu().numpy(), chunk)
    return out


def clean_mask(mask: np.ndarray, *, fill_holes: bool = False, largest_component: bool = False) -> np.ndarray:
    """A bool mask with its holes filled and / or only its largest connected component kept."""
    mask = np.asarray(mask, bool)
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if largest_component and mask.any():
        lab, n = ndimage.label(mask)
        if n > 1:
            mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return mask


class WholeImageModel:
    """Configuration + weights (+ ``meta``) of one trained whole-image network.

    A subclass names its bundle (``model_file``, ``bundle_format``, ``bundle_what``),
    its configuration class and the start of its not-2D error (``input_what``), and
    builds its network (:meth:`build_network`). The configuration has ``input_size``,
    ``num_threads`` and, optionally, ``normalize``.
    """

    model_file: ClassVar[str]
    """File name of the bundle in a run folder."""
    bundle_format: ClassVar[str]
    """The bundle's ``format`` tag."""
    bundle_what: ClassVar[str]
    """Words for messages, e.g. ``"hybrid model"``."""
    config_class: ClassVar[Any]
    """The configuration class (``from_dict`` / ``to_dict``)."""
    input_what: ClassVar[str]
    """Start of the error for an image that is not 2D, e.g. ``"hybrid segments"``."""

    def __init__(self, cfg: Any, state_dict: dict | None = None, meta: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.net = self.build_network(cfg)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.eval()
        self.meta = dict(meta or {})
        self.device = torch.device("cpu")

    def to_device(self, device: str | torch.device) -> list[str]:
        """Move the network to ``device``: :meth:`input_batch` puts the inputs there and the
        maps come back to the CPU. Returns the parts left behind: none."""
        self.device = torch.device(device)
        self.net.to(self.device)
        return []

    def build_network(self, cfg: Any) -> nn.Module:
        """The (randomly initialised) network described by ``cfg``."""
        raise NotImplementedError

    @classmethod
    def load(cls: type[M], path: str | Path) -> M:
        """From a run folder (its ``model_file``) or a model file.

        Raises
        ------
        FlipsegError
            A missing, unreadable or foreign file.
        """
        bundle = read_bundle(path, cls.model_file, cls.bundle_format, cls.bundle_what)
        return cls(cls.config_class.from_saved(bundle["config"]), bundle["state_dict"], bundle.get("meta"))

    def bundle(self, state_dict: dict | None = None) -> dict[str, Any]:
        """The saved form: format tag, config, meta and ``state_dict`` (default: the current weights)."""
        sd = state_dict if state_dict is not None else self.net.state_dict()
        return {"format": self.bundle_format, "config": self.cfg.to_dict(), "meta": self.meta,
                "state_dict": cpu_state(sd)}

    def input_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The network input ``[B, 1, S, S]`` of 2D images (:func:`images_to_batch`), on the
        model's device."""
        return images_to_batch(images, self.cfg.input_size, what=self.input_what,
                               normalize=getattr(self.cfg, "normalize", "none")).to(self.device)

    def prepare(self) -> None:
        """Before predicting: the configuration's torch threads, the network in eval mode."""
        set_threads(self.cfg.num_threads)
        self.net.eval()

    def probability_maps_of(
        self, images: Sequence[np.ndarray], probability: Callable[[torch.Tensor], torch.Tensor], *,
        batch_size: int = 32,
    ) -> list[np.ndarray]:
        """:func:`whole_image_maps` of this network (``probability``: input -> ``[B, S, S]``)."""
        self.prepare()
        return whole_image_maps(list(images), self.input_batch, probability, batch_size=batch_size)
