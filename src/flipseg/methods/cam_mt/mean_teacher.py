"""Mean Teacher U-Net on pseudo-labelled and unlabelled images (paper 002, section II-C).

Student and teacher are the same two-class U-Net (background, tumor) on the
whole image resized to ``image_size`` squared. Each step takes
``labeled_batch_size`` pseudo-labelled images and fills the batch with
unlabelled ones; both get the same random flips and rotation, the teacher's
input also gets Gaussian noise. The loss is equation (1) of the paper::

    L = 1/2 (L_CE + L_Dice)   on the student's outputs of the labelled images
      + beta(t) * L_MSE        between student and teacher softmax outputs, all images

with ``beta(t) = consistency_weight * exp(-5 (1 - t / rampup_epochs)^2)`` for
``t < rampup_epochs`` (Tarvainen & Valpola 2017), ``t`` in epochs. Only the
student gets gradients; after every step the teacher becomes the exponential
moving average of the student's weights. ``supervised=True`` gives the plain
U-Net of the paper's Whole / Subset rows (labelled images only, no consistency).

Run folder of :func:`train_mean_teacher`: ``config.json``, ``mt_checkpoint.pt``
(after every epoch; a re-run resumes), ``train_log.csv`` and the bundle
``cam_mt_model.safetensors`` that :meth:`CamMTModel.load` reads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from flipseg.bundles import read_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.cam_mt.config import MeanTeacherConfig
from flipseg.methods.training import (
    cpu_state,
    epoch_state,
    final_model,
    open_run,
    placement,
    resume_epochs,
    save_epoch,
    set_threads,
)
from flipseg.methods.whole_image import clean_mask, images_to_batch, whole_image_maps
from flipseg.metrics import compute_iou
from flipseg.networks.backbone import load_backbone
from flipseg.networks.unet import build_unet
from flipseg.resize import resize
from flipseg.segmenters import Segmenter

__all__ = [
    "CamMTModel",
    "CamMTSegmenter",
    "augment_batch",
    "consistency_loss",
    "consistency_weight",
    "ema_decay_at",
    "ema_update",
    "mean_teacher_loss",
    "sigmoid_rampup",
    "soft_dice_loss",
    "supervised_loss",
    "train_mean_teacher",
]

CHECKPOINT = "mt_checkpoint.pt"
MODEL_FILE = "cam_mt_model.safetensors"
_FORMAT = "flipseg-cam-mt-1"


# ------------------------------------------------------------ pure pieces
def sigmoid_rampup(t: float, length: float) -> float:
    """``exp(-5 (1 - t / length)^2)`` for ``0 <= t < length``, 1 after; 1 when ``length <= 0``."""
    if length <= 0:
        return 1.0
    p = min(max(float(t), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * (1.0 - p) ** 2))


def consistency_weight(epoch: float, cfg: MeanTeacherConfig) -> float:
    """beta at (fractional) epoch ``epoch``: 0 for supervised runs, else the ramped weight."""
    if cfg.supervised:
        return 0.0
    return cfg.consistency_weight * sigmoid_rampup(epoch, cfg.rampup_epochs)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay after ``step`` optimiser steps: ``min(decay, 1 - 1 / (step + 1))``."""
    return min(float(decay), 1.0 - 1.0 / (int(step) + 1))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: every teacher parameter ``= decay * teacher + (1 - decay) * student``;
    buffers (e.g. batch-norm statistics) are copied from the student."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``1 - (2 sum(p g) + eps) / (sum p + sum g + eps)`` over the whole batch.

    probs : tumor probabilities ``[B, H, W]``; target : 0/1 ``[B, H, W]``.
    """
    target = target.float()
    inter = (probs * target).sum()
    return 1.0 - (2.0 * inter + eps) / (probs.sum() + target.sum() + eps)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """``1/2 (CE + Dice)`` of two-class logits ``[B, 2, H, W]`` against labels ``[B, H, W]``."""
    ce = F.cross_entropy(logits, target.long())
    dice = soft_dice_loss(torch.softmax(logits, 1)[:, 1], target)
    return 0.5 * (ce + dice), {"ce": float(ce.detach()), "dice": float(dice.detach())}


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the softmax outputs ``[B, 2, H, W]`` (teacher not differentiated)."""
    return F.mse_loss(torch.softmax(student_logits, 1), torch.softmax(teacher_logits.detach(), 1))


def mean_teacher_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Equation (1): ``1/2 (CE + Dice)`` on the first ``len(targets)`` images + ``beta`` MSE on all.

    Parameters
    ----------
    student_logits : ``[B, 2, H, W]``, labelled images first
    teacher_logits : ``[B, 2, H, W]`` or None (no consistency term)
    targets : ``[L, H, W]`` labels of the first L images (L may be 0)
    beta : consistency weight

    Returns
    -------
    (loss, {"sup", "ce", "dice", "mse", "beta"})
    """
    n = len(targets)
    total = torch.zeros(())
    parts = {"sup": 0.0, "ce": 0.0, "dice": 0.0, "mse": 0.0, "beta": float(beta)}
    if n:
        sup, sp = supervised_loss(student_logits[:n], targets)
        total = total + sup
        parts.update(sp, sup=sup.item())
    if teacher_logits is not None and beta > 0:
        mse = consistency_loss(student_logits, teacher_logits)
        total = total + beta * mse
        parts["mse"] = mse.item()
    return total, parts


def augment_batch(
    x: torch.Tensor,
    masks: torch.Tensor,
    cfg: MeanTeacherConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and rotation per image, the same for an image and its mask.

    x : ``[B, 1, S, S]`` images; masks : ``[L, S, S]`` labels of the first L images.
    Images are resampled bilinearly (zeros outside), masks by nearest neighbour.
    """
    b = len(x)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(cfg.rotate_degrees)
    sx = torch.where(torch.rand(b, generator=generator) < (0.5 if cfg.hflip else 0.0), -1.0, 1.0)
    sy = torch.where(torch.rand(b, generator=generator) < (0.5 if cfg.vflip else 0.0), -1.0, 1.0)
    if cfg.rotate_degrees == 0 and not cfg.hflip and not cfg.vflip:
        return x, masks
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if len(masks):
        m = F.grid_sample(masks[:, None].float(), grid[: len(masks)], mode="nearest",
                          padding_mode="zeros", align_corners=False)
        masks = m[:, 0].round().to(masks.dtype)
    return x, masks


# ------------------------------------------------------------------ model
def _images(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    return images_to_batch(images, size, what="cam-mt segments")


def _masks(masks: Sequence[np.ndarray], size: int) -> torch.Tensor:
    arrs = [resize(np.asarray(m).astype(np.uint8), (size, size), order=0) for m in masks]
    if not arrs:
        return torch.zeros(0, size, size, dtype=torch.long)
    return torch.from_numpy(np.stack(arrs).astype(np.int64))


class CamMTModel:
    """A trained student/teacher pair that segments whole images.

    >>> masks = CamMTModel.load("runs/cam_mt").predict(images)   # list of bool (H, W)
    """

    def __init__(self, cfg: MeanTeacherConfig, student: dict | None = None,
                 teacher: dict | None = None) -> None:
        self.cfg = cfg
        self.student = build_unet(2, 1, 2, cfg.channels, encoder=cfg.encoder)
        self.teacher = build_unet(2, 1, 2, cfg.channels, encoder=cfg.encoder)
        if student is not None:
            self.student.load_state_dict(student)
        self.teacher.load_state_dict(teacher if teacher is not None else self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student.eval()
        self.teacher.eval()
        self.device = torch.device("cpu")

    def to_device(self, device: str | torch.device) -> list[str]:
        """Move student and teacher to ``device`` (predictions bring their maps back to the
        CPU). Returns the parts left behind: none."""
        self.device = torch.device(device)
        self.student.to(self.device)
        self.teacher.to(self.device)
        return []

    @classmethod
    def load(cls, path: str | Path) -> "CamMTModel":
        """From a bundle file, a Mean Teacher run folder, or a cam-mt run folder (its
        ``mean_teacher/`` part)."""
        path = Path(path)
        bundle = read_bundle(path, (MODEL_FILE, f"mean_teacher/{MODEL_FILE}"), _FORMAT, "cam-mt model")
        return cls(MeanTeacherConfig.from_dict(bundle["config"]), bundle["student"], bundle["teacher"])

    def bundle(self) -> dict[str, Any]:
        return {"format": _FORMAT, "config": self.cfg.to_dict(),
                "student": cpu_state(self.student.state_dict()),
                "teacher": cpu_state(self.teacher.state_dict())}

    def network(self, which: str | None = None) -> nn.Module:
        """``student`` or ``teacher``; default: the student for supervised runs, else
        ``cfg.predict_with``."""
        which = which or ("student" if self.cfg.supervised else self.cfg.predict_with)
        if which not in ("student", "teacher"):
            raise FlipsegError(f"network {which!r} must be 'student' or 'teacher'")
        return self.student if which == "student" else self.teacher

    def predict_proba(self, images: Sequence[np.ndarray], *, which: str | None = None,
                      batch_size: int = 16) -> list[np.ndarray]:
        """Tumor probability maps (float32, each image's shape)."""
        net = self.network(which).eval()
        return whole_image_maps(list(images),
                                lambda chunk: _images(chunk, self.cfg.image_size).to(self.device),
                                lambda x: torch.softmax(net(x), 1)[:, 1], batch_size=batch_size)

    def predict(self, images: Sequence[np.ndarray], *, which: str | None = None,
                batch_size: int = 16) -> list[np.ndarray]:
        """Tumor masks (bool, each image's shape) of whole images."""
        return [clean_mask(p > self.cfg.threshold, largest_component=self.cfg.largest_component)
                for p in self.predict_proba(images, which=which, batch_size=batch_size)]


class CamMTSegmenter(Segmenter):
    """``--method cam-mt --model RUN``: the U-Net of a ``flipseg train cam-mt`` run (whole images).

    The box the registry passes is ignored: the network segments the whole image.
    """

    name = "cam-mt"
    dims = (2,)
    needs_box = False

    def __init__(self, model: str | Path | None = None, batch_size: int = 16) -> None:
        if model is None:
            raise FlipsegError("cam-mt needs a trained model: --model RUN (train one with "
                               "`flipseg train cam-mt --out RUN`)")
        self.model = CamMTModel.load(model)
        self.batch_size = int(batch_size)

    def segment(self, image: np.ndarray, box: Any = None, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images, boxes=None, *, seed: int = 0) -> list[np.ndarray]:
        return self.model.predict(list(images), batch_size=self.batch_size)



# --------------------------------------------------------------- training
def train_mean_teacher(
    labeled_images: Sequence[np.ndarray],
    labeled_masks: Sequence[np.ndarray],
    unlabeled_images: Sequence[np.ndarray],
    cfg: MeanTeacherConfig,
    run_dir: str | Path,
    *,
    val_images: Sequence[np.ndarray] = (),
    val_masks: Sequence[np.ndarray] = (),
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train student and teacher; returns the bundle path (``cam_mt_model.safetensors``).

    ``labeled_masks`` are the (pseudo) labels of ``labeled_images``; ``unlabeled_images``
    only enter the consistency term (ignored when ``cfg.supervised``). Validation images,
    when given, add the mean tumor IoU of the predicting network to the log.

    ``device``: ``cpu``, ``cuda`` or ``auto``. Under ``torchrun --nproc_per_node N`` the N
    processes train one student (DistributedDataParallel, each its share of every batch,
    every process keeping the same teacher) and rank 0 writes the run folder.

    Raises FlipsegError when there is no labelled image or images and masks differ in number.
    """
    if len(labeled_images) != len(labeled_masks):
        raise FlipsegError(f"{len(labeled_images)} labelled images but {len(labeled_masks)} masks")
    if not len(labeled_images):
        raise FlipsegError("Mean Teacher needs at least one labelled image (the selection kept none: "
                           "try a lower selection.iou_threshold)")
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("epochs", "backbone_weights"))
    set_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    model = CamMTModel(cfg)
    if state is None and cfg.encoder != "none":  # the teacher starts as the student
        if load_backbone(model.student.encoder, cfg.backbone_weights, cfg.encoder) is not None:
            model.teacher.load_state_dict(model.student.state_dict())
    model.to_device(place.device)
    student, teacher = model.student, model.teacher
    trained = place.wrap(student)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                           weight_decay=cfg.weight_decay)
    saved_parts = {"student": student, "teacher": teacher, "opt": opt}
    start, log = resume_epochs(state, saved_parts)
    step = int(state["step"]) if state is not None else 0
    size = cfg.image_size
    xl, yl = _images(labeled_images, size), _masks(labeled_masks, size)
    xu = _images([] if cfg.supervised else unlabeled_images, size)
    nl, nu = len(xl), len(xu)
    lb = cfg.batch_size if nu == 0 else min(cfg.labeled_batch_size, cfg.batch_size)
    ub = cfg.batch_size - lb
    steps = max(1, int(np.ceil((nl + nu) / cfg.batch_size)))
    mine = place.share(torch.arange(lb + ub))  # this process's places in every batch (labelled first)
    mine_l = mine[mine < lb]
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm_l = torch.randperm(nl, generator=g)
        perm_u = torch.randperm(nu, generator=g) if nu else torch.zeros(0, dtype=torch.long)
        trained.train()
        teacher.train()
        keys = ("loss", "sup", "ce", "dice", "mse")
        tot = dict.fromkeys(keys, 0.0)
        bar = tqdm(range(steps), desc=f"mean teacher {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for i in bar:
            il = perm_l[(i * lb + torch.arange(lb)) % nl]
            xb, yb = xl[il], yl[il]
            if ub:
                iu = perm_u[(i * ub + torch.arange(ub)) % nu]
                xb = torch.cat([xb, xu[iu]])
            xb, yb = augment_batch(xb, yb, cfg, g)
            beta = consistency_weight(epoch + i / steps, cfg)
            noise = None
            if not cfg.supervised:
                noise = (torch.randn(xb.shape, generator=g) * cfg.teacher_noise).clamp(
                    -2 * cfg.teacher_noise, 2 * cfg.teacher_noise)[mine].to(place.device)
            xb, yb = xb[mine].to(place.device), yb[mine_l].to(place.device)
            student_logits = trained(xb)  # [B, 2, S, S]
            teacher_logits = None
            if noise is not None:
                with torch.no_grad():
                    teacher_logits = teacher(xb + noise)
            loss, parts = mean_teacher_loss(student_logits, teacher_logits, yb, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update(teacher, student, ema_decay_at(step, cfg.ema_decay))
            step += 1
            tot["loss"] += loss.item()
            for k in keys[1:]:
                tot[k] += parts[k]
            bar.set_postfix(loss=f"{loss.item():.3f}", beta=f"{beta:.3f}")
        bar.close()
        student.eval()
        teacher.eval()
        row: dict[str, Any] = {"epoch": epoch + 1, **{k: place.mean(v) / steps for k, v in tot.items()},
                               "beta": consistency_weight(epoch + 1, cfg)}
        if len(val_images) and place.main:
            preds = model.predict(list(val_images))
            row["val_tumor_iou"] = float(np.mean([compute_iou(p, m) for p, m in zip(preds, val_masks)]))
        row["seconds"] = time.time() - t0
        log.append(row)
        if place.main:
            state = epoch_state(cfg.to_dict(), saved_parts, epoch, log, step=step)
            save_epoch(run, (CHECKPOINT, state), (MODEL_FILE, model.bundle()), log, progress=progress,
                       label="mean teacher ")
    if not place.main:
        return run / MODEL_FILE
    return final_model(run / MODEL_FILE, model.bundle)
