"""Losses of the hybrid recipe (paper 004, Eqs. 1-3).

* :func:`ppa_loss`: pixel-position-aware loss (F3Net), weighted BCE + weighted IoU,
  the weight ``1 + gamma * |avgpool(y) - y|`` growing near edges;
* :func:`perception_loss`: uncertain-area perception loss ``1 - TN / (TN + FP)`` of
  the background branch (positive = definite background, negative = inside the box);
* :func:`hybrid_loss`: Eq. 3, ``L_ppa^seg + L_ppa^aux + L_percept^aux``, each term
  over the images of the batch that carry its label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["hybrid_loss", "perception_loss", "ppa_loss", "ppa_weight"]


def ppa_weight(target: torch.Tensor, kernel: int = 31, gamma: float = 5.0) -> torch.Tensor:
    """``1 + gamma * |avgpool_k(target) - target|`` [B, 1, H, W] (zero padding counted, as in F3Net)."""
    local = F.avg_pool2d(target, kernel_size=kernel, stride=1, padding=kernel // 2)
    return 1.0 + gamma * (local - target).abs()


def ppa_loss(
    logits: torch.Tensor, target: torch.Tensor, *, kernel: int = 31, gamma: float = 5.0
) -> torch.Tensor:
    """Pixel-position-aware loss, mean over the batch.

    Parameters
    ----------
    logits : [B, 1, H, W]
    target : [B, 1, H, W] in [0, 1]
    kernel, gamma : of :func:`ppa_weight`

    Returns
    -------
    scalar: mean over images of ``wBCE + wIoU`` with
    ``wBCE = sum(w * bce) / sum(w)`` and
    ``wIoU = 1 - (sum(w p y) + 1) / (sum(w (p + y)) - sum(w p y) + 1)``, ``p = sigmoid(logits)``.
    """
    w = ppa_weight(target, kernel, gamma)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (w * bce).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
    p = torch.sigmoid(logits)
    inter = (w * p * target).sum(dim=(2, 3))
    union = (w * (p + target)).sum(dim=(2, 3))
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (wbce + wiou).mean()


def perception_loss(aux_logits: torch.Tensor, reversed_box: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - TN / (TN + FP)`` of the background branch, mean over images with a box.

    Positive = background (``reversed_box`` 1 outside the box), negative = the box's
    uncertain area. With ``p = sigmoid(aux_logits)`` (soft counts):
    ``TN = sum((1 - p)(1 - y))``, ``FP = sum(p (1 - y))``, so the loss is the mean
    background probability inside the box: calling box pixels background costs, the
    reverse is free. Images whose box covers nothing are left out (0 when none is left).

    Parameters
    ----------
    aux_logits, reversed_box : [B, 1, H, W]
    """
    p = torch.sigmoid(aux_logits)
    inside = 1.0 - reversed_box
    tn = ((1.0 - p) * inside).sum(dim=(1, 2, 3))
    fp = (p * inside).sum(dim=(1, 2, 3))
    has = inside.sum(dim=(1, 2, 3)) > 0
    if not has.any():
        return aux_logits.sum() * 0.0
    return (1.0 - tn[has] / (tn[has] + fp[has] + eps)).mean()


def hybrid_loss(
    seg_logits: torch.Tensor,
    seg_target: torch.Tensor,
    has_seg: torch.Tensor,
    aux_logits: torch.Tensor | None = None,
    aux_target: torch.Tensor | None = None,
    has_aux: torch.Tensor | None = None,
    *,
    perception: bool = True,
    perception_weight: float = 1.0,
    kernel: int = 31,
    gamma: float = 5.0,
) -> dict[str, torch.Tensor]:
    """Eq. 3 over a batch where each image may carry a seg label, an aux label, or both.

    Parameters
    ----------
    seg_logits, seg_target : [B, 1, S, S]; has_seg : bool [B] (the target is used there)
    aux_logits, aux_target : [B, 1, S, S] or None (single-decoder modes); aux_target is
        the reversed box (1 = background); has_aux : bool [B]
    perception : add ``perception_weight * L_percept`` on the aux branch

    Returns
    -------
    dict ``loss`` (total), ``seg``, ``aux``, ``percept`` (0 where a term has no image).
    """
    zero = seg_logits.sum() * 0.0
    has_seg = has_seg.bool()
    seg = ppa_loss(seg_logits[has_seg], seg_target[has_seg], kernel=kernel, gamma=gamma) \
        if has_seg.any() else zero
    aux, percept = zero, zero
    if aux_logits is not None and has_aux is not None and has_aux.any():
        has_aux = has_aux.bool()
        a, t = aux_logits[has_aux], aux_target[has_aux]
        aux = ppa_loss(a, t, kernel=kernel, gamma=gamma)
        if perception:
            percept = perception_loss(a, t)
    total = seg + aux + perception_weight * percept if perception else seg + aux
    return {"loss": total, "seg": seg, "aux": aux, "percept": percept}
