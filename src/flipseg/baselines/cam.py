"""Class-activation-map (CAM) baselines: box -> mask from a nodule classifier's CAM.

Paper 000 (Table 2) compares Flip Learning with CAM-style segmentation from the
same nodule-vs-normal classifier. Every method here runs one pipeline:

1. the classifier's *view* of the box: the box grown by the model's relative
   margin, clipped, resized to ``input_size`` squared, divided by 255;
2. a map over the feature grid of the network's ``cam_layer`` for the target
   class *nodule* (0);
3. that map upsampled bilinearly to the view's size in image pixels, and cut
   down to the box;
4. Otsu's threshold on the map values inside the box, the largest
   (4-connected) component, holes filled. The mask never leaves the box.

Methods (step 2):

=============== ==============================================================
``cam``         ``monai.visualize.CAM``: the ``fc`` layer applied at every
                feature location (Zhou et al. 2016)
``gradcam``     ``monai.visualize.GradCAM``: channels weighted by their
                spatially averaged gradient, ReLU (Selvaraju et al. 2017)
``gradcam++``   ``monai.visualize.GradCAMpp`` (Chattopadhyay et al. 2018), one
                view per call: its ``exp(score) * grad`` broadcasts a ``[B]``
                score against the last spatial axis, so a batch of B > 1
                views fails, or is silently wrong when B equals that axis
``layercam``    per-location weights ReLU(gradient), ReLU of the weighted sum
                (Jiang et al. 2021)
``eigengradcam`` first principal component of gradient x activation over the
                feature locations, sign fixed to agree with their channel sum
``ablationcam`` channel weight = drop of the nodule logit when that channel is
                zeroed (Desai & Ramaswamy 2020), ReLU of the weighted sum
=============== ==============================================================

The last three are our own: :class:`_CamBase` does the plumbing (hooks on
``cam_layer``, gradients of the nodule logit) and each variant overrides one
small method, :meth:`_CamBase.cam_weights` or :meth:`_CamBase.combine`.

Rule (not error handling): a map that is constant inside the box (e.g. all zero
after the ReLU) says nothing about where the lesion is; the result is then the
inscribed ellipse, as for the other baselines' degenerate cases.

The classifier comes from a Flip Learning model file (``flip_model.safetensors``,
the shipped ``flipseg/models/flip2d.safetensors`` by default) or from a classifier
model file (``classifier.safetensors``) written by ``flipseg train``. Model files
are data (:mod:`flipseg.bundles`): reading one runs no code from it.
"""

from __future__ import annotations

import copy
from functools import cached_property
from importlib import import_module, resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.filters import threshold_otsu
from torch import fx, nn

from flipseg.baselines import register_baseline
from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.bundles import load_bundle
from flipseg.errors import FlipsegError
from flipseg.networks.classifier import build_classifier
from flipseg.registry import Registry
from flipseg.resize import resize

__all__ = [
    "CAM_METHODS",
    "NODULE",
    "cam_maps",
    "cam_segment_many",
    "default_cam_model_path",
    "load_cam_classifier",
    "mask_from_cam",
    "network_tail",
]

#: Class index of *nodule* in the classifier's logits (1 is normal tissue).
NODULE = 0

#: Formats of the files :func:`load_cam_classifier` reads.
_FLIP_FORMAT = "flipseg-flip-1"
_CLASSIFIER_FORMAT = "flipseg-classifier-1"
#: Files looked for, in order, when ``model`` is a folder (a run or its classifier folder).
_MODEL_FILES = ("flip_model.safetensors", "classifier.safetensors", "classifier/classifier.safetensors")

#: Loaded classifiers: resolved file path -> (network, config). Filled once per path.
_MODELS: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
#: CAM explainers: (resolved file path, method) -> explainer. Filled once per key.
_EXPLAINERS: dict[tuple[str, str], "_CamBase"] = {}


# --------------------------------------------------------------------- model
def default_cam_model_path() -> Path:
    """The 2D Flip Learning model shipped inside the package (its classifier is used)."""
    return Path(str(resources.files("flipseg") / "models" / "flip2d.safetensors"))


def _resolve_model_path(path: str | Path | None) -> Path:
    if path is None:
        p = default_cam_model_path()
        if not p.exists():
            raise FlipsegError(
                f"the CAM baselines need a classifier and no model is shipped at {p}; "
                "train one with `flipseg train flip` and pass model=RUN_DIR"
            )
        return p
    p = Path(path)
    if p.is_dir():
        for name in _MODEL_FILES:
            if (p / name).is_file():
                return p / name
        for name in _MODEL_FILES:  # a run folder of an older flipseg: say how to convert it
            if (p / name.replace(".safetensors", ".pt")).is_file():
                return p / name.replace(".safetensors", ".pt")  # refused by load_bundle, unread
        raise FlipsegError(f"no {' or '.join(_MODEL_FILES)} in model folder {p}")
    if not p.exists():
        raise FlipsegError(f"model not found: {p}")
    return p


def load_cam_classifier(path: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The nodule-vs-normal classifier the CAM baselines explain.

    Parameters
    ----------
    path : a Flip Learning model file (``flip_model.safetensors``), a classifier
        model file (``classifier.safetensors``), a folder holding one of them, or None
        for the shipped 2D model.

    Returns
    -------
    network : the classifier in eval mode (shared: cached per file, do not modify)
    config : ``network``, ``input_size``, ``margin``, ``dims`` and ``path``

    Raises
    ------
    FlipsegError
        No such file, no default model, an unreadable or foreign file, weights
        that do not fit the named network, or a 3D classifier.
    """
    p = _resolve_model_path(path)
    key = str(p.resolve())
    if key not in _MODELS:
        _MODELS[key] = _read_classifier(p)
    return _MODELS[key]


def _read_classifier(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    ckpt = load_bundle(path, "model file")
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == _FLIP_FORMAT:
        inner = ckpt.get("classifier")
        if not isinstance(inner, dict):
            raise FlipsegError(f"{path} has no classifier inside")
        outer_dims = (ckpt.get("config") or {}).get("dims")
    elif fmt == _CLASSIFIER_FORMAT:
        inner, outer_dims = ckpt, None
    else:
        raise FlipsegError(f"{path} is neither a flipseg Flip Learning model nor a classifier")
    ccfg = dict(inner.get("config") or {})
    config = {
        "network": str(ccfg.get("network", "compact")),
        "input_size": int(ccfg.get("input_size", 64)),
        "margin": float(ccfg.get("margin", 0.25)),
        "dims": int(ccfg.get("dims") or outer_dims or 2),
        "path": str(path),
    }
    if config["dims"] != 2:
        raise FlipsegError(f"the CAM baselines are 2D; {path} holds a {config['dims']}D classifier")
    net = build_classifier(config["network"], spatial_dims=2, in_channels=1, num_classes=2)
    try:
        net.load_state_dict(inner["state_dict"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise FlipsegError(f"{path}: weights do not fit network {config['network']!r}: {first}") from None
    return net.eval(), config


# ------------------------------------------------------------ explainer base
class _CamBase:
    """Plumbing shared by the CAM variants; a variant overrides one small method.

    :meth:`feature_maps` runs the network with a forward hook on ``cam_layer``
    (activations ``A [B, C, h, w]``), takes the gradient ``G`` of the summed
    nodule logits with respect to ``A`` (views are independent in eval mode,
    so each view gets its own gradient), and returns
    ``combine(A, cam_weights(x, A, G))``, a map ``[B, h, w]``.
    """

    #: Whether :meth:`cam_weights` needs the gradients (skips the backward pass if not).
    needs_grad: bool = True
    #: Most views per network call (None: any number).
    max_batch: int | None = None

    def __init__(self, network: nn.Module, layer: str) -> None:
        self.network = network
        self.layer_name = layer
        self.layer = network.get_submodule(layer)

    def cam_weights(
        self, x: torch.Tensor, acts: torch.Tensor, grads: torch.Tensor | None
    ) -> torch.Tensor:
        """Weights broadcastable to ``acts [B, C, h, w]``; default: the gradients themselves."""
        return grads

    def combine(self, acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` activations and weights -> map ``[B, h, w]``: ReLU of the weighted sum."""
        return F.relu((weights * acts).sum(1))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Views ``[B, 1, S, S]`` (0-1) -> maps ``[B, h, w]`` on the ``cam_layer`` grid."""
        acts, grads = self.activations_and_gradients(x)
        with torch.no_grad():
            return self.combine(acts, self.cam_weights(x, acts, grads))

    def activations_and_gradients(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``A`` at ``cam_layer`` and ``dA`` of the summed nodule logits (None if not needed)."""
        store: dict[str, torch.Tensor] = {}

        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            store["acts"] = output

        x = x.detach().requires_grad_(self.needs_grad)
        handle = self.layer.register_forward_hook(keep)
        try:
            with torch.set_grad_enabled(self.needs_grad):
                logits = self.network(x)  # [B, 2]
                acts = store["acts"]  # [B, C, h, w]
                grads = None
                if self.needs_grad:
                    (grads,) = torch.autograd.grad(logits[:, NODULE].sum(), acts)
        finally:
            handle.remove()
        return acts.detach(), grads

    @torch.no_grad()
    def logits_with_activations(self, x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 2]`` of ``x`` with ``cam_layer``'s output replaced by ``acts``.

        Runs only the layers after ``cam_layer`` when they read nothing else
        (:attr:`tail`); otherwise the whole network with a replacing hook.
        """
        if self.tail is not None:
            return self.tail(acts)
        handle = self.layer.register_forward_hook(lambda _m, _i, _o: acts)
        try:
            return self.network(x)
        finally:
            handle.remove()

    @cached_property
    def tail(self) -> nn.Module | None:
        """The network after ``cam_layer`` as a module ``acts -> logits`` (None if not separable)."""
        return network_tail(self.network, self.layer_name)


class _LeafTracer(fx.Tracer):
    """Traces a network keeping one named submodule as a single call."""

    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self.leaf or super().is_leaf_module(m, qualname)


def network_tail(network: nn.Module, layer: str) -> nn.Module | None:
    """The part of ``network`` after submodule ``layer``, as a module ``layer output -> output``.

    Found by tracing the network with ``torch.fx``; shares its weights. None
    when the network cannot be traced or when the layers after ``layer`` also
    read earlier results (a skip connection around it).
    """
    try:
        graph = _LeafTracer(layer).trace(network)
    except (fx.proxy.TraceError, TypeError):  # data-dependent control flow
        return None
    nodes = list(graph.nodes)
    cuts = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(cuts) != 1:
        return None
    tail = fx.Graph()
    env = {cuts[0]: tail.placeholder("acts")}
    for node in nodes[nodes.index(cuts[0]) + 1 :]:
        if any(dep not in env for dep in node.all_input_nodes):
            return None
        env[node] = tail.node_copy(node, lambda dep: env[dep])
    return fx.GraphModule(network, tail)


CAM_METHODS: Registry[type[_CamBase]] = Registry("CAM method")


# ------------------------------------------------------ monai.visualize ones
def _no_upsampling(_spatial_size: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    return _identity


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class _MonaiCam(_CamBase):
    """A ``monai.visualize`` CAM class on its own copy of the network.

    monai keeps its hooks on the module for good (and switches in-place ops
    off), so it gets a private copy; the upsampling (to the view) and the
    normalisation (none: Otsu does not need it) are ours.
    """

    #: Name of the ``monai.visualize`` class (imported on first use: monai is slow to import).
    monai_class: str = "GradCAM"

    def __init__(self, network: nn.Module, layer: str) -> None:
        super().__init__(network, layer)
        explainer_class = getattr(import_module("monai.visualize"), self.monai_class)
        self.explainer = explainer_class(
            nn_module=copy.deepcopy(network),
            target_layers=layer,
            upsampler=_no_upsampling,
            postprocessing=_identity,
            **self.monai_options(network),
        )

    def monai_options(self, network: nn.Module) -> dict[str, Any]:
        return {}

    def class_idx(self, batch: int) -> Any:
        return NODULE

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            out = self.explainer(x, class_idx=self.class_idx(len(x)))  # [B, 1, h, w]
        return out.detach()[:, 0]


@CAM_METHODS.register("cam")
class _MonaiCAM(_MonaiCam):
    """Needs the linear layer after global pooling; both our networks call it ``fc``."""

    monai_class = "CAM"

    def monai_options(self, network: nn.Module) -> dict[str, Any]:
        fc = getattr(network, "fc", None)
        if not isinstance(fc, nn.Linear):
            name = type(network).__name__
            raise FlipsegError(f"CAM needs a linear `fc` layer after pooling; {name} has none")
        return {"fc_layers": "fc"}

    def class_idx(self, batch: int) -> Any:
        return torch.full((batch,), NODULE, dtype=torch.long)  # monai CAM iterates over it


@CAM_METHODS.register("gradcam")
class _MonaiGradCAM(_MonaiCam):
    monai_class = "GradCAM"


@CAM_METHODS.register("gradcam++")
class _MonaiGradCAMpp(_MonaiCam):
    monai_class = "GradCAMpp"
    max_batch = 1  # see the module docstring: monai's GradCAMpp mixes up batched scores


# ------------------------------------------------------------------ our own
@CAM_METHODS.register("layercam")
class _LayerCAM(_CamBase):
    def cam_weights(self, x, acts, grads):
        return F.relu(grads)  # per location: [B, C, h, w]


@CAM_METHODS.register("eigengradcam")
class _EigenGradCAM(_CamBase):
    def combine(self, acts, weights):
        prod = weights * acts  # gradient x activation [B, C, h, w]
        b, c, h, w = prod.shape
        rows = prod.reshape(b, c, h * w).transpose(1, 2)  # [B, hw, C]
        centred = rows - rows.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh [B, k, C]
        proj = (centred @ vh[:, 0, :, None])[..., 0]  # [B, hw]
        # an SVD direction has no sign: point it along the plain channel sum
        sign = torch.where((proj * rows.sum(2)).sum(1) < 0, -1.0, 1.0)  # [B]
        return (proj * sign[:, None]).reshape(b, h, w)


@CAM_METHODS.register("ablationcam")
class _AblationCAM(_CamBase):
    """Weights are nodule-logit drops, not divided by the logit as in the original.

    That division is a positive per-view scale when the logit is positive (no
    effect on Otsu) and flips every weight's sign when it is negative. One
    network call per (view, channel), of the layers after ``cam_layer`` only
    where they can be split off (both our classifiers).
    """

    needs_grad = False
    #: Ablated copies per network call.
    chunk: int = 256

    def cam_weights(self, x, acts, grads):
        b, c = acts.shape[:2]
        base = self.logits_with_activations(x, acts)[:, NODULE]  # [B]
        drops = torch.empty(b, c)
        pairs = [(i, k) for i in range(b) for k in range(c)]  # (view, zeroed channel)
        for start in range(0, len(pairs), self.chunk):
            view_idx = torch.tensor([i for i, _ in pairs[start : start + self.chunk]])
            chan_idx = torch.tensor([k for _, k in pairs[start : start + self.chunk]])
            ablated = acts[view_idx].clone()  # [n, C, h, w]
            ablated[torch.arange(len(view_idx)), chan_idx] = 0.0
            logits = self.logits_with_activations(x[view_idx], ablated)
            drops[view_idx, chan_idx] = base[view_idx] - logits[:, NODULE]
        return drops[:, :, None, None]  # [B, C, 1, 1]


def _explainer(method: str, model: str | Path | None) -> _CamBase:
    cls = CAM_METHODS.get(method)
    network, config = load_cam_classifier(model)
    key = (str(Path(config["path"]).resolve()), method)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = cls(network, network.cam_layer)
    return _EXPLAINERS[key]


# ---------------------------------------------------------------- pipeline
def _view(image: np.ndarray, box: Box, margin: float, size: int) -> tuple[Box, np.ndarray]:
    """The view box (grown by ``margin`` per side, clipped) and its input ``(size, size)`` (0-1)."""
    view = box.expand(margin, relative=True).clip(image.shape)
    crop = image[view.slices()].astype(np.float32, copy=False)
    return view, resize(crop, (size, size)) / np.float32(255.0)


def cam_maps(
    images: Sequence[np.ndarray],
    boxes: Sequence[Box],
    *,
    method: str = "gradcam",
    model: str | Path | None = None,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """The CAM of each box at image resolution, cut to the (clipped) box.

    Parameters
    ----------
    images : 2D float arrays (H, W), intensities 0-255
    boxes : one box per image
    method : a name in :data:`CAM_METHODS`
    model : see :func:`load_cam_classifier`
    batch_size : views per network call (gradcam++ uses 1)

    Returns
    -------
    list of float32 arrays, each of its clipped box's shape

    Raises
    ------
    FlipsegError
        Unknown method, no model, an image that is not 2D, a box that is
        empty or outside its image.
    """
    explainer = _explainer(method, model)
    _, config = load_cam_classifier(model)
    views: list[Box] = []
    inputs: list[np.ndarray] = []
    clipped: list[Box] = []
    for image, box in zip(images, boxes, strict=True):
        image = np.asarray(image)
        if image.ndim != 2:
            raise FlipsegError(f"the CAM baselines segment 2D images, got shape {image.shape}")
        box = box.validate(image.shape)
        view, x = _view(image, box, config["margin"], config["input_size"])
        clipped.append(box)
        views.append(view)
        inputs.append(x)
    step = max(1, min(batch_size, explainer.max_batch or batch_size))
    out: list[np.ndarray] = []
    for start in range(0, len(inputs), step):
        x = torch.from_numpy(np.stack(inputs[start : start + step]))[:, None]  # [B, 1, S, S]
        fmaps = explainer.feature_maps(x)  # [B, h, w]
        for fmap, view, box in zip(fmaps, views[start : start + step], clipped[start : start + step]):
            up = F.interpolate(fmap[None, None].float(), size=view.shape, mode="bilinear",
                               align_corners=False)[0, 0]  # view shape, image pixels
            rel = box.relative_to(view)
            out.append(up[rel.slices()].numpy().astype(np.float32))
    return out


def mask_from_cam(cam: np.ndarray) -> np.ndarray | None:
    """Threshold a box-shaped map: Otsu, largest 4-connected component, holes filled.

    Returns None when the map is constant (no threshold separates anything).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if not np.all(np.isfinite(cam)) or not cam.max() > cam.min():
        return None
    fg = cam > threshold_otsu(cam)
    labels, n = ndimage.label(fg)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def cam_segment_many(
    images: Sequence[np.ndarray],
    boxes: Sequence[Box],
    *,
    method: str = "gradcam",
    model: str | Path | None = None,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Masks (bool, image shape, inside the box) of many boxes, network calls batched.

    See :func:`cam_maps` for the parameters and errors; the threshold rule is
    :func:`mask_from_cam`, with the inscribed ellipse for a constant map.
    """
    maps = cam_maps(images, boxes, method=method, model=model, batch_size=batch_size)
    masks = []
    for image, box, cam in zip(images, boxes, maps):
        image = np.asarray(image)
        inside = mask_from_cam(cam)
        if inside is None:
            masks.append(inscribed_ellipse(image, box.clip(image.shape)))
            continue
        mask = np.zeros(image.shape, dtype=bool)
        mask[box.clip(image.shape).slices()] = inside
        masks.append(mask)
    return masks


# ---------------------------------------------------------------- baselines
def _make_baseline(method: str) -> Callable[..., np.ndarray]:
    def baseline(
        image: np.ndarray,
        box: Box,
        *,
        rng: np.random.Generator | None = None,
        model: str | Path | None = None,
    ) -> np.ndarray:
        return cam_segment_many([image], [box], method=method, model=model)[0]

    baseline.__name__ = baseline.__qualname__ = f"{method.replace('+', 'p')}_baseline"
    baseline.__doc__ = (
        f"``{method}`` map of the classifier in ``model`` (default: the shipped one), "
        "thresholded inside the box (see :mod:`flipseg.baselines.cam`). Deterministic; "
        "``rng`` is unused."
    )
    return baseline


for _method in CAM_METHODS:
    register_baseline(
        _method, dims=(2,), model="optional",
        help=f"{_method} map of the Flip classifier (--model: a Flip run), thresholded in the box",
    )(_make_baseline(_method))
