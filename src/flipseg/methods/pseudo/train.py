"""Real masks for a few images, pseudo masks from boxes for the rest, one U-Net (paper 000, Table 4).

Recipe, as :func:`train_pseudo` runs it:

1. ``masks_budget`` training images (chosen by patient with the seed,
   :func:`choose_real_masks`) keep their real mask.
2. Every other training image gets a pseudo mask from its box, made by the
   registered box -> mask segmenter ``pseudo`` (``flip``, ``ellipse``, ``grabcut``,
   ``box``, ...; :func:`make_pseudo_masks`); ``pseudo="none"`` leaves them out.
3. A MONAI U-Net learns whole images (resized to ``input_size`` squared, no box)
   with BCE + Dice.
4. Every ``refresh_every`` epochs the pseudo labels are refreshed from the model
   (:func:`refresh_pseudo_labels`). **Rule:** the new label of a pseudo-labelled
   image is the model's prediction (eval mode, no augmentation, probability >
   ``threshold``) restricted to the image's box, at the network resolution; when
   that is empty the image keeps its previous label. Real masks never change.

Run folder: ``config.json``, ``labels.json`` (which cases have real and which
pseudo masks), ``pseudo_masks.npz`` (the segmenter's masks at the images' own
resolution, filled chunk by chunk, so an interrupted run does not redo them),
``pseudo_checkpoint.pt`` (after every epoch, with the current labels; a re-run
resumes), ``train_log.csv`` and the inference bundle ``pseudo_model.safetensors`` (the
last epoch). The log's ``pseudo_dice`` is the Dice of the current pseudo labels
against the true masks where those are known: a diagnostic only, never used for
training.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save, atomic_write_text
from flipseg.methods.pseudo.config import PseudoConfig, budget_count
from flipseg.methods.pseudo.model import MODEL_FILE, PseudoUNetModel, to_input
from flipseg.methods.training import (
    device_of,
    final_model,
    load_states,
    open_run,
    placement,
    save_epoch,
    set_threads,
)
from flipseg.networks.backbone import load_backbone
from flipseg.resize import resize

__all__ = [
    "CHECKPOINT",
    "LABELS_FILE",
    "PSEUDO_MASKS_FILE",
    "PseudoData",
    "bce_dice_loss",
    "box_at",
    "choose_real_masks",
    "label_at",
    "lesion_samples",
    "make_pseudo_engine",
    "make_pseudo_masks",
    "prepare_data",
    "refresh_pseudo_labels",
    "train_pseudo",
]

CHECKPOINT = "pseudo_checkpoint.pt"
LABELS_FILE = "labels.json"
PSEUDO_MASKS_FILE = "pseudo_masks.npz"


# ------------------------------------------------------------------------- data
def lesion_samples(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples with a box (lesion images), checked to be 2D."""
    out = [s for s in samples if s.get("box") is not None]
    for s in out:
        if np.ndim(s["image"]) != 2:
            raise FlipsegError(f"pseudo-unet trains on 2D images; case {s['case_id']} has shape "
                               f"{np.shape(s['image'])}")
    return out


def choose_real_masks(samples: Sequence[dict[str, Any]], budget: str, *, seed: int = 0) -> list[str]:
    """Case ids (in input order) of the images that keep their real mask.

    Candidates are the samples with a mask. ``budget`` (``N``, ``P%`` or ``all``,
    see :func:`~flipseg.methods.pseudo.config.budget_count`) fixes how many. Patients
    (``patient_id``, else ``case_id``; sorted, then shuffled with ``seed``) are taken
    whole while they fit in the budget; a patient that would overflow it is passed
    over. Only when whole patients cannot add up to exactly N does the first passed
    over patient give part of its images (the first by case id). The result always has exactly N cases and
    does not depend on the input order.
    """
    candidates = [s for s in samples if s.get("mask") is not None]
    n = budget_count(budget, len(candidates))
    if n >= len(candidates):
        return [str(s["case_id"]) for s in candidates]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(candidates):
        groups[str(s.get("patient_id", s.get("case_id")))].append(i)
    patients = sorted(groups)
    chosen: list[int] = []
    passed: list[list[int]] = []
    for p in np.random.default_rng(seed).permutation(len(patients)):
        idx = groups[patients[p]]
        if len(chosen) + len(idx) <= n:
            chosen += idx
        else:
            passed.append(idx)
        if len(chosen) == n:
            break
    for idx in passed:  # whole patients could not make exactly n
        if len(chosen) == n:
            break
        chosen += sorted(idx, key=lambda i: str(candidates[i]["case_id"]))[: n - len(chosen)]
    return [str(candidates[i]["case_id"]) for i in sorted(chosen)]


def label_at(mask: np.ndarray, size: int) -> np.ndarray:
    """A bool mask resized to ``size`` squared (bilinear, kept where >= 0.5)."""
    return resize(np.asarray(mask, np.float32), (size, size)) >= 0.5


def box_at(box: Box, shape: Sequence[int], size: int) -> np.ndarray:
    """The box of an image of ``shape`` drawn at ``size`` squared (bool; outward rounding,
    at least one pixel per axis)."""
    box = box.validate(shape)
    out = np.zeros((size, size), bool)
    lo = [int(np.floor(b * size / n)) for b, n in zip(box.lo, shape)]
    hi = [max(lo_ + 1, int(np.ceil(b * size / n))) for b, n, lo_ in zip(box.hi, shape, lo)]
    out[lo[0] : hi[0], lo[1] : hi[1]] = True
    return out


def make_pseudo_engine(name: str, model: str = ""):
    """The registered box -> mask segmenter ``name`` (``model=`` when given).

    Raises
    ------
    FlipsegError
        Unknown name (the message lists the valid ones), a model given to a method that
        takes none, or a method that cannot segment 2D images.
    """
    from flipseg.methods import get_segmenter, load_methods
    from flipseg.segmenters import FunctionSegmenter

    load_methods()
    seg = get_segmenter(name, **({"model": model} if model else {}))
    if model and isinstance(seg, FunctionSegmenter):
        raise FlipsegError(f"pseudo-mask method {name!r} takes no model (got pseudo_model={model!r})")
    if 2 not in tuple(getattr(seg, "dims", (2,))):
        raise FlipsegError(f"pseudo-mask method {name!r} does not segment 2D images")
    return seg


def _read_cache(path: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["meta"]))
            ids = [str(c) for c in z["case_ids"]]
            masks = {c: z[f"m{i}"].astype(bool) for i, c in enumerate(ids)}
    except (OSError, ValueError, KeyError) as exc:
        raise FlipsegError(f"cannot read pseudo-mask cache {path}: {exc}".splitlines()[0]) from None
    if saved != meta:
        raise FlipsegError(f"pseudo-mask cache {path} was made by {saved}, not {meta}; use another file")
    return masks


def _write_cache(path: Path, meta: dict[str, Any], masks: dict[str, np.ndarray]) -> None:
    ids = list(masks)
    arrays = {f"m{i}": masks[c] for i, c in enumerate(ids)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(meta)), case_ids=np.array(ids), **arrays)

    atomic_save(path, write)


def make_pseudo_masks(
    samples: Sequence[dict[str, Any]],
    engine: str,
    *,
    model: str = "",
    seed: int = 0,
    cache: str | Path | None = None,
    chunk: int = 64,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Masks (bool, each image's shape) from the boxes of ``samples`` by segmenter ``engine``.

    With ``cache`` (an ``.npz`` file) finished masks are kept there after every chunk
    and reused: an interrupted run, or another run with the same engine, model and seed
    on overlapping images, does not redo them.

    Returns
    -------
    (case id -> mask, [(case id, message)] for cases the segmenter failed on; those are
    left out).
    """
    meta = {"engine": engine, "model": str(model), "seed": int(seed)}
    path = Path(cache) if cache is not None else None
    done = _read_cache(path, meta) if path is not None else {}
    todo = [s for s in samples if str(s["case_id"]) not in done
            or done[str(s["case_id"])].shape != np.shape(s["image"])]
    failed: list[tuple[str, str]] = []
    if todo:
        seg = make_pseudo_engine(engine, model)
        bar = tqdm(total=len(todo), desc=f"pseudo masks ({engine})", unit="image", disable=not progress)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            images, boxes = [s["image"] for s in part], [s["box"] for s in part]
            try:
                masks: list[np.ndarray | None] = list(seg.segment_many(images, boxes, seed=seed))
            except FlipsegError:
                raise
            except Exception:  # noqa: BLE001 - one bad case must not sink the chunk: retry one by one
                masks = []
                for s in part:
                    try:
                        masks.append(seg.segment(s["image"], s["box"], seed=seed))
                    except Exception as exc:  # noqa: BLE001 - reported and skipped
                        masks.append(None)
                        failed.append((str(s["case_id"]), f"{engine}: {type(exc).__name__}: {exc}"
                                       .splitlines()[0]))
            for s, m in zip(part, masks):
                if m is not None:
                    done[str(s["case_id"])] = np.asarray(m, bool)
            if path is not None:
                _write_cache(path, meta, done)
            bar.update(len(part))
        bar.close()
    wanted = {str(s["case_id"]) for s in samples}
    return {c: m for c, m in done.items() if c in wanted}, failed


@dataclass
class PseudoData:
    """Network-ready tensors of the training images (all [N, 1, S, S] unless said)."""

    case_ids: list[str]
    images: torch.Tensor
    """float32 in [0, 1]."""
    labels: torch.Tensor
    """float32 0/1: the current training targets (real or pseudo masks)."""
    is_real: torch.Tensor
    """bool [N]: the target is a real mask (never refreshed)."""
    boxes: torch.Tensor
    """bool: each image's box at the network resolution."""
    truth: torch.Tensor
    """bool: the true masks where known (diagnostics only)."""
    has_truth: torch.Tensor
    """bool [N]."""

    def __len__(self) -> int:
        return len(self.case_ids)


def prepare_data(
    samples: Sequence[dict[str, Any]],
    real: set[str],
    pseudo: dict[str, np.ndarray],
    cfg: PseudoConfig,
) -> PseudoData:
    """The images with a real mask (``real`` case ids) or a pseudo mask (``pseudo``), in input order."""
    S = cfg.input_size
    keep = [s for s in samples if str(s["case_id"]) in real or str(s["case_id"]) in pseudo]
    n = len(keep)
    images = np.zeros((n, 1, S, S), np.float32)
    labels = np.zeros((n, 1, S, S), np.float32)
    boxes = np.zeros((n, 1, S, S), bool)
    truth = np.zeros((n, 1, S, S), bool)
    is_real = np.zeros(n, bool)
    has_truth = np.zeros(n, bool)
    for i, s in enumerate(keep):
        cid = str(s["case_id"])
        shape = np.shape(s["image"])
        images[i, 0] = to_input(s["image"], cfg)
        boxes[i, 0] = box_at(s["box"], shape, S)
        if s.get("mask") is not None:
            truth[i, 0] = label_at(s["mask"], S)
            has_truth[i] = True
        is_real[i] = cid in real
        labels[i, 0] = truth[i, 0] if is_real[i] else label_at(pseudo[cid], S)
    return PseudoData([str(s["case_id"]) for s in keep], torch.from_numpy(images), torch.from_numpy(labels),
                      torch.from_numpy(is_real), torch.from_numpy(boxes), torch.from_numpy(truth),
                      torch.from_numpy(has_truth))


# ----------------------------------------------------------------- loss, refresh
def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Mean BCE of ``logits`` [B, 1, S, S] against 0/1 ``target`` + ``dice_weight`` * mean soft
    Dice loss per image (``1 - (2 |p t| + 1) / (|p| + |t| + 1)``, ``p = sigmoid(logits)``)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return bce + dice_weight * dice.mean()


@torch.no_grad()
def refresh_pseudo_labels(net: torch.nn.Module, data: PseudoData, *, threshold: float = 0.5,
                          batch_size: int = 64) -> int:
    """Replace every pseudo label by the model's prediction inside the image's box (in place).

    New label = ``(sigmoid(net(image)) > threshold) & box`` at the network resolution,
    the network in eval mode; an image whose new label would be empty keeps its old
    one. Real masks (``data.is_real``) are never touched. Leaves ``net`` in eval mode.

    Returns
    -------
    how many pseudo labels were replaced.
    """
    idx = torch.nonzero(~data.is_real).flatten()
    net.eval()
    device = device_of(net)
    replaced = 0
    for start in range(0, len(idx), batch_size):
        b = idx[start : start + batch_size]
        prob = torch.sigmoid(net(data.images[b].to(device))).cpu()
        new = (prob > threshold) & data.boxes[b]  # [B, 1, S, S]
        ok = new.flatten(1).any(dim=1)
        data.labels[b[ok]] = new[ok].float()
        replaced += int(ok.sum())
    return replaced


def pseudo_dice(data: PseudoData) -> float:
    """Mean Dice of the current pseudo labels against the known true masks (NaN if none)."""
    sel = ~data.is_real & data.has_truth
    if not sel.any():
        return float("nan")
    p, t = data.labels[sel].bool().flatten(1), data.truth[sel].flatten(1)
    inter = (p & t).sum(1).float()
    denom = (p.sum(1) + t.sum(1)).float()
    dice = torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))
    return float(dice.mean())


# --------------------------------------------------------------------- training
def _refresh_due(epochs_done: int, cfg: PseudoConfig) -> bool:
    """Refresh after every ``refresh_every``-th epoch, except the last one (nothing would use it)."""
    return bool(cfg.refresh_every) and epochs_done % cfg.refresh_every == 0 and epochs_done < cfg.epochs


def _steps_per_epoch(n: int, cfg: PseudoConfig) -> int:
    return max(int(np.ceil(n / cfg.batch_size)), cfg.min_steps_per_epoch, 1)


def _epoch_order(n: int, steps: int, cfg: PseudoConfig, g: torch.Generator) -> torch.Tensor:
    """``steps`` full batches of image indices: a chain of seeded shuffles, cut to length."""
    need = steps * cfg.batch_size
    perms = [torch.randperm(n, generator=g) for _ in range(int(np.ceil(need / n)))]
    return torch.cat(perms)[:need].view(steps, cfg.batch_size)


def train_pseudo(
    train: Sequence[dict[str, Any]],
    cfg: PseudoConfig,
    run_dir: str | Path,
    *,
    pseudo_cache: str | Path | None = None,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train the U-Net on real + pseudo masks; returns the path of the model bundle.

    Parameters
    ----------
    train : training samples; those with a box are used (a mask where one is known).
    cfg : the configuration (saved as ``config.json``).
    run_dir : run folder; re-running with the same folder resumes after the last
        finished epoch.
    pseudo_cache : where the segmenter's masks are kept (default: the run folder's
        ``pseudo_masks.npz``); runs with the same ``pseudo``, ``pseudo_model`` and
        ``seed`` can share one file.
    device : ``cpu``, ``cuda`` or ``auto``. Under ``torchrun --nproc_per_node N`` the N
        processes train one model (DistributedDataParallel, each its share of every
        batch); rank 0 draws the pseudo masks and writes the run folder.

    Raises
    ------
    FlipsegError
        No usable training image, a budget larger than the masked images, an unknown
        pseudo-mask method, or a run folder holding a run with another configuration.
    """
    samples = lesion_samples(train)
    if not samples:
        raise FlipsegError("no training image with a box")
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("backbone_weights",))
    set_threads(cfg.num_threads)

    real = choose_real_masks(samples, cfg.masks_budget, seed=cfg.seed + 1)
    real_set = set(real)
    rest = [s for s in samples if str(s["case_id"]) not in real_set]
    pseudo: dict[str, np.ndarray] = {}
    failed: list[tuple[str, str]] = []
    if cfg.pseudo != "none" and rest:
        cache = Path(pseudo_cache) if pseudo_cache is not None else run / PSEUDO_MASKS_FILE
        pseudo, failed = place.main_first(lambda: make_pseudo_masks(
            rest, cfg.pseudo, model=cfg.pseudo_model, seed=cfg.seed, cache=cache,
            progress=progress and place.main))
        for case_id, msg in failed if place.main else ():
            print(f"skipped case {case_id}: {msg}")
    data = prepare_data(samples, real_set, pseudo, cfg)
    if len(data) == 0:
        raise FlipsegError(f"no training image has a real or pseudo mask (masks_budget="
                           f"{cfg.masks_budget!r}, pseudo={cfg.pseudo!r})")
    initial_dice = pseudo_dice(data)
    if place.main:
        atomic_write_text(run / LABELS_FILE, json.dumps(
        {"masks_budget": cfg.masks_budget, "pseudo": cfg.pseudo, "n_train": len(samples),
            "n_real": len(real), "n_pseudo": len(pseudo), "initial_pseudo_dice": initial_dice,
            "real": real, "pseudo_cases": sorted(pseudo), "failed": [list(f) for f in failed]},
            indent=1))

    torch.manual_seed(cfg.seed)
    model = PseudoUNetModel(cfg, meta={"n_train": len(samples), "n_real": len(real),
                                       "n_pseudo": len(pseudo), "pseudo": cfg.pseudo,
                                       "masks_budget": cfg.masks_budget})
    if cfg.encoder == "none" and cfg.backbone_weights not in ("none", "auto"):
        raise FlipsegError("backbone_weights needs a ResNet encoder: add --set "
                           "encoder=compact (the MONAI U-Net has none)")
    if state is None and cfg.encoder != "none":  # a resumed run reloads its own
        load_backbone(model.net.encoder, cfg.backbone_weights, cfg.encoder)
    model.to_device(place.device)
    net = model.net
    trained = place.wrap(net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = _steps_per_epoch(len(data), cfg)
    total = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + np.cos(np.pi * min(1.0, it / total))))
    start, log = 0, []
    if state is not None:
        load_states(state, {"net": net, "opt": opt, "sched": sched})
        if tuple(state["labels"].shape) != tuple(data.labels.shape):
            raise FlipsegError(f"run folder {run} was trained on other images ({state['labels'].shape[0]} "
                               f"vs {len(data)} now); use a new --out")
        data.labels.copy_(state["labels"])
        start, log = int(state["epoch"]), list(state["log"])

    mine = place.share(torch.arange(cfg.batch_size))  # this process's places in every batch
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        trained.train()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = _epoch_order(len(data), steps, cfg, g)  # [steps, B]
        flips = torch.rand(order.shape, generator=g) < 0.5
        total_loss = 0.0
        bar = tqdm(range(steps), desc=f"pseudo-unet epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            b = order[i][mine]
            x, y = data.images[b], data.labels[b]
            if cfg.augment == "flip":
                f = flips[i][mine][:, None, None, None]
                x, y = torch.where(f, x.flip(-1), x), torch.where(f, y.flip(-1), y)
            x, y = x.to(place.device), y.to(place.device)
            loss = bce_dice_loss(trained(x), y, cfg.dice_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
            bar.set_postfix(loss=f"{total_loss / (i + 1):.3f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": place.mean(total_loss) / steps, "refresh": 0,
                               "replaced": 0}
        if _refresh_due(epoch + 1, cfg) and not data.is_real.all():
            row["refresh"] = 1
            row["replaced"] = refresh_pseudo_labels(net, data, threshold=cfg.threshold)
        row["pseudo_dice"] = pseudo_dice(data)
        row["seconds"] = round(time.time() - t0, 2)
        log.append(row)
        model.meta["epoch"] = epoch + 1
        if place.main:
            st = {"config": cfg.to_dict(), "net": net.state_dict(), "opt": opt.state_dict(),
                  "sched": sched.state_dict(), "epoch": epoch + 1, "log": log,
                  "labels": data.labels.to(torch.uint8)}
            save_epoch(run, (CHECKPOINT, st), (MODEL_FILE, model.bundle()), log, progress=progress)
    if not place.main:
        return run / MODEL_FILE
    return final_model(run / MODEL_FILE, model.bundle)
