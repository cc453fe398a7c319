"""flipseg: breast-lesion masks from boxes and tags in 2D/3D ultrasound.

The Python API (:mod:`flipseg.api`)::

    import flipseg
    masks = flipseg.segment(image, [(x0, y0, x1, y1)], method="flip-vote")
    model = flipseg.load_model("runs/boxinst")
    report = flipseg.evaluate(images, boxes, true_masks, method="ellipse")
"""

from importlib import import_module
from typing import Any

from flipseg.boxes import Box
from flipseg.errors import FlipsegError

__all__ = ["Box", "FlipsegError", "__version__", "evaluate", "load_model", "make_segmenter",
           "segment"]
__version__ = "0.1.0"

_API = ("evaluate", "load_model", "make_segmenter", "segment")


def __getattr__(name: str) -> Any:
    # the API is imported on first use, so `import flipseg` (and the CLI) stays light
    if name in _API:
        value = getattr(import_module("flipseg.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flipseg' has no attribute {name!r}")
