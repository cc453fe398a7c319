"""Hybrid-supervised training: a few masks + many boxes (paper 004), and its baselines.

Training images are split by patient (seeded) into a strong subset
(``strong_fraction``, keeps its masks) and a weak subset (keeps only its boxes).
Whole images are resized to ``input_size`` squared. Per ``cfg.mode``:

=================  ==========================================================
``hybrid``         dual decoder; Dec_s <- strong masks (PPA loss), Dec_a <-
                   reversed boxes (PPA + perception loss), Eq. 3
``strong-only``    one decoder, strong subset only, masks (PPA loss)
``weak-only``      one decoder, every image, its box as a filled rectangle
``vanilla-hybrid`` one decoder, strong masks and weak box rectangles alike
=================  ==========================================================

Adam with poly decay ``lr * (1 - epoch / epochs) ** poly_power``, random
horizontal and vertical flips.

Run folder: ``config.json``, ``strong_split.json`` (which training cases kept
their mask), ``hybrid_checkpoint.pt`` (after every epoch; a re-run resumes
from the last finished epoch), ``train_log.csv`` and the inference bundle
``hybrid_model.safetensors`` (the last epoch, as in the paper; a validation set, when
given, is only logged).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.data.splits import split_by_patient
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods.hybrid.config import HybridConfig
from flipseg.methods.hybrid.losses import hybrid_loss
from flipseg.methods.hybrid.predict import MODEL_FILE, HybridModel, to_input
from flipseg.methods.training import (
    final_model,
    load_states,
    open_run,
    placement,
    save_epoch,
    set_threads,
)
from flipseg.metrics import compute_dice, compute_s_measure
from flipseg.networks.backbone import load_backbone
from flipseg.resize import resize

__all__ = [
    "CHECKPOINT",
    "HybridData",
    "augment_batch",
    "box_target",
    "choose_strong",
    "epoch_batches",
    "evaluate_model",
    "lesion_samples",
    "poly_lr",
    "prepare_data",
    "train_hybrid",
]

CHECKPOINT = "hybrid_checkpoint.pt"
SPLIT_FILE = "strong_split.json"


# ------------------------------------------------------------------------- data
def lesion_samples(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 2D samples with a box (images without a lesion are left out).

    Raises
    ------
    FlipsegError
        A sample is not 2D.
    """
    out = []
    for s in samples:
        if np.ndim(s["image"]) != 2:
            raise FlipsegError(f"hybrid trains on 2D images; case {s['case_id']} has shape "
                               f"{np.shape(s['image'])}")
        if s.get("box") is not None:
            out.append(s)
    return out


def _has_mask(sample: dict[str, Any]) -> bool:
    return sample.get("mask") is not None and bool(np.any(sample["mask"]))


def choose_strong(samples: Sequence[dict[str, Any]], fraction: float, *, seed: int = 0) -> list[str]:
    """Case ids of the ``fraction`` of samples (by patient, seeded) that keep their mask.

    Only samples with a non-empty mask are candidates; ``fraction >= 1`` keeps them all.
    """
    if not 0 < fraction <= 1:
        raise FlipsegError(f"strong fraction {fraction!r} must be in (0, 1]")
    candidates = [s for s in samples if _has_mask(s)]
    if fraction >= 1 or len(candidates) < 2:
        chosen = candidates
    else:
        chosen = split_by_patient(candidates, (fraction, 1.0 - fraction), seed=seed)[0]
    return [str(s["case_id"]) for s in chosen]


def box_target(box: Box, image_shape: Sequence[int], size: int) -> np.ndarray:
    """The box as a filled rectangle on the ``size`` x ``size`` network grid, float32.

    Edges are rounded outwards (floor / ceil) so the rectangle covers the whole box:
    its complement (the reversed box) is definite background.
    """
    box = box.validate(image_shape)
    out = np.zeros((size, size), np.float32)
    lo = [int(np.floor(b * size / n)) for b, n in zip(box.lo, image_shape)]
    hi = [max(l + 1, int(np.ceil(b * size / n))) for b, n, l in zip(box.hi, image_shape, lo)]
    out[lo[0] : hi[0], lo[1] : hi[1]] = 1.0
    return out


@dataclass
class HybridData:
    """Network-ready tensors and per-mode targets for a list of samples."""

    case_ids: list[str]
    images: torch.Tensor
    """[N, 1, S, S] in [0, 1]."""
    seg_target: torch.Tensor
    """[N, 1, S, S] target of the segmentation decoder (0/1)."""
    has_seg: torch.Tensor
    """bool [N]: the seg target is used for that image."""
    aux_target: torch.Tensor
    """[N, 1, S, S] reversed box (1 = outside the box = definite background)."""
    has_aux: torch.Tensor
    """bool [N]: the aux target is used (always False for single-decoder modes)."""
    is_strong: torch.Tensor
    """bool [N]: the image kept its mask."""

    def __len__(self) -> int:
        return len(self.case_ids)

    def train_index(self, cfg: HybridConfig) -> torch.Tensor:
        """Indices the mode trains on (``strong-only``: the strong subset; others: all)."""
        if cfg.mode == "strong-only":
            return torch.nonzero(self.is_strong).flatten()
        return torch.arange(len(self))


def prepare_data(samples: Sequence[dict[str, Any]], cfg: HybridConfig, strong: set[str]) -> HybridData:
    """Resize images, masks (of ``strong`` cases) and boxes to ``cfg.input_size``; build
    the targets of ``cfg.mode`` (see the module docstring)."""
    S = cfg.input_size
    samples = lesion_samples(samples)
    n = len(samples)
    images = np.zeros((n, 1, S, S), np.float32)
    masks = np.zeros((n, 1, S, S), np.float32)
    boxes = np.zeros((n, 1, S, S), np.float32)
    is_strong = np.zeros(n, bool)
    for i, s in enumerate(samples):
        images[i, 0] = to_input(s["image"], S)
        boxes[i, 0] = box_target(s["box"], np.shape(s["image"]), S)
        if str(s["case_id"]) in strong and _has_mask(s):
            masks[i, 0] = resize(np.asarray(s["mask"], np.float32), (S, S)) >= 0.5
            is_strong[i] = True
    if cfg.mode in ("hybrid", "strong-only"):
        seg, has_seg = masks, is_strong.copy()
    elif cfg.mode == "weak-only":
        seg, has_seg = boxes, np.ones(n, bool)
    else:  # vanilla-hybrid: weak labels treated as strong ones
        seg, has_seg = np.where(is_strong[:, None, None, None], masks, boxes), np.ones(n, bool)
    if cfg.dual:
        has_aux = np.ones(n, bool) if cfg.aux_on_strong else ~is_strong
    else:
        has_aux = np.zeros(n, bool)
    t = torch.from_numpy
    return HybridData([str(s["case_id"]) for s in samples], t(images), t(seg.astype(np.float32)),
                      t(has_seg), t(1.0 - boxes), t(has_aux), t(is_strong))


def epoch_batches(
    index: torch.Tensor, is_strong: torch.Tensor, cfg: HybridConfig, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's batches of ``index``.

    ``strong_per_batch == 0`` (or a strong-only / weak-only run): a shuffle cut into
    ``batch_size`` chunks. Otherwise every batch has ``strong_per_batch`` strong images,
    cycling through a shuffled strong list, and ``batch_size - strong_per_batch`` weak
    ones; the epoch ends when every weak image was used once.
    """
    order = index[torch.randperm(len(index), generator=generator)]
    k = cfg.strong_per_batch
    if k == 0 or cfg.mode not in ("hybrid", "vanilla-hybrid"):
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    strong, weak = order[is_strong[order]], order[~is_strong[order]]
    if len(strong) == 0 or len(weak) == 0:
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    n_weak = cfg.batch_size - k
    n_batches = int(np.ceil(len(weak) / n_weak))
    reps = int(np.ceil(n_batches * k / len(strong)))
    pool = torch.cat([strong[torch.randperm(len(strong), generator=generator)] for _ in range(reps)])
    return [torch.cat([pool[b * k : (b + 1) * k], weak[b * n_weak : (b + 1) * n_weak]])
            for b in range(n_batches)]


def augment_batch(
    tensors: Sequence[torch.Tensor], kind: str, generator: torch.Generator
) -> list[torch.Tensor]:
    """The same random horizontal and vertical flips (``kind="flip"``) applied to every
    [B, C, S, S] tensor of ``tensors`` (image and its targets); ``none`` returns them as they are."""
    tensors = list(tensors)
    if kind == "none":
        return tensors
    B = tensors[0].shape[0]
    for dim in (-1, -2):
        flip = (torch.rand(B, generator=generator) < 0.5)[:, None, None, None]
        tensors = [torch.where(flip, t.flip(dim), t) for t in tensors]
    return tensors


def poly_lr(cfg: HybridConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): ``lr * (1 - epoch / epochs) ** poly_power``."""
    return cfg.lr * (1.0 - epoch / cfg.epochs) ** cfg.poly_power


def evaluate_model(model: HybridModel, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean Dice and S-measure (of the binary mask) over ``samples`` with a mask, at each
    image's own resolution; per-case values under ``cases``."""
    samples = [s for s in samples if s.get("mask") is not None]
    preds = model.predict_many([s["image"] for s in samples])
    cases = [{"case_id": str(s["case_id"]), "dice": compute_dice(p, s["mask"]),
              "s_measure": compute_s_measure(p, s["mask"])} for p, s in zip(preds, samples)]

    def mean(key: str) -> float:
        return float(np.mean([c[key] for c in cases])) if cases else float("nan")

    return {"dice": mean("dice"), "s_measure": mean("s_measure"), "n": len(cases), "cases": cases}


# --------------------------------------------------------------------- training
def train_hybrid(
    train: Sequence[dict[str, Any]],
    val: Sequence[dict[str, Any]],
    cfg: HybridConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train per ``cfg.mode``; returns the path of the model bundle.

    Parameters
    ----------
    train : 2D samples with a ``box``; the ``strong_fraction`` (by patient) with a mask
        keep it, the rest are box-only.
    val : samples with masks whose Dice / S-measure are logged after every epoch (may be
        empty; not used for model selection).
    cfg : the configuration (saved as ``config.json``).
    run_dir : run folder; re-running with the same folder resumes after the last
        finished epoch.
    device : ``cpu``, ``cuda`` or ``auto``. Under ``torchrun --nproc_per_node N`` the N
        processes train one model (DistributedDataParallel, each its share of every
        batch); rank 0 validates and writes the run folder.

    Raises
    ------
    FlipsegError
        No training image with a box, no strong image where the mode needs masks, or
        a run folder holding a run with another configuration.
    """
    train, val = lesion_samples(train), [s for s in val if s.get("mask") is not None]
    if len(train) < 2:
        raise FlipsegError(f"hybrid needs at least 2 training images with a box, got {len(train)}")
    strong = choose_strong(train, cfg.strong_fraction, seed=cfg.seed + 1) if cfg.uses_masks else []
    if cfg.uses_masks and not strong:
        raise FlipsegError(f"no strong (mask) images: strong_fraction={cfg.strong_fraction} of "
                           f"{len(train)} training images selects none (mode {cfg.mode})")
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("backbone_weights",))
    if place.main:
        atomic_write_text(run / SPLIT_FILE, json.dumps(
            {"mode": cfg.mode, "strong_fraction": cfg.strong_fraction, "n_train": len(train),
             "strong": strong}, indent=1))
    set_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    model = HybridModel(cfg, meta={"n_train": len(train), "n_strong": len(strong), "mode": cfg.mode})
    if state is None:  # a resumed run reloads its own weights below
        load_backbone(model.net.encoder, cfg.backbone_weights, cfg.encoder)
    model.to_device(place.device)
    net = model.net
    trained = place.wrap(net, unused=True)  # a decoder may have no target in a batch
    data = prepare_data(train, cfg, set(strong))
    index = data.train_index(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log = 0, []
    if state is not None:
        load_states(state, {"net": net, "opt": opt})
        start, log = int(state["epochs_done"]), list(state["log"])

    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        lr = poly_lr(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        trained.train()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        batches = epoch_batches(index, data.is_strong, cfg, g)
        tot: dict[str, float] = {}
        steps = 0
        bar = tqdm(batches, desc=f"hybrid ({cfg.mode}) epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for b in bar:
            if place.too_small(len(b)):  # batch norm needs two images (per process)
                continue
            # the flips are drawn for the whole batch (the same draws as one process), then
            # each process keeps its share
            x, seg_t, aux_t = augment_batch(
                (data.images[b], data.seg_target[b], data.aux_target[b]), cfg.augment, g)
            mine = place.share(torch.arange(len(b)))
            x, seg_t, aux_t = (t[mine].to(place.device) for t in (x, seg_t, aux_t))
            has_seg, has_aux = data.has_seg[b][mine].to(place.device), data.has_aux[b][mine].to(place.device)
            out = trained(x)
            parts = hybrid_loss(out.seg_logits, seg_t, has_seg, out.aux_logits, aux_t,
                                has_aux, perception=cfg.perception_loss,
                                perception_weight=cfg.perception_weight, kernel=cfg.ppa_kernel,
                                gamma=cfg.ppa_gamma)
            opt.zero_grad()
            parts["loss"].backward()
            opt.step()
            steps += 1
            for k, v in parts.items():
                tot[k] = tot.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{tot['loss'] / steps:.3f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train_{k}": place.mean(v) / max(steps, 1) for k, v in tot.items()})
        if val and place.main:
            ev = evaluate_model(model, val)
            row.update(val_dice=ev["dice"], val_s_measure=ev["s_measure"])
        row["seconds"] = round(time.time() - t0, 2)
        log.append(row)
        model.meta.update(epoch=epoch + 1)
        if place.main:
            st = {"config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(),
                  "epochs_done": epoch + 1, "log": log}
            save_epoch(run, (CHECKPOINT, st), (MODEL_FILE, model.bundle()), log, progress=progress)
    if not place.main:
        return run / MODEL_FILE
    return final_model(run / MODEL_FILE, model.bundle)
