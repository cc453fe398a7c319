"""Train and run the box-supervised U-Net (``flipseg train boxinst``, ``--method boxinst``).

The network sees the box with a margin (``margin`` of its size on every side),
resized to ``crop_size`` squared, and predicts the lesion mask of that crop. Only
boxes supervise it: the projection loss ties the mask to the box edges and the
pairwise loss spreads labels between neighbouring pixels of similar intensity
(ramped up over ``pairwise_warmup_steps`` optimizer steps, as BoxInst warms it up).
Masks of held-out boxes, when known, are used for the validation Dice only.

Two other supervisions train the same network (``supervision``): ``pseudo`` fits it to
the masks a box-only method draws from the training boxes (a distillation of, by
default, ``flip-vote``: still boxes only), and ``mask`` fits it to the true masks, the
fully supervised bound against which the box-only methods are measured.

Run folder: ``config.json``, ``boxinst_checkpoint.pt`` (after every epoch; a re-run
resumes), ``train_log.csv``, the inference bundle ``boxinst_model.safetensors`` and, with
``supervision=pseudo``, the pseudo masks (``pseudo_masks.npz``, drawn once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save
from flipseg.methods.boxinst.losses import mask_loss, pairwise_loss, projection_loss
from flipseg.methods.common import RecipeConfig
from flipseg.methods.training import (
    NetworkBundle,
    epoch_state,
    final_model,
    open_run,
    placement,
    resume_epochs,
    save_epoch,
    set_threads,
)
from flipseg.methods.whole_image import clean_mask, normalize_intensity
from flipseg.metrics import compute_dice
from flipseg.networks.backbone import load_backbone
from flipseg.networks.unet import build_unet
from flipseg.resize import resize
from flipseg.segmenters import Segmenter

__all__ = [
    "BoxInstConfig",
    "BoxInstModel",
    "BoxInstSegmenter",
    "crop_box",
    "default_model_path",
    "pseudo_masks",
    "train_boxinst",
]

CHECKPOINT = "boxinst_checkpoint.pt"
MODEL_FILE = "boxinst_model.safetensors"
PSEUDO_FILE = "pseudo_masks.npz"
_FORMAT = "flipseg-boxinst-1"
#: A last-epoch mean share of the held-out boxes below this reads as a collapsed U-Net.
COLLAPSED_FILL = 0.25


@dataclass
class BoxInstConfig(RecipeConfig):
    """Every knob of the box-supervised U-Net (saved with the run)."""

    crop_size: int = 96
    """Side of the square network input (the box + margin, resized)."""
    margin: float = 0.25
    """Context around the box on every side, as a fraction of the box size (inference)."""
    margin_jitter: float = 0.2
    """Training draws each side's margin from ``margin +- margin_jitter``: with the box
    always at the same place in the crop, the network would learn to fill that
    rectangle (which satisfies both losses) instead of finding the lesion."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """U-Net widths per level (full size: 32,64,128,256,512)."""
    encoder: str = "none"
    """``none``: the MONAI U-Net of ``channels``; ``compact``, ``resnet18``, ``resnet34`` or ``resnet50``:
    a U-Net on flipseg's ResNet-style encoder (:class:`flipseg.networks.unet.ResUNet`;
    ``crop_size`` a multiple of 32)."""
    backbone_weights: str = "none"
    """Initial weights of that encoder: ``none`` (random), ``shipped`` or ``auto``
    (flipseg's own pretrained encoder of that layout), or a backbone file
    (:mod:`flipseg.networks.backbone`). Only sets where training starts."""
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pairwise_weight: float = 1.0
    pairwise_warmup_steps: int = 200
    """Optimizer steps over which the pairwise weight ramps linearly from 0. Counted in
    steps, not epochs: on a few hundred boxes an epoch is a few steps, and a pairwise
    term at full weight that early collapses the U-Net to empty masks (measured on 300
    BUSI boxes: validation Dice 0.80 after epoch 1, 0.04 from epoch 6 with a 2-epoch
    warmup of 38 steps; 0.88 with 190 steps)."""
    dilation: int = 2
    theta: float = 2.0
    """Similarity temperature on a 0-100 intensity scale (BoxInst's colour theta)."""
    tau: float = 0.3
    """Pairs with similarity below this do not enter the pairwise loss."""
    smooth_sigma: float = 1.0
    """Gaussian smoothing (pixels of the crop) before the similarity: speckle."""
    normalize: str = "none"
    """Crop intensities: ``none`` (value / 255) or ``percentile`` (1st-99th percentile
    of the crop stretched to 0-1: scanners and gains differ between datasets)."""
    intensity_aug: bool = False
    """Training only: random gamma (0.7-1.4) and contrast (0.8-1.2) per crop."""
    supervision: str = "box"
    """What teaches the U-Net: ``box`` (BoxInst's projection + pairwise losses; boxes
    only), ``pseudo`` (binary cross-entropy + Dice against the masks ``pseudo_method``
    draws from each training box: boxes only, a distillation of that method) or
    ``mask`` (the same loss against the true masks: the fully supervised bound; every
    training case needs its mask)."""
    pseudo_method: str = "flip-vote"
    """The box -> mask method that draws the pseudo masks of ``supervision=pseudo`` (any
    box-prompted ``--method`` name). Drawn once, kept in the run folder."""
    threshold: float = 0.5
    fill_holes: bool = True
    largest_component: bool = True
    seed: int = 0
    num_threads: int = 1

    option_word = "boxinst"
    strict_keys = False

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.check_options({
            "crop_size": self.crop_size >= 16 and self.crop_size % 2 ** (len(self.channels) - 1) == 0,
            "channels": len(self.channels) >= 2,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "margin": 0 <= self.margin <= 2,
            "margin_jitter": 0 <= self.margin_jitter <= self.margin,
            "tau": 0 <= self.tau <= 1,
            "threshold": 0 < self.threshold < 1,
            "normalize": self.normalize in ("none", "percentile"),
            "supervision": self.supervision in ("box", "pseudo", "mask"),
            "encoder": self.encoder in ("none", "compact", "resnet18", "resnet34", "resnet50"),
        })
        if self.encoder != "none" and self.crop_size % 32:
            raise FlipsegError(f"boxinst: crop_size={self.crop_size} must be a multiple of 32 "
                               f"with encoder={self.encoder}")
        if self.encoder == "none" and self.backbone_weights.lower() not in ("none", "auto"):
            raise FlipsegError("boxinst: backbone_weights needs a ResNet encoder: add --set "
                               "encoder=compact (the MONAI U-Net has none)")


# ---------------------------------------------------------------------- crops
def crop_box(
    image: np.ndarray, box: Box, cfg: BoxInstConfig, margins: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Box]:
    """(crop 0-1, smoothed crop, box mask in the crop, the view it covers) for one box;
    ``margins`` (before/after on each axis, fractions of the box) default to ``cfg.margin``."""
    if np.ndim(image) != 2:
        raise FlipsegError(f"boxinst segments 2D images, got shape {np.shape(image)}")
    box = box.validate(image.shape)
    if margins is None:
        view = box.expand(cfg.margin, relative=True).clip(image.shape)
    else:
        ext = np.asarray(box.shape, float)
        lo = [int(np.floor(b - m * e)) for b, m, e in zip(box.lo, margins[0::2], ext)]
        hi = [int(np.ceil(b + m * e)) for b, m, e in zip(box.hi, margins[1::2], ext)]
        view = Box.from_lo_hi(lo, hi).clip(image.shape)
    S = cfg.crop_size
    crop = normalize_intensity(resize(np.asarray(image, np.float32)[view.slices()], (S, S)), cfg.normalize)
    smooth = ndimage.gaussian_filter(crop, cfg.smooth_sigma) if cfg.smooth_sigma > 0 else crop
    bm = np.zeros((S, S), np.float32)
    lo = [int(np.floor((b - v) * S / n)) for b, v, n in zip(box.lo, view.lo, view.shape)]
    hi = [max(l + 1, int(np.ceil((b - v) * S / n))) for b, v, n, l in zip(box.hi, view.lo, view.shape, lo)]
    bm[lo[0] : hi[0], lo[1] : hi[1]] = 1.0
    return crop, smooth.astype(np.float32), bm, view


def _postprocess(mask: np.ndarray, cfg: BoxInstConfig) -> np.ndarray:
    return clean_mask(mask, fill_holes=cfg.fill_holes, largest_component=cfg.largest_component)


# ---------------------------------------------------------------------- model
class BoxInstModel(NetworkBundle):
    """A trained box-supervised U-Net: configuration and weights."""

    format, file_name, what, config_class = _FORMAT, MODEL_FILE, "boxinst model", BoxInstConfig

    def build(self, cfg: BoxInstConfig) -> torch.nn.Module:
        return build_unet(2, 1, 1, cfg.channels, encoder=cfg.encoder)

    @torch.no_grad()
    def segment_many(
        self, images: Sequence[np.ndarray], boxes: Sequence[Box], *, batch_size: int = 64
    ) -> list[np.ndarray]:
        """Masks (bool, image shape) inside each box, batched through the network."""
        torch.set_num_threads(max(1, self.cfg.num_threads))
        self.net.eval()
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            ims = images[start : start + batch_size]
            bxs = boxes[start : start + batch_size]
            crops = [crop_box(im, b, self.cfg) for im, b in zip(ims, bxs)]
            x = torch.from_numpy(np.stack([c[0] for c in crops])[:, None]).to(self.device)
            prob = torch.sigmoid(self.net(x))[:, 0].cpu().numpy()
            for im, b, (_, _, _, view), p in zip(ims, bxs, crops, prob):
                m_view = resize(p, view.shape) > self.cfg.threshold
                full = np.zeros(np.shape(im), bool)
                full[view.slices()] = m_view
                full &= b.validate(np.shape(im)).to_mask(np.shape(im))
                out.append(_postprocess(full, self.cfg))
        return out


def default_model_path() -> Path:
    """The box-supervised U-Net shipped inside the package (BUS-BRA folds 1-4 boxes)."""
    return Path(str(resources.files("flipseg") / "models" / "boxinst2d.safetensors"))


class BoxInstSegmenter(Segmenter):
    """``--method boxinst [--model RUN]``: the trained box-supervised U-Net (the shipped
    one when ``model`` is not given)."""

    name = "boxinst"
    dims = (2,)

    def __init__(self, model: str | Path | None = None, batch_size: int = 64) -> None:
        if model is None:
            model = default_model_path()
            if not model.exists():
                raise FlipsegError(
                    "boxinst needs a trained model: --model RUN (train one with "
                    "`flipseg train boxinst --dataset bus-bra --fold 5 --out RUN`)"
                )
        self.model = BoxInstModel.load(model)
        self.batch_size = batch_size

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images, boxes, *, seed: int = 0) -> list[np.ndarray]:
        return self.model.segment_many(list(images), list(boxes), batch_size=self.batch_size)



# ------------------------------------------------------------------- training
def _stack(samples: Sequence[dict[str, Any]], cfg: BoxInstConfig, rng: np.random.Generator,
           targets: Sequence[np.ndarray] | None = None):
    """One epoch's training crops, each side's margin drawn around ``cfg.margin``
    (and, with ``intensity_aug``, a random gamma and contrast per crop): (crops,
    smoothed crops, box masks, target masks cropped alike or None)."""
    crops, smooth, bms, tgs = [], [], [], []
    S = cfg.crop_size
    for i, s in enumerate(samples):
        m = cfg.margin + rng.uniform(-cfg.margin_jitter, cfg.margin_jitter, size=4)
        c, sm, bm, view = crop_box(s["image"], s["box"], cfg, np.clip(m, 0.0, None))
        if targets is not None:
            tg = resize(np.asarray(targets[i], np.float32)[view.slices()], (S, S)) >= 0.5
            tgs.append(tg.astype(np.float32))
        if cfg.intensity_aug:
            gamma, gain = np.exp(rng.uniform(np.log(0.7), np.log(1.4))), rng.uniform(0.8, 1.2)
            c = np.clip(0.5 + gain * (c**gamma - 0.5), 0, 1).astype(np.float32)
            sm = np.clip(0.5 + gain * (sm**gamma - 0.5), 0, 1).astype(np.float32)
        crops.append(c)
        smooth.append(sm)
        bms.append(bm)
    tg_t = torch.from_numpy(np.stack(tgs)[:, None]) if targets is not None else None
    return (torch.from_numpy(np.stack(crops)[:, None]), torch.from_numpy(np.stack(smooth)[:, None]),
            torch.from_numpy(np.stack(bms)[:, None]), tg_t)


def _box_key(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[*b.lo, *b.hi] for b in boxes], np.int64).reshape(len(boxes), -1)


def pseudo_masks(
    samples: Sequence[dict[str, Any]], cfg: BoxInstConfig, run_dir: str | Path, *,
    progress: bool = True, chunk: int = 64,
) -> list[np.ndarray]:
    """The masks ``cfg.pseudo_method`` draws inside each sample's box (full image shape,
    bool; anything outside the box is dropped), ``chunk`` boxes per batched call.

    ``run_dir/pseudo_masks.npz`` is rewritten after every chunk: a re-run with the same
    method and boxes reads back what was drawn and draws only the rest (a killed run
    loses one chunk at most)."""
    from flipseg.methods import get_segmenter, load_methods

    load_methods()
    path = Path(run_dir) / PSEUDO_FILE
    boxes = [s["box"] for s in samples]
    key = _box_key(boxes)
    kept: list[np.ndarray] = []  # masks inside their boxes, in sample order
    if path.exists():
        with np.load(path) as z:
            done = z["boxes"]
            if (str(z["method"]) == cfg.pseudo_method and len(done) <= len(key)
                    and np.array_equal(done, key[: len(done)])):
                kept = [z[f"m{i}"] for i in range(len(done))]
    if len(kept) < len(samples):
        seg = get_segmenter(cfg.pseudo_method)
        if not seg.needs_box or 2 not in seg.dims:
            raise FlipsegError(f"pseudo_method={cfg.pseudo_method} is not a 2D box -> mask method")
        bar = tqdm(total=len(samples), initial=len(kept), desc=f"pseudo masks ({cfg.pseudo_method})",
                   disable=not progress, leave=False)
        for start in range(len(kept), len(samples), chunk):
            part = samples[start : start + chunk]
            masks = seg.segment_many([s["image"] for s in part], [s["box"] for s in part],
                                     seed=cfg.seed + start)
            kept += [np.asarray(m, bool)[s["box"].slices()] for m, s in zip(masks, part)]
            _save_pseudo(path, cfg.pseudo_method, key[: len(kept)], kept)
            bar.update(len(part))
        bar.close()
    out = []
    for s, b, m in zip(samples, boxes, kept):
        full = np.zeros(np.shape(s["image"]), bool)
        full[b.slices()] = m
        out.append(full)
    return out


def _save_pseudo(path: Path, method: str, key: np.ndarray, kept: Sequence[np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: given a path, numpy would append .npz
            np.savez_compressed(fh, method=np.array(method), boxes=key,
                                **{f"m{i}": m for i, m in enumerate(kept)})

    atomic_save(path, write)


def _targets(samples: Sequence[dict[str, Any]], cfg: BoxInstConfig, run_dir: Path,
             progress: bool) -> list[np.ndarray] | None:
    """The masks the U-Net is fitted to: None (``box``), the pseudo masks or the true ones."""
    if cfg.supervision == "box":
        return None
    if cfg.supervision == "pseudo":
        return pseudo_masks(samples, cfg, run_dir, progress=progress)
    missing = sum(s.get("mask") is None for s in samples)
    if missing:
        raise FlipsegError(f"supervision=mask needs the mask of every training case; "
                           f"{missing} of {len(samples)} have none")
    return [np.asarray(s["mask"], bool) for s in samples]


def train_boxinst(
    train: Sequence[dict[str, Any]],
    val: Sequence[dict[str, Any]],
    cfg: BoxInstConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = "cpu",
) -> Path:
    """Train from the boxes of ``train`` (masks unused); returns the model file path.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (:func:`~flipseg.methods.training.placement`).
    Under ``torchrun --nproc_per_node N`` the N processes train one model together
    (DistributedDataParallel; each takes its share of every batch, so the steps and the
    global batch are those of one process) and rank 0 alone writes the run folder.
    """
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict(), resumable=("epochs", "backbone_weights"))
    set_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    model = BoxInstModel(cfg)
    if state is None and cfg.encoder != "none":  # a resumed run reloads its own weights
        load_backbone(model.net.encoder, cfg.backbone_weights, cfg.encoder)
    model.to_device(place.device)
    net = model.net
    trained = place.wrap(net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(train) / cfg.batch_size)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + np.cos(np.pi * min(1.0, it / (cfg.epochs * steps_per_epoch))))
    )
    saved_parts = {"net": net, "opt": opt, "sched": sched}
    start, log = resume_epochs(state, saved_parts)
    train = [{"image": s["image"], "box": s["box"].validate(np.shape(s["image"])),
              "mask": s.get("mask")} for s in train]
    # a finished run re-run trains no epoch: no pseudo masks to read back
    targets = (place.main_first(lambda: _targets(train, cfg, run, progress and place.main))
               if start < cfg.epochs else None)
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        x, xs, bm, tg = _stack(train, cfg, np.random.default_rng([cfg.seed, epoch]), targets)
        trained.train()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=g)
        flips = torch.rand(len(x), generator=g) < 0.5
        tot = dict.fromkeys(("loss",) if tg is not None else ("loss", "projection", "pairwise"), 0.0)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = place.share(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            f = flips[idx][:, None, None, None]
            xb, sb, bb = (torch.where(f, t[idx].flip(-1), t[idx]).to(place.device) for t in (x, xs, bm))
            logits = trained(xb)
            if tg is not None:  # pseudo or true masks: a plain segmentation loss
                loss = mask_loss(logits, torch.where(f, tg[idx].flip(-1), tg[idx]).to(place.device))
                parts = {}
            else:
                lp = projection_loss(logits, bb)
                lw = pairwise_loss(logits, sb, bb, dilation=cfg.dilation, theta=cfg.theta, tau=cfg.tau)
                ramp = min(1.0, (epoch * steps_per_epoch + i) / max(cfg.pairwise_warmup_steps, 1))
                loss = lp + cfg.pairwise_weight * ramp * lw
                parts = {"projection": lp.item(), "pairwise": lw.item()}
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            for k, v in {"loss": loss.item(), **parts}.items():
                tot[k] += v
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update({k: place.mean(v) / steps_per_epoch for k, v in tot.items()})
        if val and place.main:
            preds = model.segment_many([s["image"] for s in val], [s["box"] for s in val])
            # the share of each held-out box the U-Net marks: needs no mask, and shows a collapse
            row["val_fill"] = float(np.mean([p.sum() / s["box"].size for p, s in zip(preds, val)]))
            scored = [(p, s["mask"]) for p, s in zip(preds, val) if s.get("mask") is not None]
            if scored:
                row["val_dice"] = float(np.mean([compute_dice(p, m) for p, m in scored]))
        row["seconds"] = time.time() - t0
        log.append(row)
        if place.main:
            state = epoch_state(cfg.to_dict(), saved_parts, epoch, log)
            save_epoch(run, (CHECKPOINT, state), (MODEL_FILE, model.bundle()), log, progress=progress)
    if not place.main:
        return run / MODEL_FILE
    if log and log[-1].get("val_fill", 1.0) < COLLAPSED_FILL:
        print(f"warning: the trained U-Net marks {log[-1]['val_fill']:.0%} of the held-out boxes "
              "(a lesion fills about 75 %): training collapsed; try more epochs or a longer "
              "--set pairwise_warmup_steps=N")
    return final_model(run / MODEL_FILE, model.bundle)


def train_boxinst_cli(args: Any) -> int:
    """``flipseg train boxinst``: data from the usual dataset options."""
    from flipseg.methods.common import run_box_recipe

    return run_box_recipe(args, BoxInstConfig, "boxinst", "boxinst", train_boxinst)
