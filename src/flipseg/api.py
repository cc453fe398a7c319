"""The Python face of flipseg: numpy in, numpy masks out.

>>> import flipseg
>>> masks = flipseg.segment(image, [(x0, y0, x1, y1)], method="flip-vote")   # doctest: +SKIP
>>> model = flipseg.load_model("runs/boxinst")                              # doctest: +SKIP
>>> masks = model.segment(image, [(x0, y0, x1, y1)])                         # doctest: +SKIP
>>> report = flipseg.evaluate(images, boxes, masks_true, method="ellipse")   # doctest: +SKIP

The command line (:mod:`flipseg.cli`) is a thin layer over these functions: methods, their
options and their models are looked up in the method registry (:mod:`flipseg.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError

__all__ = ["MaskResult", "Model", "evaluate", "load_model", "make_segmenter", "place_on", "segment"]

BoxLike = Any  # a Box, or a sequence (x0, y0, x1, y1[, z0, z1]), or "x0,y0,x1,y1"


@dataclass
class MaskResult:
    """One segmented box: the mask and a few facts about it."""

    mask: np.ndarray
    """bool, the image's shape."""
    box: Box
    """The box it was segmented from (the whole image for whole-image methods)."""
    method: str
    area: int
    """Mask pixels (voxels)."""
    box_fill: float
    """Fraction of the box the mask covers."""


def _as_box(b: BoxLike, shape: tuple[int, ...]) -> Box:
    if isinstance(b, Box):
        box = b
    elif isinstance(b, str):
        box = Box.parse(b)
    else:
        values = [int(round(float(v))) for v in b]
        if len(values) not in (4, 6):
            raise FlipsegError(f"a box needs 4 (2D) or 6 (3D) numbers, got {list(b)!r}")
        box = Box(*values)
    return box.validate(shape)


def _as_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        arr = arr[..., :3].mean(axis=-1)  # an RGB(A) picture: its grey levels
    if arr.ndim not in (2, 3):
        raise FlipsegError(f"an image must be 2D (H, W) or 3D (D, H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise FlipsegError(f"an image must hold numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def method_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the method's inference configuration (its field names);
    a string value is parsed with the field's type, as ``--set`` does."""
    from flipseg.methods import method_spec
    from flipseg.registry import resolve
    from flipseg.runs import config_field_types, parse_value

    if not options:
        return {}
    spec = method_spec(method)
    if spec.config is None:
        raise FlipsegError(f"method {method!r} takes no options (got {', '.join(sorted(options))})")
    types = config_field_types(resolve(spec.config))
    out = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key not in types:
            raise FlipsegError(f"unknown {method} option {key!r}; known: {', '.join(sorted(types))}")
        if isinstance(value, str):
            try:
                value = parse_value(value, types[key])
            except ValueError:
                raise FlipsegError(f"{method} option {key}={value!r} is not a valid "
                                   f"{getattr(types[key], '__name__', types[key])}") from None
        out[key] = value
    return out


def place_on(segmenter: Any, device: str | None) -> Any:
    """Move ``segmenter``'s networks to ``device`` (``auto``, ``cpu``, ``cuda``;
    :func:`flipseg.devices.resolve_device`) and return it. Parts a method cannot move yet
    stay on the CPU, said in one line on stderr (never silently).

    Raises
    ------
    FlipsegError
        An unknown device, or ``cuda`` without a usable GPU.
    """
    import sys

    from flipseg.devices import resolve_device

    name = resolve_device(device)
    if name == "cpu":
        return segmenter
    mover = getattr(segmenter, "to_device", None)
    stayed = mover(name) if callable(mover) else ["its networks"]
    if stayed:
        print(f"flipseg: note: {getattr(segmenter, 'name', type(segmenter).__name__)}: "
              f"{', '.join(stayed)} stay(s) on the CPU (not movable to {name} yet)", file=sys.stderr)
    return segmenter


def make_segmenter(method: str | None = None, *, model: str | Path | None = None, dims: int = 2,
                   options: dict[str, Any] | None = None, device: str | None = "cpu",
                   **extra: Any) -> Any:
    """A segmenter object of a registered method (``segment_many(images, boxes, seed=)``).

    Parameters
    ----------
    method
        Method name; None: the method that trained ``model``, else the default for ``dims``
        (``flip-vote`` in 2D, ``flip`` in 3D).
    model
        Trained model (run folder or model file) for methods that take one.
    dims
        Dimensionality of the images (picks the shipped 2D or 3D model).
    options
        Inference options (fields of the method's options dataclass; ``flipseg methods
        --options`` lists them).
    device
        Torch device of its networks: ``cpu`` (default), ``cuda`` or ``auto`` (the GPU when
        there is one); see :func:`place_on`.
    extra
        The method's own keyword options (e.g. ``vote_model`` for ``flip-vote``); they may
        also come in ``options``.

    Raises
    ------
    FlipsegError
        An unknown method or option, a method that does not segment, a model for a
        method that takes none, images of a dimensionality the method does not handle,
        or ``device="cuda"`` without a usable GPU.
    """
    from flipseg.methods import (
        default_method,
        get_segmenter,
        method_of_model,
        method_option_keywords,
        method_spec,
        segmenter_options,
    )

    if method is None:
        method = method_of_model(model) if model is not None else default_method(dims)
    spec = method_spec(method)
    if spec.kind not in ("box", "image"):
        raise FlipsegError(f"method {method!r} is a {spec.kind}, not a segmenter")
    if dims not in spec.dims:
        raise FlipsegError(f"method {method!r} segments {'/'.join(map(str, spec.dims))}D images, "
                           f"not {dims}D")
    if spec.model == "required" and model is None:
        raise FlipsegError(f"method {method!r} needs a trained model (model=RUN / --model RUN)")
    options, own = dict(options or {}), method_option_keywords()
    extra = {**{k: options.pop(k) for k in list(options) if k in own}, **extra}
    opts = segmenter_options(spec, model=model, dims=dims,
                             config=method_options(method, options), extra=extra)
    return place_on(get_segmenter(method, **opts), device)


class Model:
    """A loaded segmenter with its method name (:func:`load_model`)."""

    def __init__(self, method: str, segmenter: Any, path: str | None = None) -> None:
        self.method, self.segmenter, self.path = method, segmenter, path

    @property
    def needs_box(self) -> bool:
        return bool(getattr(self.segmenter, "needs_box", True))

    def segment(self, image: Any, boxes: BoxLike | Sequence[BoxLike] | None = None, *,
                seed: int = 0, details: bool = False) -> list[Any]:
        """Masks of ``image``, one per box (see :func:`segment`)."""
        img = _as_image(image)
        bxs = _boxes(boxes, img.shape, self.needs_box, self.method)
        masks = self.segmenter.segment_many([img] * len(bxs), bxs, seed=seed)
        masks = [np.asarray(m, bool) for m in masks]
        if not details:
            return masks
        return [MaskResult(mask=m, box=b, method=self.method, area=int(m.sum()),
                           box_fill=_box_fill(m, b)) for m, b in zip(masks, bxs)]

    def __repr__(self) -> str:
        return f"Model(method={self.method!r}, path={self.path!r})"


def _boxes(boxes: Any, shape: tuple[int, ...], needs_box: bool, method: str) -> list[Box]:
    if boxes is None or (not isinstance(boxes, (str, Box)) and len(boxes) == 0):
        if needs_box:
            raise FlipsegError(f"method {method!r} needs boxes: segment(image, [(x0, y0, x1, y1)])")
        return [Box.from_lo_hi((0,) * len(shape), shape)]
    if isinstance(boxes, (str, Box)) or (len(boxes) in (4, 6) and np.isscalar(boxes[0])):
        boxes = [boxes]
    return [_as_box(b, shape) for b in boxes]


def load_model(path: str | Path, *, method: str | None = None, device: str | None = "cpu",
               **options: Any) -> Model:
    """A trained model (run folder or model file) ready to segment.

    The method is read from the model file unless ``method`` names another that runs it
    (e.g. ``flip-vote`` with a Flip model). ``options`` as in :func:`make_segmenter`.
    Model files are read as data (safetensors + JSON): nothing in them is executed.
    ``device``: where its networks run (``cpu``, ``cuda``, ``auto``).
    """
    from flipseg.methods import method_of_model

    name = method or method_of_model(path)
    seg = make_segmenter(name, model=path, dims=_model_dims(name), options=options,
                         device=device)
    return Model(name, seg, str(path))


def _model_dims(method: str) -> int:
    from flipseg.methods import method_spec

    spec = method_spec(method)
    return spec.dims[0] if len(spec.dims) == 1 else 2


def segment(image: Any, boxes: BoxLike | Sequence[BoxLike] | None = None, *,
            method: str | None = None, model: str | Path | None = None, seed: int = 0,
            details: bool = False, device: str | None = "cpu", **options: Any) -> list[Any]:
    """Masks of ``image`` from its boxes.

    Parameters
    ----------
    image
        ``(H, W)`` image or ``(D, H, W)`` volume (any numeric dtype; RGB pictures are
        turned grey).
    boxes
        One box or a list: ``(x0, y0, x1, y1)`` in pixels, half-open (3D: ``+ (z0, z1)``),
        or :class:`~flipseg.boxes.Box`. Whole-image methods need none.
    method
        Registered method (default: the model's, else ``flip-vote`` in 2D, ``flip`` in 3D).
    model
        Trained model for the method (run folder or model file).
    seed
        Seed of the method's random choices (same seed, same masks).
    details
        Return :class:`MaskResult` objects (mask, box, method, area, box fill) instead of
        bare masks.
    device
        Torch device of the method's networks: ``cpu`` (default), ``cuda`` or ``auto``.
    options
        Inference options of the method (e.g. ``segments=500`` for flip) and its own
        keywords (``vote_model=`` for flip-vote).

    Returns
    -------
    One bool mask (image shape) per box, in order.
    """
    img = _as_image(image)
    seg = make_segmenter(method, model=model, dims=img.ndim, options=options, device=device)
    name = method or getattr(seg, "name", "")
    return Model(name, seg).segment(img, boxes, seed=seed, details=details)


def evaluate(images: Sequence[Any], boxes: Sequence[BoxLike], masks: Sequence[Any], *,
             method: str | None = None, model: str | Path | None = None,
             spacing: Sequence[float] | None = None, seed: int = 0,
             device: str | None = "cpu", **options: Any) -> dict[str, Any]:
    """Score a method against known masks.

    Returns ``{"method", "n", "mean": {metric: value}, "cases": [per-case metrics]}`` with
    Dice, Jaccard, Hausdorff distance and average surface distance (in ``spacing`` units,
    pixels by default).
    """
    from flipseg.metrics import compute_asd, compute_dice, compute_hausdorff, compute_jaccard

    if not (len(images) == len(boxes) == len(masks)):
        raise FlipsegError(f"give as many images, boxes and masks ({len(images)}, {len(boxes)}, "
                           f"{len(masks)})")
    if not images:
        raise FlipsegError("nothing to evaluate: no images")
    imgs = [_as_image(im) for im in images]
    seg = make_segmenter(method, model=model, dims=imgs[0].ndim, options=options, device=device)
    bxs = [_as_box(b, im.shape) for b, im in zip(boxes, imgs)]
    preds = seg.segment_many(imgs, bxs, seed=seed)
    rows = []
    for i, (p, g) in enumerate(zip(preds, masks)):
        g = np.asarray(g, bool)
        p = np.asarray(p, bool)
        rows.append({"index": i, "dice": compute_dice(p, g), "jaccard": compute_jaccard(p, g),
                     "hd": compute_hausdorff(p, g, spacing=spacing),
                     "asd": compute_asd(p, g, spacing=spacing)})
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("dice", "jaccard", "hd", "asd")}
    return {"method": method or getattr(seg, "name", ""), "n": len(rows), "mean": mean,
            "cases": rows}


def _box_fill(mask: np.ndarray, box: Box) -> float:
    inside = mask[box.clip(mask.shape).slices()]
    return float(inside.sum()) / max(1, inside.size)
