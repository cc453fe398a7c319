"""Tumor-vs-normal CAM classifiers, Algorithm 1 and the ROI-stability selection rule.

Classifiers (paper 002, section II-A). Each *branch* is a backbone, an optional
attention-modulation module (AMM), global average pooling and a linear layer
over two classes, :data:`TUMOR` (0, the index the CAM baselines of
:mod:`flipseg.baselines.cam` explain) and :data:`NORMAL` (1). Its class
activation map is ``ReLU(sum_c w[TUMOR, c] * F_c)`` on the last feature grid
(Zhou et al. 2016). Two variants:

``cam``  one plain branch: the ResNet50-CAM baseline (with ``backbone=resnet50``);
``amr``  a *spotlight* branch (plain) and a *compensation* branch whose features
         pass an AMM, trained with a cross-entropy per branch plus the L1 distance
         between their normalised CAMs; the map is the sum of both normalised
         CAMs. This follows AMR (Qin et al., AAAI 2022) in spirit: the AMM is a
         channel then spatial attention whose spatial map is re-shaped by a
         Gaussian around its mean, so mid-level locations are weighted up
         relative to the most discriminative peak.

ResNets are MONAI's, randomly initialised (nothing is downloaded), with the
last stage's stride set to 1 (output stride 16, as is usual for CAMs).

Selection (section II-B): the map is min-max normalised to 0-255;
:func:`top_percent_threshold` is Algorithm 1 (the lowest level ``T`` such that
at most ``alpha``% of the pixels are ``>= T``); :func:`roi_from_cam` turns the
pixels in ``[T, upper]`` into a box; :func:`select_image` keeps an image when
the boxes at ``alpha1`` and ``alpha2`` overlap with IoU > 0.7.

Run folder of :func:`train_cam_classifier`: ``config.json``,
``cam_checkpoint.pt`` (after every epoch; a re-run resumes), ``train_log.csv``
and the bundle ``cam_classifier.safetensors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from flipseg.baselines.cam import CAM_METHODS, NODULE
from flipseg.boxes import Box
from flipseg.bundles import load_torch_file, locate, read_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.cam_mt.config import CamClassifierConfig, SelectionConfig
from flipseg.methods.training import (
    cpu_state,
    epoch_state,
    final_model,
    open_run,
    resume_epochs,
    save_epoch,
    set_threads,
)
from flipseg.methods.whole_image import images_to_batch
from flipseg.registry import Registry

__all__ = [
    "BACKBONES",
    "NORMAL",
    "TUMOR",
    "AttentionModulation",
    "CamBranch",
    "CamClassifier",
    "RoiSelection",
    "augment_classifier_batch",
    "cam_classifier_loss",
    "compute_cams",
    "is_tumor",
    "load_backbone_weights",
    "load_pretrained",
    "load_cam_classifier_model",
    "normalize_cam",
    "roi_from_cam",
    "rois_agree",
    "select_image",
    "top_percent_threshold",
    "train_cam_classifier",
]

#: Class indices of the classifier's logits (tumor first, as in :mod:`flipseg.baselines.cam`).
TUMOR = NODULE
NORMAL = 1 - NODULE

CHECKPOINT = "cam_checkpoint.pt"
MODEL_FILE = "cam_classifier.safetensors"
_FORMAT = "flipseg-cam-classifier-1"
#: Options added after classifiers were first saved: what a bundle without them was trained with.
LEGACY_VALUES: dict[str, Any] = {"convs_per_block": 1, "pooling": "avg", "augment": False}

#: name -> factory ``cfg -> (module [B,1,S,S] -> [B,C,h,w], C)``.
BACKBONES: Registry[Callable[[CamClassifierConfig], tuple[nn.Module, int]]] = Registry("CAM backbone")


# ------------------------------------------------------------------ networks
@BACKBONES.register("compact")
def _compact_backbone(cfg: CamClassifierConfig) -> tuple[nn.Module, int]:
    """Blocks of ``convs_per_block`` Conv-BN-ReLU; every block but the last halves the resolution."""
    blocks: list[nn.Module] = []
    cin = 1
    for i, cout in enumerate(cfg.widths):
        for j in range(cfg.convs_per_block):
            stride = 2 if i < len(cfg.widths) - 1 and j == 0 else 1
            blocks += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
    return nn.Sequential(*blocks), cin


def _monai_resnet(name: str) -> Callable[[CamClassifierConfig], tuple[nn.Module, int]]:
    def factory(cfg: CamClassifierConfig) -> tuple[nn.Module, int]:
        from monai.networks import nets

        net = getattr(nets, name)(pretrained=False, spatial_dims=2, n_input_channels=1, num_classes=2)
        for m in net.layer4.modules():  # last stage at stride 1: a 16x finer grid than 32x
            if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
                m.stride = (1, 1)
        body = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool,
                             net.layer1, net.layer2, net.layer3, net.layer4)
        return body, int(net.fc.in_features)

    factory.__name__ = f"_{name}_backbone"
    return factory


BACKBONES.register("resnet18")(_monai_resnet("resnet18"))
BACKBONES.register("resnet50")(_monai_resnet("resnet50"))


class EncoderFeatures(nn.Module):
    """The last feature grid of a :class:`flipseg.networks.hybrid.ResNetEncoder` (the layout
    of flipseg's pretrained backbone), its deepest stages run at stride 1 so that the grid
    is ``input / output_stride``. Stride changes no weight, so the backbone loads as it is."""

    def __init__(self, layout: str, output_stride: int) -> None:
        super().__init__()
        from flipseg.networks.hybrid import ENCODERS, ResNetEncoder

        self.encoder = ResNetEncoder(ENCODERS.get(layout))
        keep = {32: 4, 16: 3, 8: 2}[output_stride]  # stages (of 4) that still halve the grid
        for i, stage in enumerate(self.encoder.stages):
            if i + 1 > keep:
                for m in stage.modules():
                    if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
                        m.stride = (1, 1)
        self.out_channels = self.encoder.out_channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder.pool(self.encoder.stem(x))
        for stage in self.encoder.stages:
            f = stage(f)
        return f


@BACKBONES.register("encoder")
def _encoder_backbone(cfg: CamClassifierConfig) -> tuple[nn.Module, int]:
    """flipseg's ResNet-style encoder (layout ``cfg.encoder``), which ``backbone_weights``
    ``shipped``/``auto`` initialise from the pretrained backbone."""
    net = EncoderFeatures(cfg.encoder, cfg.output_stride)
    return net, int(net.out_channels)


#: ResNet names (torchvision / MONAI) -> index in the CAM backbone's ``nn.Sequential``.
_RESNET_PREFIXES = {"conv1.": "0.", "bn1.": "1.", "layer1.": "4.", "layer2.": "5.", "layer3.": "6.",
                    "layer4.": "7."}


def load_pretrained(model: "CamClassifier", weights: str) -> str | None:
    """Initialise every branch's backbone from ``weights`` (``backbone_weights``); returns a
    line saying what was loaded, or None for random initialisation.

    ``none``/empty: nothing. ``auto``: flipseg's shipped backbone when the backbone is
    ``encoder`` of a shipped layout, else nothing. ``shipped`` or a flipseg backbone
    (``backbone.safetensors`` or its run folder): into ``encoder``, or mapped into a MONAI
    ``resnet18`` of the same layout. Anything else: a ResNet state dict
    (:func:`load_backbone_weights`)."""
    from flipseg.networks.backbone import load_backbone, load_backbone_into_resnet

    w = str(weights or "").strip()
    if w.lower() in ("", "none"):
        return None
    cfg = model.cfg
    flipseg_bundle = w.lower() in ("auto", "shipped") or _is_flipseg_backbone(w)
    if not flipseg_bundle:
        n = load_backbone_weights(model, w)
        return f"backbone weights: {n['loaded']} tensors loaded, {n['skipped']} not used"
    if cfg.backbone == "encoder":
        loaded = [load_backbone(b.features.encoder, w, cfg.encoder) for b in _own_backbones(model)]
    elif cfg.backbone == "resnet18" and w.lower() != "auto":
        loaded = [load_backbone_into_resnet(_ResNetView(b.features), w, "resnet18")
                  for b in _own_backbones(model)]
    elif w.lower() == "auto":
        return None
    else:
        raise FlipsegError(f"backbone_weights={w}: a flipseg backbone fits backbone=encoder "
                           f"(or resnet18), not {cfg.backbone}")
    return None if loaded[0] is None else f"backbone: {loaded[0]}"


def _is_flipseg_backbone(path: str) -> bool:
    from flipseg.networks.backbone import BACKBONE_FILE

    p = Path(path)
    return p.name == BACKBONE_FILE or (p.is_dir() and (p / BACKBONE_FILE).is_file())


def _own_backbones(model: "CamClassifier") -> list["CamBranch"]:
    """The branches whose backbone is their own (a shared one is loaded once)."""
    out: list[CamBranch] = []
    for b in model.branches:
        if not any(b.features is o.features for o in out):
            out.append(b)
    return out


class _ResNetView(nn.Module):
    """MONAI ResNet names over the CAM ``resnet*`` body (``nn.Sequential``: conv1, bn1, act,
    maxpool, layer1-4) so that :func:`load_backbone_into_resnet` can fill it."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.conv1, self.bn1 = body[0], body[1]
        self.layer1, self.layer2, self.layer3, self.layer4 = body[4], body[5], body[6], body[7]


def load_backbone_weights(model: "CamClassifier", path: str | Path) -> dict[str, int]:
    """Copy a ResNet state dict into every branch's backbone (see ``backbone_weights``).

    Returns ``{"loaded": n, "skipped": m}``: tensors copied, and tensors of the file that
    have no place of the same shape (e.g. ``fc``). Raises FlipsegError for an unreadable
    file or one from which nothing fits.
    """
    state = load_torch_file(locate(path, (), "backbone weights"), "backbone weights", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FlipsegError(f"{path} holds no state dict")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        for old, new in _RESNET_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    loaded, skipped = 0, 0
    for branch in model.branches:
        target = branch.features.state_dict()
        fit = {}
        for key, value in renamed.items():
            if key not in target:
                continue
            want = target[key].shape
            if value.ndim == 4 and len(want) == 4 and value.shape[1] == 3 and want[1] == 1:
                value = value.sum(1, keepdim=True)  # RGB first layer -> greyscale
            if value.shape == target[key].shape:
                fit[key] = value
        branch.features.load_state_dict(fit, strict=False)
        loaded, skipped = len(fit), len(renamed) - len(fit)
    if loaded == 0:
        raise FlipsegError(f"no tensor of {path} fits the {model.cfg.backbone} backbone "
                           f"(expected ResNet names conv1/bn1/layer1-4, or this backbone's own)")
    return {"loaded": loaded, "skipped": skipped}


class AttentionModulation(nn.Module):
    """Channel attention, then a spatial attention re-shaped by a Gaussian (AMR's AMM, simplified).

    ``F [B, C, h, w] -> F * a_c * g(a_s)`` with ``a_c = sigmoid(MLP(avg F) + MLP(max F))``,
    ``a_s = sigmoid(conv7x7([mean_c, max_c]))`` and
    ``g(a) = exp(-(a - mean a)^2 / (2 var a))`` per image: locations of average attention
    keep their features, the extremes (the peak the spotlight branch already has, and the
    far background) are damped.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channel_mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                         nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        a_c = torch.sigmoid(self.channel_mlp(f.mean((2, 3))) + self.channel_mlp(f.amax((2, 3))))  # [B, C]
        g = f * a_c[:, :, None, None]
        a_s = torch.sigmoid(self.spatial(torch.cat([g.mean(1, keepdim=True), g.amax(1, keepdim=True)], 1)))
        mu = a_s.mean((2, 3), keepdim=True)
        var = a_s.var((2, 3), keepdim=True, unbiased=False) + 1e-6
        return g * torch.exp(-((a_s - mu) ** 2) / (2 * var))  # [B, C, h, w]


class CamBranch(nn.Module):
    """Backbone (+ AMM), pooling, linear layer; ``cam_layer`` names the CAM features.

    ``forward(x [B,1,S,S]) -> logits [B, 2]``; :meth:`forward_with_cam` also returns the tumor
    CAM ``[B, h, w]``. ``cam_layer`` and ``fc`` make it usable by the explainers of
    :data:`flipseg.baselines.cam.CAM_METHODS`. With ``pooling="avg"`` the logits are
    ``fc(mean F)``; otherwise ``fc`` scores every location and the scores are pooled
    (for ``avg`` the two are the same).
    """

    def __init__(self, features: nn.Module, channels: int, *, modulate: bool,
                 pooling: str = "avg", lse_r: float = 5.0) -> None:
        super().__init__()
        self.features = features
        self.amm = AttentionModulation(channels) if modulate else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 2)
        self.cam_layer = "amm" if modulate else "features"
        self.pooling, self.lse_r = pooling, lse_r

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        if self.pooling == "avg":
            return self.fc(self.pool(f).flatten(1))
        scores = torch.einsum("bchw,kc->bkhw", f, self.fc.weight).flatten(2)  # [B, 2, h*w]
        if self.pooling == "max":
            pooled = scores.amax(-1)
        else:  # lse: (1/r) log mean exp(r s)
            r = self.lse_r
            pooled = (torch.logsumexp(r * scores, -1) - np.log(scores.shape[-1])) / r
        return pooled + self.fc.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.amm(self.features(x)))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.amm(self.features(x))  # [B, C, h, w]
        logits = self._logits(f)  # [B, 2]
        cam = F.relu(torch.einsum("bchw,c->bhw", f, self.fc.weight[TUMOR]))  # [B, h, w]
        return logits, cam


class CamClassifier(nn.Module):
    """One branch (``variant="cam"``) or spotlight + compensation branches (``"amr"``).

    ``forward(x [B,1,S,S]) -> logits [B, 2]`` (the mean of the branches' logits);
    :meth:`branch_outputs` gives ``(logits, cam)`` per branch for training.
    """

    def __init__(self, cfg: CamClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        features, channels = BACKBONES.get(cfg.backbone)(cfg)
        pool = {"pooling": cfg.pooling, "lse_r": cfg.lse_r}
        self.spotlight = CamBranch(features, channels, modulate=False, **pool)
        self.compensation: CamBranch | None = None
        if cfg.variant == "amr":
            comp = features if cfg.shared_backbone else BACKBONES.get(cfg.backbone)(cfg)[0]
            self.compensation = CamBranch(comp, channels, modulate=True, **pool)

    @property
    def branches(self) -> list[CamBranch]:
        return [self.spotlight] + ([self.compensation] if self.compensation is not None else [])

    def branch_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [b.forward_with_cam(x) for b in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b(x) for b in self.branches]).mean(0)


def _unit_max(cam: torch.Tensor) -> torch.Tensor:
    """``[B, h, w]`` maps divided by their per-map maximum (all-zero maps stay zero)."""
    return cam / (cam.amax((1, 2), keepdim=True) + 1e-5)


def cam_classifier_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    cam_loss_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the branches' cross-entropies plus ``cam_loss_weight`` x L1(normalised CAMs).

    Parameters
    ----------
    outputs : ``(logits [B, 2], cam [B, h, w])`` per branch (one or two)
    labels : ``[B]`` class indices (:data:`TUMOR` / :data:`NORMAL`)
    class_weights : ``[2]`` cross-entropy weights, or None

    Returns
    -------
    (loss, {"ce": ..., "cam_l1": ...})
    """
    ce = sum(F.cross_entropy(logits, labels, weight=class_weights) for logits, _ in outputs)
    l1 = torch.zeros(())
    if len(outputs) == 2:
        l1 = (_unit_max(outputs[0][1]) - _unit_max(outputs[1][1])).abs().mean()
    return ce + cam_loss_weight * l1, {"ce": float(ce.detach()), "cam_l1": float(l1.detach())}


# ------------------------------------------------------------------- CAMs
def _inputs(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """2D images (0-255) -> ``[B, 1, size, size]`` in 0-1."""
    return images_to_batch(images, size, what="cam-mt works on")


def compute_cams(
    model: CamClassifier,
    images: Sequence[np.ndarray],
    *,
    method: str | None = None,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Tumor maps of whole images at image resolution, each scaled to a maximum of 1.

    Every branch's map (``method``, default ``model.cfg.cam_method``) is divided by its
    maximum, the branches' maps are added, upsampled bilinearly to the image and divided
    by the maximum again (an all-zero map stays zero).

    Returns float32 arrays of each image's shape. Raises FlipsegError for an unknown
    method or an image that is not 2D.
    """
    method = method or model.cfg.cam_method
    model.eval()
    explainers = None
    if method != "cam":
        explainers = [CAM_METHODS.get(method)(b, b.cam_layer) for b in model.branches]
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = _inputs(chunk, model.cfg.input_size)
        if explainers is None:
            with torch.no_grad():
                maps = [cam for _, cam in model.branch_outputs(x)]
        else:
            maps = [F.relu(e.feature_maps(x)) for e in explainers]
        total = sum(_unit_max(m.detach().float()) for m in maps)  # [B, h, w]
        for m, im in zip(total, chunk):
            up = F.interpolate(m[None, None], size=np.shape(im), mode="bilinear", align_corners=False)
            up = up[0, 0].clamp_min(0).numpy()
            peak = float(up.max())
            out.append((up / peak if peak > 0 else up).astype(np.float32))
    return out


# --------------------------------------------------------------- selection
def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Min-max scale a map to integers 0-255 (uint8); a constant map becomes all zero."""
    cam = np.asarray(cam, dtype=np.float64)
    if not np.all(np.isfinite(cam)):
        raise FlipsegError("CAM has NaN or infinite values")
    lo, hi = float(cam.min()), float(cam.max())
    if hi <= lo:
        return np.zeros(cam.shape, np.uint8)
    return np.rint((cam - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _as_levels(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise FlipsegError(f"a CAM must be 2D, got shape {cam.shape}")
    if cam.dtype != np.uint8:
        if not (np.all(np.isfinite(cam)) and cam.min() >= 0 and cam.max() <= 255
                and np.all(cam == np.round(cam))):
            raise FlipsegError("a normalised CAM holds integers 0-255 (see normalize_cam)")
        cam = cam.astype(np.uint8)
    return cam


def top_percent_threshold(cam: np.ndarray, alpha: float) -> int:
    """Algorithm 1: the smallest level ``T`` with ``#{pixels >= T} <= alpha% of all pixels``.

    Parameters
    ----------
    cam : 2D normalised map, integers 0-255 (:func:`normalize_cam`)
    alpha : percent, in (0, 100]

    Returns
    -------
    T in 0..255 (0 only for ``alpha=100``); 255 when no level fits, i.e. when the pixels
    at 255 alone are more than ``alpha``% of the map (a flat peak), so the peak is
    still the ROI.

    Raises
    ------
    FlipsegError
        ``alpha`` outside (0, 100] or a map that is not 2D integers 0-255.
    """
    if not 0 < alpha <= 100:
        raise FlipsegError(f"alpha {alpha!r} must be a percentage in (0, 100]")
    cam = _as_levels(cam)
    hist = np.bincount(cam.ravel(), minlength=256)  # H(i)
    from_top = np.cumsum(hist[::-1])[::-1]  # C(i) = sum_{j >= i} H(j)
    fits = np.flatnonzero(from_top <= alpha / 100.0 * cam.size)
    return int(fits[0]) if fits.size else 255


def roi_from_cam(
    cam: np.ndarray, alpha: float, *, upper: int = 255, mode: str = "largest"
) -> Box | None:
    """Box around the pixels of the normalised map in ``[T, upper]``, ``T`` from Algorithm 1.

    ``mode="largest"``: the bounding box of the largest 8-connected region of those
    pixels (ties: the first in row-major order); ``"all"``: of all of them. None when no
    pixel is selected (e.g. a constant map).
    """
    if mode not in ("largest", "all"):
        raise FlipsegError(f"ROI mode {mode!r} must be 'largest' or 'all'")
    cam = _as_levels(cam)
    t = top_percent_threshold(cam, alpha)
    sel = (cam >= t) & (cam <= upper)
    if not sel.any():
        return None
    if mode == "largest":
        labels, n = ndimage.label(sel, structure=np.ones((3, 3), bool))
        if n > 1:
            sel = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return Box.from_mask(sel)


def rois_agree(roi1: Box | None, roi2: Box | None, iou_threshold: float = 0.7) -> bool:
    """The selection rule: both ROIs exist and their IoU is strictly above ``iou_threshold``."""
    return roi1 is not None and roi2 is not None and roi1.iou(roi2) > iou_threshold


@dataclass(frozen=True)
class RoiSelection:
    """Outcome of the selection for one image."""

    threshold1: int
    """Algorithm 1's level at ``alpha1``."""
    threshold2: int
    """Algorithm 1's level at ``alpha2``."""
    roi1: Box | None
    """The broader ROI (also the engine's box prompt); None when nothing was selected."""
    roi2: Box | None
    """The narrower ROI."""
    iou: float
    """IoU of the two ROIs (0 when one is missing)."""
    selected: bool
    """Whether the image joins the pseudo-labelled subset L."""


def select_image(cam: np.ndarray, cfg: SelectionConfig | None = None) -> RoiSelection:
    """Normalise ``cam`` to 0-255, take the ROIs at ``alpha1`` and ``alpha2``, apply the rule."""
    cfg = cfg or SelectionConfig()
    levels = normalize_cam(cam)
    rois = [roi_from_cam(levels, a, upper=cfg.upper_intensity, mode=cfg.roi_mode)
            for a in (cfg.alpha1, cfg.alpha2)]
    iou = rois[0].iou(rois[1]) if rois[0] is not None and rois[1] is not None else 0.0
    return RoiSelection(
        threshold1=top_percent_threshold(levels, cfg.alpha1),
        threshold2=top_percent_threshold(levels, cfg.alpha2),
        roi1=rois[0], roi2=rois[1], iou=float(iou),
        selected=rois_agree(rois[0], rois[1], cfg.iou_threshold),
    )


# ---------------------------------------------------------------- training
def is_tumor(sample: dict[str, Any]) -> bool:
    """Image-level label: benign or malignant (or, without a label, a non-empty mask)."""
    label = sample.get("label")
    if label is not None:
        return label in ("benign", "malignant")
    mask = sample.get("mask")
    return mask is not None and bool(np.any(mask))


def load_cam_classifier_model(path: str | Path) -> CamClassifier:
    """A trained classifier from its bundle (``cam_classifier.safetensors``) or its run folder."""
    bundle = read_bundle(path, MODEL_FILE, _FORMAT, "cam-mt classifier")
    model = CamClassifier(CamClassifierConfig.from_dict(LEGACY_VALUES | bundle["config"]))
    model.load_state_dict(bundle["state_dict"])
    return model.eval()


def _bundle(model: CamClassifier) -> dict[str, Any]:
    return {"format": _FORMAT, "config": model.cfg.to_dict(), "state_dict": cpu_state(model.state_dict())}


def augment_classifier_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random resized crop (75-100 % of each side), rotation (+-10 deg) and gamma (0.7-1.4).

    ``x [B, 1, S, S]`` in 0-1 -> same shape; one draw per image from ``g``.
    """
    b = x.shape[0]
    u = torch.rand(b, 6, generator=g)
    scale = 0.75 + 0.25 * u[:, :2]  # [B, 2] crop side / image side (x, y)
    shift = (1 - scale) * (2 * u[:, 2:4] - 1)  # crop centre, normalised coordinates
    angle = torch.deg2rad(20 * u[:, 4] - 10)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([scale[:, 0] * cos, -scale[:, 1] * sin, shift[:, 0]], 1),
        torch.stack([scale[:, 0] * sin, scale[:, 1] * cos, shift[:, 1]], 1),
    ], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp(np.log(0.7) + (np.log(1.4) - np.log(0.7)) * u[:, 5])
    return out.clamp(0, 1) ** gamma[:, None, None, None]


def train_cam_classifier(
    samples: Sequence[dict[str, Any]],
    cfg: CamClassifierConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train the tumor-vs-normal classifier on image-level labels only; returns the bundle path.

    Labels come from :func:`is_tumor`; masks and boxes are never read. ``device``: ``cpu``,
    ``cuda`` or ``auto`` (one process). Raises FlipsegError when one of the two classes is
    missing.
    """
    from flipseg.devices import resolve_device

    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("epochs", "backbone_weights"))
    labels = torch.tensor([TUMOR if is_tumor(s) else NORMAL for s in samples], dtype=torch.long)
    counts = torch.bincount(labels, minlength=2)
    if int(counts.min()) == 0:
        raise FlipsegError(
            f"the CAM classifier needs tumor and normal images; got {int(counts[TUMOR])} tumor "
            f"and {int(counts[NORMAL])} normal (BUSI: load it with include_normal=True)"
        )
    set_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    model = CamClassifier(cfg)
    dev = torch.device(resolve_device(device))
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    weights = (len(labels) / (2.0 * counts.float())).to(dev) if cfg.balance_classes else None
    saved_parts = {"net": model, "opt": opt}
    start, log = resume_epochs(state, saved_parts)
    if state is None:  # a resumed run has its own weights
        said = load_pretrained(model, cfg.backbone_weights)
        if said and progress:
            tqdm.write(said)
    x_all = _inputs([s["image"] for s in samples], cfg.input_size)  # [N, 1, S, S]
    steps = max(1, int(np.ceil(len(samples) / cfg.batch_size)))
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(samples), generator=g)
        flips = torch.rand(len(samples), generator=g) < (0.5 if cfg.hflip else 0.0)
        model.train()
        tot = {"loss": 0.0, "ce": 0.0, "cam_l1": 0.0, "correct": 0.0}
        bar = tqdm(range(steps), desc=f"CAM classifier {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = torch.where(flips[idx][:, None, None, None], x_all[idx].flip(-1), x_all[idx])
            if cfg.augment:
                xb = augment_classifier_batch(xb, g)
            outputs = model.branch_outputs(xb.to(dev))
            loss, parts = cam_classifier_loss(outputs, labels[idx].to(dev), class_weights=weights,
                                              cam_loss_weight=cfg.cam_loss_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mean_logits = torch.stack([lg for lg, _ in outputs]).mean(0).detach()
            tot["correct"] += float((mean_logits.argmax(1).cpu() == labels[idx]).sum())
            tot["loss"] += loss.item()
            tot["ce"] += parts["ce"]
            tot["cam_l1"] += parts["cam_l1"]
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        row = {"epoch": epoch + 1, "loss": tot["loss"] / steps, "ce": tot["ce"] / steps,
               "cam_l1": tot["cam_l1"] / steps, "train_acc": tot["correct"] / len(samples),
               "seconds": time.time() - t0}
        log.append(row)
        model.eval()
        state = epoch_state(cfg.to_dict(), saved_parts, epoch, log)
        save_epoch(run, (CHECKPOINT, state), (MODEL_FILE, _bundle(model)), log, progress=progress,
                   label="cam classifier ")
    return final_model(run / MODEL_FILE, lambda: _bundle(model))
