"""Box -> mask engines that turn the selected ROIs into pseudo masks.

Any registered segmenter of :mod:`flipseg.segmenters` is an engine (``flip``,
``boxinst``, ``ellipse``, ``grabcut``, ...). This module adds ``sam``: Segment
Anything prompted with the box, through the optional ``segment_anything``
package (``pip install segment-anything``; it imports ``torchvision``) and a
checkpoint file the user passes. Nothing is downloaded.

:class:`SamSegmenter` needs only a *predictor* object with the interface of
``segment_anything.SamPredictor``::

    predictor.set_image(rgb)            # uint8 [H, W, 3]
    masks, scores, logits = predictor.predict(box=np.array([x0, y0, x1, y1]),
                                              multimask_output=False)
    # masks [K, H, W] bool, scores [K]

so a model built from the package's parts (or any stand-in) can be plugged in.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from flipseg.boxes import Box
from flipseg.bundles import load_torch_file
from flipseg.errors import FlipsegError
from flipseg.segmenters import Segmenter

__all__ = [
    "SamSegmenter",
    "import_segment_anything",
    "load_sam_model",
    "make_engine",
    "segment_boxes",
    "to_rgb_uint8",
]

_INSTALL = "pip install segment-anything (it also needs torchvision matching your torch)"


def import_segment_anything() -> ModuleType:
    """The ``segment_anything`` package, or a FlipsegError telling how to install it."""
    try:
        import segment_anything
    except ImportError as exc:
        if exc.name == "segment_anything":
            raise FlipsegError(f"the SAM engine needs the segment_anything package: {_INSTALL}") from None
        raise FlipsegError(f"segment_anything cannot be imported ({exc}): {_INSTALL}") from None
    except Exception as exc:  # e.g. a torchvision built for another torch fails on import
        raise FlipsegError(f"segment_anything cannot be imported ({exc}): {_INSTALL}") from None
    return segment_anything


def load_sam_model(
    checkpoint: str | Path,
    model_type: str = "vit_b",
    *,
    builder: Callable[[], nn.Module] | None = None,
) -> nn.Module:
    """A Segment Anything model with the weights of ``checkpoint``, on the CPU, in eval mode.

    The architecture is ``segment_anything.sam_model_registry[model_type]`` built without
    weights (``builder`` replaces it, e.g. for a small model in tests); the checkpoint (a
    state dict, as Meta publishes them) is then read with ``map_location="cpu"``.

    Raises
    ------
    FlipsegError
        Missing package, missing or unreadable checkpoint, unknown model type, or weights
        that do not fit the architecture.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FlipsegError(f"SAM checkpoint not found: {path}")
    if builder is None:
        registry = import_segment_anything().sam_model_registry
        if model_type not in registry:
            raise FlipsegError(f"unknown SAM model type {model_type!r}; choose one of: "
                               f"{', '.join(sorted(registry))}")
        builder = registry[model_type]
    model = builder()
    state = load_torch_file(path, "SAM checkpoint", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise FlipsegError(f"{path}: weights do not fit SAM {model_type!r}: {first}") from None
    return model.eval()


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A 2D image (0-255) as the ``uint8 [H, W, 3]`` RGB array SAM expects."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise FlipsegError(f"the SAM engine segments 2D images, got shape {image.shape}")
    grey = np.clip(np.rint(image.astype(np.float32)), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


class SamSegmenter(Segmenter):
    """``sam``: Segment Anything with a box prompt.

    Parameters
    ----------
    checkpoint : SAM checkpoint file (needed unless ``predictor`` is given)
    model_type : ``vit_b``, ``vit_l``, ``vit_h`` (the checkpoint's architecture)
    multimask : ask for three masks and keep the best-scored one (default: one mask)
    predictor : an object with ``set_image`` / ``predict`` as ``SamPredictor`` has
    model : a SAM ``nn.Module`` to wrap in ``segment_anything.SamPredictor``
    """

    name = "sam"
    dims = (2,)

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model_type: str = "vit_b",
        multimask: bool = False,
        predictor: Any = None,
        model: nn.Module | None = None,
    ) -> None:
        if predictor is None:
            if model is None:
                if checkpoint is None:
                    raise FlipsegError(
                        "the SAM engine needs a checkpoint: --sam-checkpoint PATH (train cam-mt) or "
                        "--model PATH (evaluate, segment), e.g. sam_vit_b_01ec64.pth from the "
                        "segment-anything project; nothing is downloaded"
                    )
                model = load_sam_model(checkpoint, model_type)
            predictor = import_segment_anything().SamPredictor(model)
        self.predictor = predictor
        self.multimask = bool(multimask)

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        rgb = to_rgb_uint8(image)
        box = box.validate(rgb.shape[:2])
        self.predictor.set_image(rgb)
        prompt = np.array([box.x0, box.y0, box.x1, box.y1], dtype=np.float32)  # [4] xyxy pixels
        with torch.no_grad():
            masks, scores, _ = self.predictor.predict(box=prompt, multimask_output=self.multimask)
        masks = np.asarray(masks)  # [K, H, W]
        best = int(np.argmax(np.asarray(scores))) if self.multimask else 0
        mask = masks[best].astype(bool)
        if mask.shape != rgb.shape[:2]:
            raise FlipsegError(f"SAM predictor returned a mask of shape {mask.shape} for an image "
                               f"of shape {rgb.shape[:2]}")
        return mask


def sam_segmenter(checkpoint: str | Path | None = None, model: str | Path | None = None,
                 **opts: Any) -> SamSegmenter:
    """``model`` (the CLI's ``--model``) is taken as the checkpoint when ``checkpoint`` is not given."""
    return SamSegmenter(checkpoint if checkpoint is not None else model, **opts)


def make_engine(
    name: str,
    *,
    model: str | Path | None = None,
    sam_checkpoint: str | Path | None = None,
    sam_model_type: str = "vit_b",
) -> Segmenter:
    """The box -> mask engine ``name``: ``sam`` or any registered segmenter.

    Parameters
    ----------
    name : ``sam``, ``flip``, ``ellipse``, ``grabcut``, ... (unknown names fail with the list)
    model : model file or run folder for engines that take one (``flip``, ``boxinst``, CAM
        baselines); None for their default
    sam_checkpoint, sam_model_type : for ``sam`` only

    Raises
    ------
    FlipsegError
        Unknown engine, ``sam`` without a checkpoint or package, a checkpoint given to
        another engine, or the engine's own errors (e.g. no shipped model).
    """
    if name == "sam":
        return SamSegmenter(sam_checkpoint, model_type=sam_model_type)
    if sam_checkpoint is not None:
        raise FlipsegError(f"a SAM checkpoint is only used by the 'sam' engine, not {name!r}")
    from flipseg.methods import get_segmenter

    return get_segmenter(name) if model is None else get_segmenter(name, model=str(model))


def segment_boxes(
    engine: Segmenter,
    images: Sequence[np.ndarray],
    boxes: Sequence[Box],
    *,
    seed: int = 0,
) -> list[np.ndarray]:
    """``engine.segment_many`` with each mask checked to be bool and of its image's shape."""
    masks = engine.segment_many(list(images), list(boxes), seed=seed)
    out = []
    for im, m in zip(images, masks, strict=True):
        m = np.asarray(m, dtype=bool)
        if m.shape != np.shape(im):
            raise FlipsegError(f"engine {engine.name!r} returned a mask of shape {m.shape} "
                               f"for an image of shape {np.shape(im)}")
        out.append(m)
    return out
