"""Registry of box -> mask segmenters used by ``flipseg evaluate`` / ``segment``.

A segmenter factory takes keyword options and returns an object with
``segment(image, box, *, seed) -> bool mask`` and
``segment_many(images, boxes, *, seed) -> list of masks`` (batched where the
method can batch; the default loops). Baselines (plain functions) are wrapped
by :class:`FunctionSegmenter`; methods register their own factories.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.registry import Registry

__all__ = ["SEGMENTERS", "Segmenter", "FunctionSegmenter", "get_segmenter"]

SEGMENTERS: Registry[Callable[..., "Segmenter"]] = Registry("method")


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
        return [self.segment(im, b, seed=seed + i) for i, (im, b) in enumerate(zip(images, boxes))]


class FunctionSegmenter(Segmenter):
    """Wrap ``fn(image, box, *, rng, **opts) -> mask`` as a segmenter."""

    def __init__(self, name: str, fn: Callable[..., np.ndarray], **opts: Any) -> None:
        self.name = name
        self.fn = fn
        self.opts = opts

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        mask = self.fn(image, box, rng=rng, **self.opts)
        return np.asarray(mask, dtype=bool)


def get_segmenter(name: str, **opts: Any) -> Segmenter:
    """Instantiate a registered segmenter by name (FlipsegError lists valid names)."""
    _load_builtin()
    return SEGMENTERS.get(name)(**opts)


def _load_builtin() -> None:
    # Importing the modules runs their register decorators.
    # Core never imports methods/: the CLI imports ``flipseg.methods`` itself.
    import flipseg.baselines  # noqa: F401
