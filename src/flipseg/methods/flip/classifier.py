"""The nodule (0) vs normal-tissue (1) classifier of Flip Learning.

It is trained on pseudo samples made from the boxes alone
(:mod:`flipseg.methods.flip.pseudo`) and later (1) picks each box's eraser
source and (2) scores the partly erased views during erasing.

Files written to the output folder, replaced atomically after every epoch:
``classifier.pt`` (the checkpoint: weights, optimizer state and finished epoch, so
a killed run resumes from its last finished epoch), ``classifier.safetensors``
(the model file others read: format tag, config, weights, epoch and history; see
:mod:`flipseg.bundles`), ``classifier_config.json`` and ``classifier_report.json``
(held-out metrics).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from flipseg.bundles import read_bundle, save_bundle
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save, atomic_write_text
from flipseg.methods.flip.eraser import choose_eraser_sources
from flipseg.methods.flip.pseudo import NORMAL, PseudoSampleDataset
from flipseg.methods.flip.views import to_input, view_box
from flipseg.methods.training import load_checkpoint
from flipseg.metrics import compute_classification_metrics
from flipseg.networks.classifier import build_classifier

__all__ = [
    "CHECKPOINT",
    "CLASSIFIER_3D_PRESET",
    "CLASSIFIER_PAPER_PRESET",
    "MODEL_FILE",
    "ClassifierConfig",
    "FlipClassifier",
    "evaluate_classifier",
    "learning_rate",
    "load_classifier",
    "train_classifier",
    "write_finished_classifier",
]

CHECKPOINT = "classifier.pt"
MODEL_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier_config.json"
REPORT_FILE = "classifier_report.json"
_FORMAT = "flipseg-classifier-1"
# options that may change when a run is resumed
# a new `epochs` reshapes the rest of the schedule; the start weights may be named otherwise
_RESUMABLE = {"epochs", "num_workers", "device", "backbone_weights"}


#: What ``flipseg train flip --dims 3`` changes from the defaults. A volume dataset has
#: few boxes (tens, not thousands), so batches of 128 would give a few dozen updates
#: in all and BatchNorm running statistics that do not match training (every view
#: then scores "normal" in eval mode); the paper's batch of 16, more pseudo samples
#: per box and more epochs fix that. 32^3 inputs.
CLASSIFIER_3D_PRESET: dict[str, Any] = {
    "dims": 3,
    "input_size": 32,
    "batch_size": 16,
    "positives": 4,
    "negatives": 4,
    "epochs": 20,
}


#: What ``flipseg train flip --preset paper`` changes: the paper's ResNet18 and its
#: fill-ratio labels.
CLASSIFIER_PAPER_PRESET: dict[str, Any] = {"network": "resnet18", "fill_scheme": "ratio"}


@dataclass
class ClassifierConfig:
    """Every knob of the classifier and its pseudo samples (saved with the run)."""

    network: str = "compact"
    """Registered network: ``compact`` (small, CPU-friendly), ``resnet18`` (the paper's) or
    ``encoder`` (flipseg's compact ResNet-style encoder, 2D: the one ``backbone_weights``
    can start from the pretrained backbone)."""
    backbone_weights: str = "none"
    """``network=encoder``: its initial weights, ``none`` (random), ``auto``/``shipped``
    (flipseg's own pretrained encoder) or a backbone file (:mod:`flipseg.networks.backbone`)."""
    input_size: int = 64
    """Side of the square (cube) input; 64 in 2D, 32 is a good choice in 3D."""
    margin: float = 0.25
    """Context around a box in its view, as a fraction of the box extent per side."""
    dims: int = 0
    """Spatial dimensions; 0 = taken from the training images."""
    epochs: int = 12
    """Training epochs; each draws fresh pseudo samples from every box (BUS-BRA, compact
    net, CPU: about 10-30 s per epoch, ~0.94 held-out AUC after 12)."""
    batch_size: int = 128
    """Mini-batch size (paper: 128 for BUS)."""
    lr: float = 1e-3
    """AdamW learning rate (paper: 1e-3)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    lr_schedule: str = "cosine"
    """``cosine``: per-epoch cosine decay from ``lr`` to ``lr * lr_min_ratio`` over
    ``epochs`` (epoch 1 always runs at ``lr``); ``constant``: ``lr`` throughout (paper)."""
    lr_min_ratio: float = 0.05
    """Final learning rate of the cosine schedule, relative to ``lr``."""
    positives: int = 2
    """Nodule samples per box per epoch."""
    negatives: int = 2
    """Normal-tissue samples per box per epoch."""
    fill_prob: float = 0.5
    """Probability that a sample is the lesion box partly filled from an eraser
    candidate (superpixel-filling augmentation) instead of a random box."""
    fill_scheme: str = "residual"
    """How filled samples are labelled. ``ratio`` (the paper): a ratio ``r`` of the box is
    filled, ``r <= 0.5`` is a nodule and ``r >= 0.5`` normal tissue. ``residual`` (ours):
    a nodule whenever part of the lesion is left visible (random-order fills up to
    ``residual_random_max``, inner-to-outer fills up to ``residual_inner_max``, outer-to-
    inner fills up to ``residual_outer_max``), normal only once the centre of the box is
    cleared (inner-to-outer fills of at least ``residual_normal_min``). It makes the
    normal score respond to lesion left unerased rather than to the filled area."""
    fill_gap: float = 0.05
    """``ratio`` scheme: fill ratios within this distance of 0.5 are never drawn."""
    fill_random_order: float = 0.3
    """``ratio`` scheme: probability of filling superpixels in random order instead of
    inner-to-outer."""
    residual_random_max: float = 0.7
    """``residual`` scheme: largest ratio of a random-order (nodule) fill."""
    residual_inner_max: float = 0.5
    """``residual`` scheme: largest ratio of an inner-to-outer nodule fill."""
    residual_outer_max: float = 0.6
    """``residual`` scheme: largest ratio of an outer-to-inner (nodule) fill."""
    residual_normal_min: float = 0.8
    """``residual`` scheme: smallest ratio of an inner-to-outer normal fill (the inscribed
    ellipse covers pi/4 ~ 0.79 of a box)."""
    superpixels: int = 200
    """Superpixels per box for the filling augmentation."""
    superpixel_side: int = 0
    """Shortest box side when computing those superpixels; 0 = 100 (2D) / 40 (3D)."""
    flip: bool = True
    """Random left-right flips (and front-back in 3D)."""
    rotation: float = 10.0
    """Maximum rotation in degrees (in the y-x plane)."""
    shift: float = 0.08
    """Maximum shift as a fraction of the input side."""
    gamma_min: float = 0.7
    """Smallest intensity gamma."""
    gamma_max: float = 1.5
    """Largest intensity gamma."""
    seed: int = 0
    """Seed of the weights, the pseudo samples and the batch order."""
    num_workers: int = 0
    """DataLoader worker processes (0: in the main process)."""
    device: str = "cpu"
    """Torch device."""

    def __post_init__(self) -> None:
        checks = {
            "input_size": self.input_size >= 8,
            "margin": self.margin >= 0,
            "dims": self.dims in (0, 2, 3),
            "epochs": self.epochs >= 0,
            "lr_schedule": self.lr_schedule in ("cosine", "constant"),
            "batch_size": self.batch_size >= 2,
            "positives": self.positives >= 0,
            "negatives": self.negatives >= 0,
            "fill_prob": 0.0 <= self.fill_prob <= 1.0,
            "fill_gap": 0.0 < self.fill_gap < 0.5,
            "fill_random_order": 0.0 <= self.fill_random_order <= 1.0,
            "fill_scheme": self.fill_scheme in ("ratio", "residual"),
            "residual_random_max": 0.0 < self.residual_random_max <= 1.0,
            "residual_inner_max": 0.0 < self.residual_inner_max < self.residual_normal_min,
            "residual_outer_max": 0.0 < self.residual_outer_max <= 1.0,
            "residual_normal_min": 0.0 < self.residual_normal_min <= 1.0,
            "superpixels": self.superpixels >= 2,
            "gamma_min": 0 < self.gamma_min <= self.gamma_max,
            "backbone_weights": self.network == "encoder"
            or str(self.backbone_weights).lower() in ("none", "auto"),
        }
        for name, ok in checks.items():
            if not ok:
                raise FlipsegError(f"invalid classifier option {name}={getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlipsegError(f"unknown classifier option(s): {', '.join(unknown)}")
        return cls(**d)


class FlipClassifier:
    """A trained classifier: network + configuration.

    ``normal_score(x)`` maps views ``[B, 1, *S]`` (0-1) to P(normal tissue) ``[B]``.
    """

    def __init__(self, network: torch.nn.Module, config: ClassifierConfig, chunk: int = 512):
        self.network = network.eval()
        self.config = config
        self.chunk = int(chunk)
        self.device = torch.device(config.device)

    @torch.no_grad()
    def normal_score(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probability of *normal* for a batch, in chunks, eval mode, on CPU."""
        self.network.eval()
        outs = [
            torch.softmax(self.network(x[i : i + self.chunk].to(self.device)), dim=1)[:, NORMAL]
            for i in range(0, len(x), self.chunk)
        ]
        return torch.cat(outs).cpu() if outs else torch.zeros(0)

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The callable the eraser selection and the environment use."""
        return self.normal_score

    def score_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[Any]) -> np.ndarray:
        """Normal score of each box's (unerased) view, one batched pass."""
        crops = [np.asarray(im)[view_box(b, np.shape(im), self.config.margin).slices()]
                 for im, b in zip(images, boxes, strict=True)]
        return self.normal_score(to_input(crops, self.config.input_size)).numpy()


def _build(cfg: ClassifierConfig) -> torch.nn.Module:
    return build_classifier(cfg.network, spatial_dims=cfg.dims, in_channels=1, num_classes=2)


def _save_checkpoint(path: Path, cfg: ClassifierConfig, network: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, epoch: int, history: list) -> None:
    """``classifier.pt`` (what :func:`train_classifier` resumes from) and, beside it, the model
    file ``classifier.safetensors`` (what :func:`load_classifier` and the CAM baselines read)."""
    state = {"format": _FORMAT, "config": cfg.to_dict(), "state_dict": network.state_dict(),
             "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history}
    atomic_save(path, lambda tmp: torch.save(state, tmp))
    _save_model(path.parent / MODEL_FILE, cfg, network, epoch, history)


def _save_model(path: Path, cfg: ClassifierConfig, network: torch.nn.Module, epoch: int,
                history: list) -> None:
    # the model file runs on the CPU wherever it was trained
    save_bundle(path, {"format": _FORMAT, "config": {**cfg.to_dict(), "device": "cpu"},
                       "state_dict": network.state_dict(),
                       "epoch": epoch, "history": history})


def write_finished_classifier(classifier: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the classifier held in a Flip model bundle (``bundle["classifier"]``) to
    ``out_dir`` as a finished run: ``classifier.pt`` at its configured epochs (fresh
    optimizer state), ``classifier.safetensors`` and ``classifier_config.json``.
    :func:`train_classifier` on that folder then loads it and trains no further. Returns
    the folder."""
    cfg = ClassifierConfig.from_dict(classifier["config"])
    network = _build(cfg)
    network.load_state_dict(classifier["state_dict"])
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _save_checkpoint(out / CHECKPOINT, cfg, network, optimizer, cfg.epochs, [])
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))
    return out


def load_classifier(path: str | Path) -> FlipClassifier:
    """Load ``classifier.safetensors`` (or a folder holding it) written by :func:`train_classifier`."""
    path = Path(path)
    if not path.exists():
        raise FlipsegError(f"classifier not found: {path}")
    ckpt = read_bundle(path, MODEL_FILE, _FORMAT, "classifier")
    cfg = ClassifierConfig.from_dict(ckpt["config"])
    net = _build(cfg)
    net.load_state_dict(ckpt["state_dict"])
    return FlipClassifier(net.to(cfg.device), cfg)


@torch.no_grad()
def evaluate_classifier(
    model: FlipClassifier, dataset: PseudoSampleDataset, *, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and AUC on a pseudo-sample set (normal = positive)."""
    dataset.set_epoch(0)
    xs, ys = [], []
    for i in range(len(dataset)):
        x, y = dataset[i]
        xs.append(x)
        ys.append(y)
    chunks = [torch.stack(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
    scores = torch.cat([model.normal_score(c) for c in chunks]).numpy()
    out = compute_classification_metrics(np.asarray(ys), scores)
    out["n"] = len(ys)
    return out


def _box_view_checks(model: FlipClassifier, samples: Sequence[dict]) -> dict[str, float]:
    """How the classifier treats the real use: lesion views and their best eraser source."""
    usable = [s for s in samples if s.get("box") is not None]
    if not usable:
        return {}
    images = [s["image"] for s in usable]
    boxes = [s["box"] for s in usable]
    lesion = model.score_boxes(images, boxes)
    cfg = model.config
    try:
        chosen = choose_eraser_sources(images, boxes, model.scorer(), mode="classifier",
                                       margin=cfg.margin, size=cfg.input_size)
    except FlipsegError:  # a box covering its whole image has no source
        chosen = []
    best = np.array([c[2] for c in chosen], dtype=float)
    nan = float("nan")
    return {
        "lesion_views_called_nodule": float(np.mean(lesion < 0.5)),
        "lesion_view_mean_normal_score": float(np.mean(lesion)),
        "best_source_views_called_normal": float(np.mean(best >= 0.5)) if len(best) else nan,
        "best_source_view_mean_normal_score": float(np.mean(best)) if len(best) else nan,
    }


def learning_rate(cfg: ClassifierConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` (a pure function: resuming needs no scheduler state)."""
    if cfg.lr_schedule == "constant" or cfg.epochs <= 1:
        return cfg.lr
    t = epoch / (cfg.epochs - 1)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train_classifier(
    train_samples: Sequence[dict],
    val_samples: Sequence[dict],
    cfg: ClassifierConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> tuple[FlipClassifier, dict[str, Any]]:
    """Train nodule (0) vs normal (1) on pseudo samples of the training boxes.

    Resumes from ``out_dir/classifier.pt`` when it exists (same options except
    ``epochs``, ``num_workers``, ``device``). Same seed, same weights.

    Parameters
    ----------
    train_samples : sample dicts with ``image`` and ``box``
    val_samples : held-out sample dicts (may be empty); metrics are on their
        pseudo samples, drawn with a fixed seed and no augmentation
    cfg : options
    out_dir : folder for ``classifier.pt``, ``classifier.safetensors``,
        ``classifier_config.json``, ``classifier_report.json``
    progress : show progress bars

    Returns
    -------
    (FlipClassifier, report dict)
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = {np.ndim(s["image"]) for s in train_samples if s.get("box") is not None}
    if len(dims) != 1:
        raise FlipsegError(
            f"classifier training needs boxes on all-2D or all-3D images, got {sorted(dims)}D"
        )
    nd = dims.pop()
    if cfg.dims and cfg.dims != nd:
        raise FlipsegError(f"classifier option dims={cfg.dims} but the images are {nd}D")
    cfg = replace(cfg, dims=nd)
    device = torch.device(cfg.device)

    torch.manual_seed(cfg.seed)
    network = _build(cfg).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, history = 0, []
    ckpt_path = out / CHECKPOINT
    ckpt = load_checkpoint(ckpt_path, cfg.to_dict(), _RESUMABLE)
    if ckpt is None and cfg.network == "encoder":  # a resumed run has its own weights
        from flipseg.networks.backbone import load_backbone

        load_backbone(network.encoder, cfg.backbone_weights, network.layout)
    if ckpt is not None:
        network.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))

    train_set = PseudoSampleDataset(train_samples, cfg, cfg.seed, progress=progress)
    val_set = (
        PseudoSampleDataset(val_samples, cfg, cfg.seed + 1, augment=False, progress=progress)
        if any(s.get("box") is not None for s in val_samples) else None
    )
    model = FlipClassifier(network, cfg)
    loss_fn = torch.nn.CrossEntropyLoss()

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(train_set) > cfg.batch_size,  # no batch of one for BatchNorm
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        )
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        network.train()
        total, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(loader, desc=f"classifier {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            logits = network(x)  # [B, 2]
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(total, 1),
            "train_accuracy": correct / max(total, 1),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        if val_set is not None:
            m = evaluate_classifier(model, val_set)
            row |= {"val_accuracy": m["accuracy"], "val_auc": m["auc"]}
        history.append(row)
        _save_checkpoint(ckpt_path, cfg, network, optimizer, epoch + 1, history)
        if progress:
            summary = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            tqdm.write(f"classifier epoch {epoch + 1}: {summary}")

    if not ckpt_path.exists():  # epochs == 0: keep the untrained weights loadable
        _save_checkpoint(ckpt_path, cfg, network, optimizer, 0, [])
    if not (out / MODEL_FILE).exists():  # a run finished by an older flipseg (checkpoint only)
        _save_model(out / MODEL_FILE, cfg, network, max(start_epoch, cfg.epochs), history)
    network.eval()
    report: dict[str, Any] = {
        "n_train_boxes": len(train_set.boxes),
        "n_val_boxes": len(val_set.boxes) if val_set is not None else 0,
        "skipped_boxes": train_set.skipped,
        "epochs": cfg.epochs,
        "positive_class": "normal",
        "validation": evaluate_classifier(model, val_set) if val_set is not None else None,
        "box_views": _box_view_checks(model, val_samples),
        "history": history,
    }
    secs = [r["seconds"] for r in history]
    report["seconds_per_epoch"] = float(np.mean(secs)) if secs else None
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2, default=_json_default))
    return model, report


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"cannot write {type(v).__name__} to JSON")
