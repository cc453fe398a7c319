"""Pretraining of the shared encoder (:mod:`flipseg.networks.backbone`)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text
from flipseg.methods.backbone.config import BackboneConfig
from flipseg.methods.training import (
    cpu_state,
    epoch_state,
    open_run,
    placement,
    resume_epochs,
    save_epoch,
    set_threads,
)
from flipseg.methods.whole_image import image_to_input
from flipseg.networks.backbone import BACKBONE_FILE, BACKBONE_FORMAT
from flipseg.networks.hybrid import ENCODERS, ResNetEncoder, UNetDecoder

__all__ = ["PretrainNet", "check_overlap", "prepare", "train_backbone"]

CHECKPOINT = "backbone_checkpoint.pt"


class PretrainNet(nn.Module):
    """Encoder + ellipse decoder + class and box heads on the deepest features."""

    def __init__(self, encoder: str, ssl: bool = False) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(ENCODERS.get(encoder), in_channels=1)
        ch = self.encoder.out_channels
        self.decoder = UNetDecoder(ch, 1)
        self.cls = nn.Linear(ch[-1], 2)
        self.box = nn.Linear(ch[-1], 4)
        # the contrastive term's projection head (SimCLR): pooled features -> 64-d
        self.proj = (nn.Sequential(nn.Linear(ch[-1], ch[-1]), nn.ReLU(inplace=True),
                                   nn.Linear(ch[-1], 64)) if ssl else None)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        seg = self.decoder(feats[-1], feats[:-1])
        g = feats[-1].mean((2, 3))
        return seg, self.cls(g), torch.sigmoid(self.box(g))


def ellipse_target(box: Any, shape: Sequence[int], size: int) -> np.ndarray:
    """The box's inscribed ellipse on the ``size`` x ``size`` grid (float32 0/1)."""
    (h, w) = shape
    yy, xx = np.mgrid[:size, :size].astype(np.float32) + 0.5
    cy, cx = (box.y0 + box.y1) / 2 * size / h, (box.x0 + box.x1) / 2 * size / w
    ry, rx = max(0.5, (box.y1 - box.y0) / 2 * size / h), max(0.5, (box.x1 - box.x0) / 2 * size / w)
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1.0).astype(np.float32)


def prepare(samples: Sequence[dict[str, Any]], size: int) -> dict[str, torch.Tensor]:
    """Images, ellipse maps, labels (benign 0, malignant 1, else -1) and box corners."""
    n = len(samples)
    images = np.zeros((n, 1, size, size), np.float32)
    maps = np.zeros((n, 1, size, size), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    labels = np.full(n, -1, np.int64)
    for i, s in enumerate(samples):
        im = s["image"]
        h, w = np.shape(im)
        b = s["box"].validate((h, w))
        images[i, 0] = image_to_input(im, size, what="the backbone trains on")
        maps[i, 0] = ellipse_target(b, (h, w), size)
        boxes[i] = (b.x0 / w, b.y0 / h, b.x1 / w, b.y1 / h)
        labels[i] = {"benign": 0, "malignant": 1}.get(str(s.get("label")), -1)
    t = torch.from_numpy
    return {"images": t(images), "maps": t(maps), "boxes": t(boxes), "labels": t(labels)}


def check_overlap(train_ids: Sequence[str], excluded: dict[str, set[str]]) -> dict[str, Any]:
    """Refuse training images that belong to an evaluation set (by case id).

    ``excluded``: evaluation set name -> its case ids. Returns the record written to the
    run folder (``overlap.json``); raises FlipsegError naming the set and a few ids."""
    ids = set(map(str, train_ids))
    record: dict[str, Any] = {"train_cases": len(ids), "checked": {}}
    for name, other in excluded.items():
        common = sorted(ids & other)
        if common:
            shown = ", ".join(common[:5]) + (f", ... ({len(common)} in all)" if len(common) > 5 else "")
            raise FlipsegError(f"{len(common)} training case(s) belong to the evaluation set "
                               f"{name}: {shown}; pretrain on other images (e.g. BUS-BRA "
                               "--fold 5, whose training part is folds 1-4)")
        record["checked"][name] = {"cases": len(other), "shared": 0}
    return record


def _augment(x: torch.Tensor, maps: torch.Tensor, boxes: torch.Tensor,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(x)
    flip = torch.rand(n, generator=gen) < 0.5
    x, maps, boxes = x.clone(), maps.clone(), boxes.clone()
    x[flip], maps[flip] = x[flip].flip(-1), maps[flip].flip(-1)
    boxes[flip] = torch.stack([1 - boxes[flip, 2], boxes[flip, 1], 1 - boxes[flip, 0],
                               boxes[flip, 3]], 1)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.6)  # 0.74-1.35
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
    x = (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)
    return x, maps, boxes


def random_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random view of each image for the contrastive term: a crop of 60-100 % of each
    side at a random place, resized back, then flips, gamma and contrast as in training."""
    n = len(x)
    scale = 0.6 + 0.4 * torch.rand(n, 2, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    dummy_maps, dummy_boxes = torch.zeros(n, 1, 1, 1), torch.zeros(n, 4)
    return _augment(v.cpu(), dummy_maps, dummy_boxes, gen)[0].to(x.device)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's partner is the positive, the batch's other 2n-2 views the
    negatives (cosine similarity / ``temperature``, cross-entropy)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _contrastive(net: PretrainNet, v1: torch.Tensor, v2: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    assert net.proj is not None
    z1 = net.proj(net.encoder(v1)[-1].mean((2, 3)))
    z2 = net.proj(net.encoder(v2)[-1].mean((2, 3)))
    return nt_xent(z1, z2, temperature)


def _losses(net: nn.Module, x: torch.Tensor, maps: torch.Tensor, boxes: torch.Tensor,
            labels: torch.Tensor, cfg: BackboneConfig) -> dict[str, torch.Tensor]:
    seg, logits, box = net(x)
    p = torch.sigmoid(seg)
    dice = 1 - (2 * (p * maps).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + maps.sum((1, 2, 3)) + 1)
    out = {"seg": F.binary_cross_entropy_with_logits(seg, maps) + dice.mean(),
           "box": F.smooth_l1_loss(box, boxes, beta=0.05)}
    known = labels >= 0
    out["cls"] = (F.cross_entropy(logits[known], labels[known]) if known.any()
                  else logits.sum() * 0)
    out["total"] = cfg.seg_weight * out["seg"] + cfg.cls_weight * out["cls"] + cfg.box_weight * out["box"]
    return out


@torch.no_grad()
def _validate(net: nn.Module, data: dict[str, torch.Tensor], device: torch.device,
              batch: int = 64) -> dict[str, float]:
    """Ellipse-map Dice, box IoU and class accuracy / AUC on held-out images."""
    from flipseg.metrics import compute_classification_metrics

    net.eval()
    dices, ious, probs = [], [], []
    for i in range(0, len(data["images"]), batch):
        x = data["images"][i:i + batch].to(device)
        seg, logits, box = net(x)
        p = (torch.sigmoid(seg) > 0.5).float().cpu()
        m = data["maps"][i:i + batch]
        dices += (2 * (p * m).sum((1, 2, 3)) / (p.sum((1, 2, 3)) + m.sum((1, 2, 3))).clamp_min(1)).tolist()
        b, t = box.cpu(), data["boxes"][i:i + batch]
        iw = (torch.minimum(b[:, 2], t[:, 2]) - torch.maximum(b[:, 0], t[:, 0])).clamp_min(0)
        ih = (torch.minimum(b[:, 3], t[:, 3]) - torch.maximum(b[:, 1], t[:, 1])).clamp_min(0)
        area = lambda z: (z[:, 2] - z[:, 0]).clamp_min(0) * (z[:, 3] - z[:, 1]).clamp_min(0)  # noqa: E731
        inter = iw * ih
        ious += (inter / (area(b) + area(t) - inter).clamp_min(1e-6)).tolist()
        probs += torch.softmax(logits, 1)[:, 1].cpu().tolist()
    labels = data["labels"].numpy()
    known = labels >= 0
    pr = np.asarray(probs)
    out = {"val_ellipse_dice": float(np.mean(dices)), "val_box_iou": float(np.mean(ious))}
    if known.any() and len(set(labels[known])) == 2:
        m = compute_classification_metrics(labels[known], pr[known])
        out["val_cls_acc"], out["val_cls_auc"] = float(m["accuracy"]), float(m["auc"])
    net.train()
    return out


def bundle(net: PretrainNet, cfg: BackboneConfig, data_record: dict[str, Any]) -> dict[str, Any]:
    """The shipped form: the encoder alone, with its layout, configuration and data."""
    return {"format": BACKBONE_FORMAT, "encoder": cfg.encoder, "config": cfg.to_dict(),
            "data": data_record, "state_dict": cpu_state(net.encoder.state_dict())}


def train_backbone(train: Sequence[dict[str, Any]], val: Sequence[dict[str, Any]],
                   cfg: BackboneConfig, run_dir: str | Path, *, overlap: dict[str, Any],
                   data_record: dict[str, Any], progress: bool = True,
                   device: str | None = "cpu") -> Path:
    """Pretrain; returns the path of ``backbone.safetensors`` in the run folder. Resumes
    after the last finished epoch of a run folder with the same configuration."""
    train = [s for s in train if s.get("box") is not None]
    if len(train) < 4:
        raise FlipsegError(f"the backbone needs at least 4 training images with a box, got {len(train)}")
    place = placement(device)
    run, state = open_run(run_dir, CHECKPOINT, cfg.to_dict())
    ids = sorted(str(s["case_id"]) for s in train)
    record = {**data_record, "train_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    atomic_write_text(run / "overlap.json", json.dumps(overlap, indent=1))
    set_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    net = PretrainNet(cfg.encoder, ssl=cfg.ssl_weight > 0).to(place.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log = resume_epochs(state, {"net": net, "opt": opt})
    data = prepare(train, cfg.input_size)
    vdata = prepare([s for s in val if s.get("box") is not None], cfg.input_size) if val else None
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start):  # the same batch order as an uninterrupted run
        torch.randperm(len(train), generator=gen)
    n = len(train)
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        net.train()
        order = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"backbone epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            x, maps, boxes = data["images"][idx], data["maps"][idx], data["boxes"][idx]
            dev = place.device
            if cfg.ssl_weight > 0:  # views of the unaugmented images
                views = random_view(x, gen).to(dev), random_view(x, gen).to(dev)
            if cfg.augment:
                x, maps, boxes = _augment(x, maps, boxes, gen)
            losses = _losses(net, x.to(dev), maps.to(dev), boxes.to(dev),
                             data["labels"][idx].to(dev), cfg)
            if cfg.ssl_weight > 0:
                losses["ssl"] = _contrastive(net, *views, cfg.ssl_temperature)
                losses["total"] = losses["total"] + cfg.ssl_weight * losses["ssl"]
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr,
                               **{f"loss_{k}": v / max(1, steps) for k, v in sums.items()}}
        if vdata is not None and len(vdata["images"]):
            row.update(_validate(net, vdata, place.device))
        row["seconds"] = time.time() - t0
        log.append(row)
        save_epoch(run, (CHECKPOINT, epoch_state(cfg.to_dict(), {"net": net, "opt": opt}, epoch, log)),
                   (BACKBONE_FILE, bundle(net, cfg, record)), log, progress=progress,
                   label="backbone ")
    path = run / BACKBONE_FILE
    if not path.exists():
        from flipseg.bundles import save_bundle

        save_bundle(path, bundle(net, cfg, record))
    return path
