"""BoxInst's two box-supervision losses, for greyscale images (Tian et al., 2021).

* Projection loss: the maximum of the predicted mask along each image axis must
  match the box's projection on that axis (Dice on the 1D projections), so the mask
  fills the box from edge to edge and stays inside it.
* Pairwise loss: two neighbouring pixels (8 directions at a dilation) whose
  intensities are similar should take the same label. Similarity is
  ``exp(-|I_i - I_j| * 100 / theta)`` on the image scaled to 0-1 (BoxInst compares
  LAB colours on a 0-100 lightness scale; greyscale has lightness only), and only
  pairs with similarity >= ``tau`` and at least one end inside the box count: the
  pairs that cross the box edge tie background inside the box to the background
  outside it, which the projection loss drives to 0 (without them, filling the
  whole box satisfies both losses).

``mask_loss`` (binary cross-entropy + soft Dice against a mask) is the loss of the
U-Net's other supervisions: the true masks (the fully supervised bound) or the masks a
box-only method draws (pseudo masks).

Predictions are logits ``[B, 1, H, W]``; boxes are binary masks of the same shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["projection_loss", "pairwise_affinity", "pairwise_loss", "mask_loss", "OFFSETS"]


def OFFSETS(dilation: int) -> list[tuple[int, int]]:
    """The 4 neighbour offsets (the other 4 of the 8 directions are their mirrors)."""
    d = int(dilation)
    return [(0, d), (d, 0), (d, d), (d, -d)]


def _dice_1d(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    inter = (a * b).sum(-1)
    return 1.0 - 2.0 * inter / ((a * a).sum(-1) + (b * b).sum(-1) + eps)


def projection_loss(logits: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of Dice(proj_x(p), proj_x(box)) + Dice(proj_y(p), proj_y(box))."""
    p = torch.sigmoid(logits).flatten(0, 1)  # [B, H, W]
    b = box_mask.float().flatten(0, 1)
    ly = _dice_1d(p.amax(-1), b.amax(-1))  # projection on the row axis
    lx = _dice_1d(p.amax(-2), b.amax(-2))
    return (ly + lx).mean()


def _pairs(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two members of every (pixel, pixel + (dy, dx)) pair inside the image."""
    H, W = x.shape[-2:]
    y0, y1 = max(0, -dy), H - max(0, dy)
    x0, x1 = max(0, -dx), W - max(0, dx)
    return x[..., y0:y1, x0:x1], x[..., y0 + dy : y1 + dy, x0 + dx : x1 + dx]


def pairwise_affinity(image: torch.Tensor, dilation: int = 2, theta: float = 2.0) -> list[torch.Tensor]:
    """Similarity maps, one per offset of :func:`OFFSETS` (image ``[B,1,H,W]`` in 0-1)."""
    out = []
    for dy, dx in OFFSETS(dilation):
        a, b = _pairs(image, dy, dx)
        out.append(torch.exp(-(a - b).abs() * 100.0 / theta))
    return out


def pairwise_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    box_mask: torch.Tensor,
    *,
    dilation: int = 2,
    theta: float = 2.0,
    tau: float = 0.3,
) -> torch.Tensor:
    """-log P(same label) averaged over similar (>= tau) neighbour pairs with at least
    one end inside the box."""
    logp = F.logsigmoid(logits)
    logq = F.logsigmoid(-logits)
    total = logits.new_zeros(())
    count = logits.new_zeros(())
    for (dy, dx), sim in zip(OFFSETS(dilation), pairwise_affinity(image, dilation, theta)):
        p1, p2 = _pairs(logp, dy, dx)
        q1, q2 = _pairs(logq, dy, dx)
        b1, b2 = _pairs(box_mask.float(), dy, dx)
        same = torch.logaddexp(p1 + p2, q1 + q2)
        w = (sim >= tau).float() * torch.maximum(b1, b2)
        total = total - (same * w).sum()
        count = count + w.sum()
    return total / count.clamp_min(1.0)


def mask_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy + (1 - soft Dice per image), both averaged over the batch;
    ``target`` is a 0/1 mask of the logits' shape."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2.0 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)
    return bce + (1.0 - dice).mean()
