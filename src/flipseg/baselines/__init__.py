"""Box -> mask baselines, all with one signature ``fn(image, box, *, rng) -> bool mask``.

Each is registered once, by :func:`register_baseline` on its function: by name in
:data:`BASELINES` and as a box -> mask method in :data:`flipseg.registry.METHODS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flipseg.registry import MethodSpec, Registry, register_method
from flipseg.segmenters import FunctionSegmenter

__all__ = ["BASELINES", "register_baseline"]

BaselineFn = Callable[..., np.ndarray]
BASELINES: Registry[BaselineFn] = Registry("baseline")


def register_baseline(name: str, *, dims: tuple[int, ...] = (2,), model: str = "none",
                      help: str = "") -> Callable[[BaselineFn], BaselineFn]:
    """Register ``fn(image, box, *, rng, **opts) -> mask`` as baseline and method ``name``.

    ``model="optional"``: the function takes ``model=`` (``--model`` on the command line);
    ``help`` defaults to the first line of the function's docstring.
    """

    def deco(fn: BaselineFn) -> BaselineFn:
        fn.dims = dims  # type: ignore[attr-defined]
        BASELINES.register(name)(fn)

        def factory(**opts: object) -> FunctionSegmenter:
            seg = FunctionSegmenter(name, fn, **opts)
            seg.dims = dims
            return seg

        doc = (fn.__doc__ or name).strip().splitlines()[0].strip("`. ")
        register_method(MethodSpec(name=name, kind="box", dims=dims, help=help or doc,
                                   factory=factory, model=model, source=fn.__module__))
        return fn

    return deco


# Submodules register themselves on import (added by their authors):
from flipseg.baselines import shapes  # noqa: E402,F401

from flipseg.baselines import cam  # noqa: E402,F401  # isort: skip
from flipseg.baselines import contours, grabcut, regiongrow, saliency, walker  # noqa: E402,F401
