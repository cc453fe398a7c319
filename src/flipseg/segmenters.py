"""The segmenter interface every method implements.

A method's factory (its :class:`flipseg.registry.MethodSpec`) takes keyword options and
returns an object with
``segment(image, box, *, seed) -> bool mask`` and
``segment_many(images, boxes, *, seed) -> list of masks`` (batched where the
method can batch; the default loops). Baselines (plain functions) are wrapped
by :class:`FunctionSegmenter`.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import numpy as np

from flipseg.boxes import Box

__all__ = ["FunctionSegmenter", "Segmenter", "case_seed"]


def case_seed(seed: int, box: Box) -> int:
    """The seed of one box's random choices: a function of ``seed`` and the box alone.

    A box's mask therefore does not depend on the other boxes segmented with it, nor on
    its place in the batch (``segment_many`` of one box and of 64 agree).
    """
    text = f"{int(seed)}:{','.join(map(str, box.as_tuple()))}"
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


class Segmenter:
    """Base: subclasses implement :meth:`segment`; batching is optional."""

    name = "segmenter"
    dims: tuple[int, ...] = (2, 3)
    #: False for whole-image models (trained segmenters): they ignore the box,
    #: and ``flipseg segment`` runs them on images that have none.
    needs_box: bool = True

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        raise NotImplementedError

    def segment_many(
        self, images: Sequence[np.ndarray], boxes: Sequence[Box], *, seed: int = 0
    ) -> list[np.ndarray]:
        return [self.segment(im, b, seed=seed) for im, b in zip(images, boxes)]

    def to_device(self, device: str) -> list[str]:
        """Move the segmenter's networks to the torch ``device`` (``"cpu"``, ``"cuda"``).

        The default moves every attribute that has a ``to_device`` method (a trained model,
        another segmenter: a composite's voters) and returns what stayed where it was: the
        names of the attributes that hold networks they cannot move (a ``net``,
        ``network``, ``agent`` or ``scorer`` without ``to_device``). A segmenter without
        networks (the baselines) has nothing to move.
        """
        stayed: list[str] = []
        for key, value in vars(self).items():
            mover = getattr(value, "to_device", None)
            if callable(mover):
                stayed += [f"{key}.{s}" for s in (mover(device) or [])]
            elif any(hasattr(value, a) for a in ("net", "network", "agent", "scorer")):
                stayed.append(key)
        return stayed


class FunctionSegmenter(Segmenter):
    """Wrap ``fn(image, box, *, rng, **opts) -> mask`` as a segmenter."""

    def __init__(self, name: str, fn: Callable[..., np.ndarray], **opts: Any) -> None:
        self.name = name
        self.fn = fn
        self.opts = opts

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(case_seed(seed, box))
        mask = self.fn(image, box, rng=rng, **self.opts)
        return np.asarray(mask, dtype=bool)
