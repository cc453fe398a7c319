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
