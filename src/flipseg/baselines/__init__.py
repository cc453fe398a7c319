"""Box -> mask baselines, all with one signature ``fn(image, box, *, rng) -> bool mask``.

Each is registered by name in :data:`BASELINES` and as a segmenter in
:data:`flipseg.segmenters.SEGMENTERS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flipseg.registry import Registry
from flipseg.segmenters import SEGMENTERS, FunctionSegmenter

__all__ = ["BASELINES", "register_baseline"]

BaselineFn = Callable[..., np.ndarray]
BASELINES: Registry[BaselineFn] = Registry("baseline")


def register_baseline(name: str, *, dims: tuple[int, ...] = (2,)) -> Callable[[BaselineFn], BaselineFn]:
    """Register ``fn(image, box, *, rng, **opts) -> mask`` as baseline and segmenter ``name``."""

    def deco(fn: BaselineFn) -> BaselineFn:
        fn.dims = dims  # type: ignore[attr-defined]
        BASELINES.register(name)(fn)

        def factory(**opts: object) -> FunctionSegmenter:
            seg = FunctionSegmenter(name, fn, **opts)
            seg.dims = dims
            return seg

        SEGMENTERS.register(name)(factory)
        return fn

    return deco


# Submodules register themselves on import (added by their authors):
from flipseg.baselines import shapes  # noqa: E402,F401

from flipseg.baselines import cam  # noqa: E402,F401  # isort: skip
from flipseg.baselines import contours, grabcut, regiongrow, saliency, walker  # noqa: E402,F401
