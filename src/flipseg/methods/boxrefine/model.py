"""Box refinement: tighten a rough box before a box-prompted method segments it.

Our addition, not in the papers. Users' boxes are rarely tight; under the
papers' box-shift protocol (every edge moved 0-10 px in or out) Flip loses about
4 Dice points, mostly because a loose box makes the agents erase in proportion
to it. A small CNN (:class:`~flipseg.networks.box_regressor.BoxRegressor`) sees
the box with a margin and predicts how far each edge is from the lesion's tight
box. It learns from boxes alone: every training box is jittered as the shift
protocol does (and a fraction is left tight) and the network learns to undo the
jitter. ``--refine-box`` on ``flipseg evaluate`` and ``flipseg segment`` puts it
in front of any box-prompted method.

Run folder (``flipseg train box-refiner``): ``config.json``,
``boxrefine_checkpoint.pt`` (after every epoch; a re-run resumes),
``train_log.csv`` (loss, mean edge error of shifted validation boxes before and
after refinement) and the bundle ``boxrefine_model.safetensors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from flipseg.boxes import Box, shift_box
from flipseg.errors import FlipsegError
from flipseg.methods.common import RecipeConfig
from flipseg.methods.training import (
    NetworkBundle,
    epoch_state,
    final_model,
    open_run,
    resume_epochs,
    save_epoch,
    set_threads,
)
from flipseg.methods.whole_image import normalize_intensity
from flipseg.networks.backbone import load_backbone
from flipseg.networks.box_regressor import BoxRegressor, EncoderBoxRegressor
from flipseg.resize import resize
from flipseg.segmenters import Segmenter

__all__ = [
    "BoxRefineConfig",
    "BoxRefiner",
    "RefinedBoxSegmenter",
    "crop_around",
    "default_model_path",
    "edge_error",
    "edge_targets",
    "load_refiner",
    "require_box_prompted",
    "train_box_refiner",
]

CHECKPOINT = "boxrefine_checkpoint.pt"
MODEL_FILE = "boxrefine_model.safetensors"
_FORMAT = "flipseg-boxrefine-1"
#: The network predicts the corrections times this (targets of order 1).
_TARGET_SCALE = 10.0


@dataclass
class BoxRefineConfig(RecipeConfig):
    """Every knob of the box refiner (saved with the run)."""

    input_size: int = 96
    """Side of the square network input; a multiple of ``2 ** len(channels)``."""
    margin: float = 0.35
    """Context around the box on every side, as a fraction of its size: the lesion edge
    may lie outside the given box."""
    channels: tuple[int, ...] = (16, 32, 64, 96)
    encoder: str = "none"
    """``none``: the plain CNN of ``channels``; ``compact``, ``resnet18``, ``resnet34`` or
    ``resnet50``: flipseg's ResNet-style encoder (``input_size`` a multiple of 32), which
    ``backbone_weights`` can start from the pretrained backbone."""
    backbone_weights: str = "none"
    """Initial weights of that encoder: ``none`` (random), ``auto``/``shipped`` (flipseg's
    own pretrained encoder) or a backbone file (:mod:`flipseg.networks.backbone`)."""
    hidden: int = 128
    dropout: float = 0.2
    train_shift: int = 12
    """Training jitter: every edge moved 0 to this many pixels, inwards or outwards
    (:func:`flipseg.boxes.shift_box`)."""
    tight_fraction: float = 0.2
    """Fraction of training boxes left tight (the refiner should then leave them alone)."""
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    """Peak of the one-cycle learning-rate schedule (AdamW)."""
    weight_decay: float = 1e-4
    hflip: bool = True
    """Training: mirror half of the crops left-right (the edge targets swap)."""
    intensity_aug: bool = True
    """Training: random gain (0.8-1.2) and offset (+-0.1) per crop."""
    normalize: str = "none"
    """Crop intensities: ``none`` (value / 255) or ``percentile`` (1st-99th percentile of
    the crop stretched to 0-1, for scanners and gains unlike the training data's)."""
    gamma_aug: float = 0.0
    """Training: random gamma in ``[1 / (1 + g), 1 + g]`` per crop (0 = off)."""
    iterations: int = 1
    """Refinement passes at inference (each starts from the previous pass's box)."""
    val_shift: str = "0-10"
    """Shift level of the validation boxes scored after every epoch."""
    seed: int = 0
    num_threads: int = 1

    option_word = "box-refiner"
    strict_keys = False

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.check_options({
            "input_size": (self.input_size >= 16 and self.input_size % 2 ** len(self.channels) == 0
                           and (self.encoder == "none" or self.input_size % 32 == 0),
                           "a multiple of 2 ** len(channels), and of 32 with an encoder"),
            "encoder": self.encoder in ("none", "compact", "resnet18", "resnet34", "resnet50"),
            "backbone_weights": (self.encoder != "none"
                                 or self.backbone_weights.lower() in ("none", "auto"),
                                 "none while encoder=none: the plain CNN has no such encoder"),
            "channels": len(self.channels) >= 1,
            "margin": 0 <= self.margin <= 2,
            "train_shift": self.train_shift >= 0,
            "tight_fraction": 0 <= self.tight_fraction <= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "dropout": 0 <= self.dropout < 1,
            "iterations": self.iterations >= 1,
            "normalize": self.normalize in ("none", "percentile"),
            "gamma_aug": self.gamma_aug >= 0,
        })


# ---------------------------------------------------------------------- crops
def crop_around(image: np.ndarray, box: Box, cfg: BoxRefineConfig) -> np.ndarray:
    """The box plus ``cfg.margin`` of its size on every side, resized to the network input
    (intensities / 255); beyond the image border the edge pixels are repeated."""
    if np.ndim(image) != 2:
        raise FlipsegError(f"box refinement is 2D only, got an image of shape {np.shape(image)}")
    ext = np.asarray(box.shape, float)
    lo = np.floor(np.asarray(box.lo) - cfg.margin * ext).astype(int)
    hi = np.ceil(np.asarray(box.hi) + cfg.margin * ext).astype(int)
    shape = np.shape(image)
    pad = [(max(0, -lo[a]), max(0, hi[a] - shape[a])) for a in range(2)]
    padded = np.pad(np.asarray(image, np.float32), pad, mode="edge")
    region = padded[lo[0] + pad[0][0] : hi[0] + pad[0][0], lo[1] + pad[1][0] : hi[1] + pad[1][0]]
    return normalize_intensity(resize(region, (cfg.input_size, cfg.input_size)), cfg.normalize)


def edge_targets(box: Box, tight: Box) -> np.ndarray:
    """Corrections (top, left, bottom, right) taking ``box`` to ``tight``, as fractions of
    ``box``'s size on each axis."""
    ext = np.asarray(box.shape, float)
    return np.concatenate([(np.subtract(tight.lo, box.lo)) / ext,
                           (np.subtract(tight.hi, box.hi)) / ext]).astype(np.float32)


def _apply(box: Box, correction: np.ndarray, shape: Sequence[int]) -> Box:
    """``box`` moved by ``correction`` (see :func:`edge_targets`), inside the image, >= 2 px."""
    ext = np.asarray(box.shape, float)
    lo = np.maximum(np.rint(np.asarray(box.lo) + correction[:2] * ext), 0)
    hi = np.minimum(np.rint(np.asarray(box.hi) + correction[2:] * ext), shape)
    lo = np.minimum(lo, np.asarray(shape) - 2)
    hi = np.maximum(hi, lo + 2)
    return Box.from_lo_hi(lo.astype(int).tolist(), hi.astype(int).tolist())


def edge_error(boxes: Sequence[Box], tight: Sequence[Box]) -> float:
    """Mean absolute distance (pixels) between the edges of ``boxes`` and ``tight``."""
    return float(np.mean([np.abs(np.subtract(b.lo + b.hi, t.lo + t.hi)).mean()
                          for b, t in zip(boxes, tight)]))


# ---------------------------------------------------------------------- model
class BoxRefiner(NetworkBundle):
    """A trained box refiner: configuration and weights."""

    format, file_name, what, config_class = _FORMAT, MODEL_FILE, "box refiner", BoxRefineConfig

    def build(self, cfg: BoxRefineConfig) -> torch.nn.Module:
        if cfg.encoder != "none":
            return EncoderBoxRegressor(cfg.input_size, cfg.encoder, cfg.hidden, cfg.dropout)
        return BoxRegressor(cfg.input_size, cfg.channels, cfg.hidden, cfg.dropout)

    @torch.no_grad()
    def refine_many(self, images: Sequence[np.ndarray], boxes: Sequence[Box], *,
                    batch_size: int = 128) -> list[Box]:
        """The refined box of every (image, box), ``cfg.iterations`` passes, batched."""
        set_threads(max(1, self.cfg.num_threads))
        self.net.eval()
        out = [b.validate(np.shape(im)) for im, b in zip(images, boxes)]
        for _ in range(self.cfg.iterations):
            for start in range(0, len(out), batch_size):
                chunk = range(start, min(len(out), start + batch_size))
                x = torch.from_numpy(np.stack([crop_around(images[i], out[i], self.cfg)
                                               for i in chunk])[:, None]).to(self.device)
                corr = self.net(x).cpu().numpy() / _TARGET_SCALE
                for i, c in zip(chunk, corr):
                    out[i] = _apply(out[i], c, np.shape(images[i]))
        return out


def default_model_path() -> Path:
    """The box refiner shipped inside the package (BUS-BRA folds 1-4 boxes)."""
    return Path(str(resources.files("flipseg") / "models" / "boxrefine2d.safetensors"))


def load_refiner(model: str | Path | None) -> BoxRefiner:
    """``model`` (a run folder or file), or the shipped refiner when None / ``"default"``."""
    if model in (None, "default"):
        path = default_model_path()
        if not path.exists():
            raise FlipsegError("no box refiner shipped; train one with `flipseg train box-refiner "
                               "--dataset bus-bra --fold 5 --out RUN` and pass --refine-box RUN")
        return BoxRefiner.load(path)
    return BoxRefiner.load(model)


def require_box_prompted(method: str, needs_box: bool) -> None:
    """Refuse ``--refine-box`` for a method that ignores the box (a whole-image model)."""
    if not needs_box:
        raise FlipsegError(f"{method} ignores the box; --refine-box is for box-prompted methods")


class RefinedBoxSegmenter(Segmenter):
    """Any box-prompted segmenter, run on the refined boxes (``--refine-box``)."""

    dims = (2,)

    def __init__(self, inner: Segmenter, refiner: BoxRefiner) -> None:
        require_box_prompted(inner.name, inner.needs_box)
        if 2 not in inner.dims:
            raise FlipsegError(f"box refinement is 2D only; {inner.name} segments "
                               f"{'/'.join(map(str, inner.dims))}D images")
        self.inner, self.refiner = inner, refiner
        self.name = f"{inner.name}+refine"

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images, boxes, *, seed: int = 0) -> list[np.ndarray]:
        return self.inner.segment_many(images, self.refiner.refine_many(images, boxes), seed=seed)


# ------------------------------------------------------------------- training
def _batch(samples: Sequence[dict[str, Any]], idx: np.ndarray, cfg: BoxRefineConfig,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of jittered boxes and the corrections back to the tight ones."""
    xs, ys = [], []
    for i in idx:
        im, tight = samples[i]["image"], samples[i]["box"]
        box = tight if rng.random() < cfg.tight_fraction else shift_box(
            tight, np.shape(im), (0, cfg.train_shift), rng)
        x, y = crop_around(im, box, cfg), edge_targets(box, tight)
        if cfg.hflip and rng.random() < 0.5:  # mirror: left and right edges swap
            x, y = x[:, ::-1], np.array([y[0], -y[3], y[2], -y[1]], np.float32)
        if cfg.gamma_aug > 0:
            x = np.clip(x, 0, 1) ** np.exp(rng.uniform(-1, 1) * np.log1p(cfg.gamma_aug))
        if cfg.intensity_aug:
            x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
        xs.append(np.ascontiguousarray(x, np.float32))
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def train_box_refiner(
    train: Sequence[dict[str, Any]],
    val: Sequence[dict[str, Any]],
    cfg: BoxRefineConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train from the (tight) boxes of ``train``; ``val`` boxes, shifted by ``cfg.val_shift``
    with a fixed seed, give the validation edge error. Returns the model file path.

    ``device``: ``cpu``, ``cuda`` or ``auto``. One process (the network is small)."""
    from flipseg.boxes import shifted_boxes
    from flipseg.devices import resolve_device

    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("epochs", "backbone_weights"))
    set_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    model = BoxRefiner(cfg)
    if state is None and cfg.encoder != "none":  # a resumed run reloads its own weights
        load_backbone(model.net.encoder, cfg.backbone_weights, cfg.encoder)
    model.to_device(resolve_device(device))
    net = model.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, int(np.ceil(len(train) / cfg.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps)
    saved_parts = {"net": net, "opt": opt, "sched": sched}
    start, log = resume_epochs(state, saved_parts)
    train = [{"image": s["image"], "box": s["box"].validate(np.shape(s["image"]))} for s in train]
    val_im = [s["image"] for s in val]
    val_tight = [s["box"].validate(np.shape(s["image"])) for s in val]
    val_boxes = [shifted_boxes(b, np.shape(im), cfg.val_shift, repeats=1, seed=i)[0]
                 for i, (im, b) in enumerate(zip(val_im, val_tight))]
    val_before = edge_error(val_boxes, val_tight) if val_boxes else None  # the same every epoch
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(train))
        net.train()
        total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for i in bar:
            x, y = _batch(train, order[i * cfg.batch_size : (i + 1) * cfg.batch_size], cfg, rng)
            x, y = x.to(model.device), y.to(model.device)
            loss = torch.nn.functional.smooth_l1_loss(net(x), y * _TARGET_SCALE, beta=0.5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        row: dict[str, float] = {"epoch": epoch + 1, "loss": total / steps}
        if val_boxes:
            row["val_edge_error_before"] = val_before
            row["val_edge_error_after"] = edge_error(model.refine_many(val_im, val_boxes), val_tight)
            row["val_edge_error_tight"] = edge_error(model.refine_many(val_im, val_tight), val_tight)
        row["seconds"] = time.time() - t0
        log.append(row)
        state = epoch_state(cfg.to_dict(), saved_parts, epoch, log)
        save_epoch(run, (CHECKPOINT, state), (MODEL_FILE, model.bundle()), log, progress=progress)
    return final_model(run / MODEL_FILE, model.bundle)


def train_box_refiner_cli(args: Any) -> int:
    """``flipseg train box-refiner``: data from the usual dataset options."""
    from flipseg.methods.common import run_box_recipe

    return run_box_recipe(args, BoxRefineConfig, "box-refiner", "the box refiner", train_box_refiner)
