"""Two-stage sequential semi-supervised LA-Net training (paper 003, Algorithm 1).

Stage 1 trains the feature extractor and the LA-Net head on the images that
keep a location label (``loc_fraction`` of the training images, chosen by
patient), with the localization loss alone. Stage 2 trains everything on all
images with the hybrid loss

    L = lam * L_cls + (1 - lam) * (L_loc + alpha * L_loc_pseudo)

where images without a location label get a pseudo label (their own lesion map
binarized at ``threshold``) only when their top class probability exceeds
``tau``. Cross-entropy everywhere (binary for the lesion maps). Benign vs
malignant only: "normal" and unlabelled images are left out.

Run folder: ``config.json``, ``location_labels.json`` (which training cases
kept their location label), ``lanet_checkpoint.pt`` (after every epoch; a
re-run resumes), ``train_log.csv`` and the inference bundle ``lanet_model.safetensors``
(the stage-2 epoch with the best validation accuracy, the last one without a
validation set).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flipseg.data.splits import split_by_patient
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods.lanet.config import LANetConfig
from flipseg.methods.lanet.predict import CLASS_NAMES, MODEL_FILE, LANetModel, to_input
from flipseg.methods.training import (
    device_of,
    final_model,
    open_run,
    placement,
    save_epoch,
    set_threads,
)
from flipseg.metrics import compute_classification_metrics, compute_dice
from flipseg.networks.backbone import load_backbone_into_resnet
from flipseg.networks.lanet import LANet, resize_map
from flipseg.resize import resize

__all__ = [
    "CHECKPOINT",
    "LANetData",
    "augment_batch",
    "choose_location_labelled",
    "class_samples",
    "evaluate_data",
    "hybrid_loss",
    "localization_loss",
    "location_label",
    "prepare_data",
    "pseudo_label_gate",
    "pseudo_location_labels",
    "split_train_val",
    "train_lanet",
]

CHECKPOINT = "lanet_checkpoint.pt"
LABELLED_FILE = "location_labels.json"


# ----------------------------------------------------------------------- losses
def localization_loss(lesion_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of lesion logits [B, 1, h, w] against a location label
    [B, 1, H, W] in [0, 1] (area-averaged down to ``h, w``); mean over pixels."""
    return F.binary_cross_entropy_with_logits(lesion_logits, resize_map(target, lesion_logits.shape[-2:]))


def pseudo_label_gate(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """bool [B]: the top class probability (softmax of ``logits`` [B, K]) exceeds ``tau``."""
    return torch.softmax(logits.detach(), dim=1).amax(dim=1) > tau


def pseudo_location_labels(lesion_logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Pseudo location labels: ``sigmoid(lesion_logits) > threshold`` as float, no gradient."""
    return (torch.sigmoid(lesion_logits.detach()) > threshold).float()


def hybrid_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lesion_logits: torch.Tensor,
    loc_target: torch.Tensor,
    has_loc: torch.Tensor,
    *,
    lam: float = 0.5,
    alpha: float = 0.1,
    tau: float = 0.8,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Stage-2 loss, Eq. 7: ``lam * L_cls + (1 - lam) * (L_loc + alpha * L_pseudo)``.

    Parameters
    ----------
    logits : [B, K] class logits; labels : [B] class indices
    lesion_logits : [B, 1, h, w]
    loc_target : [B, 1, H, W] location labels in [0, 1] (ignored where ``has_loc`` is False)
    has_loc : bool [B], the image has a location label
    lam, alpha, tau, threshold : as in :class:`LANetConfig`

    Returns
    -------
    dict: ``loss`` (the total), ``cls``, ``loc`` (images with a location label),
    ``pseudo`` (gated images without one; 0 when none passes the gate) and
    ``n_pseudo`` (how many passed).
    """
    has_loc = has_loc.bool()
    zero = lesion_logits.sum() * 0.0
    cls = F.cross_entropy(logits, labels)
    loc = localization_loss(lesion_logits[has_loc], loc_target[has_loc]) if has_loc.any() else zero
    gate = pseudo_label_gate(logits, tau) & ~has_loc
    if gate.any():
        pseudo_logits = lesion_logits[gate]
        pseudo = F.binary_cross_entropy_with_logits(
            pseudo_logits, pseudo_location_labels(pseudo_logits, threshold))
    else:
        pseudo = zero
    total = lam * cls + (1.0 - lam) * (loc + alpha * pseudo)
    return {"loss": total, "cls": cls, "loc": loc, "pseudo": pseudo, "n_pseudo": gate.sum()}


# ------------------------------------------------------------------------- data
def class_samples(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 2D samples labelled benign or malignant (normal and unlabelled ones left out)."""
    out = [s for s in samples if s.get("label") in CLASS_NAMES]
    for s in out:
        if np.ndim(s["image"]) != 2:
            raise FlipsegError(f"lanet works on 2D images; case {s['case_id']} has shape "
                               f"{np.shape(s['image'])}")
    return out


def location_label(sample: dict[str, Any], kind: str = "mask") -> np.ndarray | None:
    """The location label of a sample as a bool (H, W) array, or None when it has none.

    ``kind="mask"``: the mask when known and not empty, else the box as a filled
    rectangle; ``kind="box"``: always the box rectangle.
    """
    shape = np.shape(sample["image"])
    mask = sample.get("mask")
    if kind == "mask" and mask is not None and np.any(mask):
        return np.asarray(mask, bool)
    box = sample.get("box")
    if box is not None:
        return box.validate(shape).to_mask(shape)
    return None


def choose_location_labelled(
    samples: Sequence[dict[str, Any]], fraction: float, *, seed: int = 0, kind: str = "mask"
) -> list[str]:
    """Case ids of the ``fraction`` of samples (by patient, seeded) that keep a location label.

    Only samples that have one (mask or box) are candidates.
    """
    if not 0 < fraction <= 1:
        raise FlipsegError(f"location-label fraction {fraction!r} must be in (0, 1]")
    candidates = [s for s in samples if location_label(s, kind) is not None]
    if fraction >= 1 or len(candidates) < 2:
        chosen = candidates
    else:
        chosen = split_by_patient(candidates, (fraction, 1.0 - fraction), seed=seed)[0]
    return [str(s["case_id"]) for s in chosen]


def split_train_val(
    samples: Sequence[dict[str, Any]], cfg: LANetConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Patient-level (train, validation) split with ``cfg.val_fraction`` and ``cfg.seed``."""
    samples = list(samples)
    if cfg.val_fraction <= 0 or len(samples) < 4:
        return samples, []
    train, val = split_by_patient(samples, (1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.seed)
    return train, val


@dataclass
class LANetData:
    """Network-ready tensors for a list of samples."""

    case_ids: list[str]
    images: torch.Tensor
    """[N, 1, S, S] in [0, 1]."""
    labels: torch.Tensor
    """[N] int64: 0 benign, 1 malignant."""
    loc: torch.Tensor
    """[N, 1, S, S] location labels in [0, 1] (area fractions after resizing; 0 where unknown)."""
    has_loc: torch.Tensor
    """[N] bool."""

    def __len__(self) -> int:
        return len(self.case_ids)


def prepare_data(
    samples: Sequence[dict[str, Any]], cfg: LANetConfig, labelled: set[str] | None = None
) -> LANetData:
    """Resize images and location labels to ``cfg.input_size``.

    ``labelled``: case ids allowed to keep their location label (None = all that have one).
    """
    S = cfg.input_size
    samples = class_samples(samples)
    images = np.zeros((len(samples), 1, S, S), np.float32)
    loc = np.zeros((len(samples), 1, S, S), np.float32)
    has = np.zeros(len(samples), bool)
    for i, s in enumerate(samples):
        images[i, 0] = to_input(s["image"], S)
        if labelled is not None and str(s["case_id"]) not in labelled:
            continue
        lab = location_label(s, cfg.location_label)
        if lab is not None:
            loc[i, 0] = np.clip(resize(lab.astype(np.float32), (S, S)), 0, 1)
            has[i] = True
    labels = np.array([CLASS_NAMES.index(s["label"]) for s in samples], np.int64)
    return LANetData([str(s["case_id"]) for s in samples], torch.from_numpy(images),
                     torch.from_numpy(labels), torch.from_numpy(loc), torch.from_numpy(has))


def augment_batch(
    x: torch.Tensor, loc: torch.Tensor, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric (+ intensity for ``paper``) augmentation of images and labels [B, 1, S, S]."""
    if kind == "none":
        return x, loc
    B = x.shape[0]

    def maybe(t: torch.Tensor, which: torch.Tensor, op) -> torch.Tensor:
        return torch.where(which[:, None, None, None], op(t), t)

    hflip = torch.rand(B, generator=generator) < 0.5
    x, loc = maybe(x, hflip, lambda t: t.flip(-1)), maybe(loc, hflip, lambda t: t.flip(-1))
    if kind == "paper":
        vflip = torch.rand(B, generator=generator) < 0.5
        x, loc = maybe(x, vflip, lambda t: t.flip(-2)), maybe(loc, vflip, lambda t: t.flip(-2))
        k = torch.randint(0, 4, (B,), generator=generator)
        for j in (1, 2, 3):
            x = maybe(x, k == j, lambda t, j=j: torch.rot90(t, j, (-2, -1)))
            loc = maybe(loc, k == j, lambda t, j=j: torch.rot90(t, j, (-2, -1)))
        contrast = 0.8 + 0.4 * torch.rand(B, 1, 1, 1, generator=generator)
        brightness = 0.2 * torch.rand(B, 1, 1, 1, generator=generator) - 0.1
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    return x, loc


@torch.no_grad()
def evaluate_data(net: LANet, data: LANetData, *, threshold: float = 0.5, batch_size: int = 64,
                  classify: bool = True) -> dict[str, float]:
    """Validation numbers at the network's input size: ``dice`` (mean over images with a
    location label) and, with ``classify``, accuracy/precision/recall/f1/auc."""
    net.eval()
    device = device_of(net)
    probs, dices = [], []
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        out = net(data.images[sl].to(device))
        probs.append(torch.softmax(out.logits, 1)[:, 1].cpu())
        pred = (resize_map(out.lesion_map, data.images.shape[-2:]) > threshold).cpu()
        for p, t, h in zip(pred, data.loc[sl], data.has_loc[sl]):
            if h:
                dices.append(compute_dice(p[0].numpy(), t[0].numpy() > 0.5))
    row: dict[str, float] = {"dice": float(np.mean(dices)) if dices else float("nan")}
    if classify and len(data):
        row.update(compute_classification_metrics(data.labels.numpy(), torch.cat(probs).numpy()))
    return row


# --------------------------------------------------------------------- training
class _Localizer(torch.nn.Module):
    """Stage 1 as a module (``net.localize``), so DistributedDataParallel sees its forward."""

    def __init__(self, net: LANet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.localize(x)


def _score(row: dict[str, float]) -> tuple[float, float]:
    """Model selection key: validation accuracy, then AUC (NaN counts as -inf)."""
    def num(v: float | None) -> float:
        return -np.inf if v is None or not np.isfinite(v) else float(v)

    return num(row.get("val_accuracy")), num(row.get("val_auc"))


def train_lanet(
    train: Sequence[dict[str, Any]],
    val: Sequence[dict[str, Any]],
    cfg: LANetConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train LA-Net in two stages; returns the path of the model bundle.

    Parameters
    ----------
    train : samples with ``label`` benign/malignant (others are left out) and, for
        ``cfg.loc_fraction`` of them (by patient), a mask or box as location label.
    val : held-out samples for model selection (may be empty).
    cfg : the configuration (saved as ``config.json``).
    run_dir : run folder; re-running with the same folder resumes from the last epoch.
    device : ``cpu``, ``cuda`` or ``auto``. Under ``torchrun --nproc_per_node N`` the N
        processes train one model (DistributedDataParallel, each its share of every
        batch); rank 0 validates, selects the best epoch and writes the run folder.

    Raises
    ------
    FlipsegError
        No benign/malignant training images, a single class, no location-labelled
        image, or a run folder holding a run with another configuration.
    """
    train, val = class_samples(train), class_samples(val)
    if not train:
        raise FlipsegError("no benign or malignant training images")
    if len({s["label"] for s in train}) < 2:
        raise FlipsegError(f"lanet needs both benign and malignant training images, got only "
                           f"{train[0]['label']!r}")
    labelled = choose_location_labelled(train, cfg.loc_fraction, seed=cfg.seed + 1,
                                        kind=cfg.location_label)
    if not labelled:
        raise FlipsegError(f"no location-labelled images: loc_fraction={cfg.loc_fraction} of "
                           f"{len(train)} training images selects none")
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("backbone_weights",))
    if place.main:
        atomic_write_text(run / LABELLED_FILE, json.dumps(
            {"loc_fraction": cfg.loc_fraction, "n_train": len(train), "labelled": labelled}, indent=1))
    set_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    model = LANetModel(cfg, meta={"n_train": len(train), "n_val": len(val), "n_labelled": len(labelled)})
    if state is None:  # a resumed run reloads its own weights below
        load_backbone_into_resnet(model.net.backbone.resnet, cfg.backbone_weights, cfg.backbone)
    model.to_device(place.device)
    net = model.net
    data = prepare_data(train, cfg, set(labelled))
    val_data = prepare_data(val, cfg) if val else None
    lab_idx = torch.nonzero(data.has_loc).flatten()

    done = {1: 0, 2: 0}
    log: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if state is not None:
        net.load_state_dict(state["net"])
        done, log, best = {1: state["done"][0], 2: state["done"][1]}, list(state["log"]), state["best"]

    def save(stage: int, opt: torch.optim.Optimizer) -> None:
        st = {"config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(), "stage": stage,
              "done": (done[1], done[2]), "log": log, "best": best}
        if best is not None:
            model.meta.update(stage=2, epoch=best["epoch"], selected="best validation accuracy")
            bundle = model.bundle(best["state"])
        else:
            model.meta.update(stage=stage, epoch=done[stage], selected="last epoch")
            bundle = model.bundle()
        save_epoch(run, (CHECKPOINT, st), (MODEL_FILE, bundle), log, progress=progress)

    def run_stage(stage: int, epochs: int, idx: torch.Tensor, params: list) -> None:
        nonlocal best
        if done[stage] >= epochs:
            return
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None and state.get("stage") == stage and done[stage] > 0:
            opt.load_state_dict(state["opt"])
        steps = max(1, int(np.ceil(len(idx) / cfg.batch_size)))
        trained = place.wrap(_Localizer(net) if stage == 1 else net, unused=True)
        for epoch in range(done[stage], epochs):
            t0 = time.time()
            trained.train()
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage * 10_007 + epoch)
            order = idx[torch.randperm(len(idx), generator=g)]
            tot: dict[str, float] = {}
            bar = tqdm(range(steps), desc=f"lanet stage {stage} epoch {epoch + 1}/{epochs}",
                       disable=not progress, leave=False)
            for i in bar:
                b = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                if place.too_small(len(b)):  # batch norm needs two images (per process)
                    continue
                # augmentation drawn for the whole batch (as one process draws it), then
                # each process keeps its share
                x, loc = augment_batch(data.images[b], data.loc[b], cfg.augment, g)
                mine = place.share(torch.arange(len(b)))
                x, loc = x[mine].to(place.device), loc[mine].to(place.device)
                if stage == 1:
                    parts = {"loss": localization_loss(trained(x), loc)}
                else:
                    out = trained(x)
                    parts = hybrid_loss(out.logits, data.labels[b][mine].to(place.device), out.lesion_logits,
                                        loc, data.has_loc[b][mine].to(place.device), lam=cfg.lam,
                                        alpha=cfg.alpha, tau=cfg.tau, threshold=cfg.threshold)
                opt.zero_grad()
                parts["loss"].backward()
                opt.step()
                for k, v in parts.items():
                    tot[k] = tot.get(k, 0.0) + float(v.detach()) / steps
                bar.set_postfix(loss=f"{tot['loss'] * steps / (i + 1):.3f}")
            bar.close()
            done[stage] = epoch + 1
            row: dict[str, Any] = {"stage": stage, "epoch": epoch + 1}
            row.update({f"train_{k}": place.mean(v) for k, v in tot.items()})
            if not place.main:  # rank 0 validates, selects and saves
                log.append(row)
                continue
            if val_data is not None and len(val_data):
                ev = evaluate_data(net, val_data, threshold=cfg.threshold, classify=stage == 2)
                row.update({f"val_{k}": v for k, v in ev.items()})
            row["seconds"] = round(time.time() - t0, 2)
            log.append(row)
            if stage == 2 and val_data is not None and len(val_data):
                if best is None or _score(row) > best["score"]:
                    best = {"score": _score(row), "epoch": epoch + 1,
                            "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
            save(stage, opt)

    stage1_params = list(net.backbone.parameters()) + list(net.lanet.parameters())
    run_stage(1, cfg.stage1_epochs, lab_idx, stage1_params)
    run_stage(2, cfg.stage2_epochs, torch.arange(len(data)), list(net.parameters()))
    if not place.main:
        return run / MODEL_FILE
    return final_model(run / MODEL_FILE, model.bundle)
