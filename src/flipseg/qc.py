"""A per-mask quality score in [0, 1] that tells a person which masks to review first.

The score is a logistic model of a few numbers every box -> mask run already has:

- ``agreement``: the voters' mean pairwise Dice (flip-vote's flip, flip-grabcut and boxinst
  masks; 1.0 when the method has no voters);
- ``unanimity``: the share of the mask's union that every voter marks;
- ``fill``: mask area / box area (a tight box holds about pi/4 of an ellipse);
- ``edge_reach``: the share of the box's four sides the mask comes within 5 % of;
- ``contrast``: (median grey just outside the mask - median grey inside) / 255 (lesions are
  darker than the tissue around them);
- ``edge``: the mean grey-level gradient on the mask's outline / 255.

The coefficients are fitted on BUS-BRA's training folds only (``benchmarks/qc.py --fit``)
and shipped as ``flipseg/models/qc.json``; a fitted score predicts the mask's Dice with the
truth (``quality_score(...)`` is that prediction, clipped to [0, 1]).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.metrics import compute_dice

__all__ = ["CLIP", "FEATURES", "SIGNS", "fit_quality_model", "load_quality_model", "quality_features",
           "quality_score"]

FEATURES = ("agreement", "unanimity", "fill", "edge_reach", "contrast", "edge")
#: Standardised features are clipped to +-CLIP before the linear model.
CLIP = 4.0
#: Sign of each coefficient (the features, then (fill - pi/4)^2): more agreement, reach,
#: contrast and edge never lower the score, a fill far from an ellipse's never raises it.
SIGNS = (1, 1, 0, 1, 1, 1, -1)


def quality_features(image: np.ndarray, box: Box, mask: np.ndarray,
                     voters: Sequence[np.ndarray] = ()) -> dict[str, float]:
    """The numbers the score is made of, for one 2D (or 3D) mask.

    Parameters
    ----------
    image
        The image, grey levels 0-255.
    box
        The box the mask was drawn from.
    mask
        bool, the image's shape.
    voters
        The masks a composite method voted over (may be empty).
    """
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, bool)
    box = box.clip(image.shape)
    inside = mask[box.slices()]
    area = float(box.size)
    feats: dict[str, float] = {}
    vs = [np.asarray(v, bool) for v in voters]
    if len(vs) >= 2:
        pairs = [compute_dice(vs[i], vs[j]) for i in range(len(vs)) for j in range(i + 1, len(vs))]
        union = np.logical_or.reduce(vs)
        feats["agreement"] = float(np.mean(pairs))
        feats["unanimity"] = float(np.logical_and.reduce(vs).sum() / max(1, union.sum()))
    else:
        feats["agreement"] = feats["unanimity"] = 1.0
    feats["fill"] = float(inside.sum()) / max(1.0, area)
    if inside.any():
        reach = []
        for axis in range(inside.ndim):
            proj = np.nonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))[0]
            n = inside.shape[axis]
            tol = max(1, int(round(0.05 * n)))
            reach += [proj.min() <= tol, proj.max() >= n - 1 - tol]
        feats["edge_reach"] = float(np.mean(reach))
        ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
        feats["contrast"] = (float(np.median(image[ring])) - float(np.median(image[mask]))) / 255.0 \
            if ring.any() else 0.0
        outline = mask & ~ndimage.binary_erosion(mask)
        grad = np.sqrt(sum(g * g for g in np.gradient(ndimage.gaussian_filter(image, 1.0))))
        feats["edge"] = float(grad[outline].mean()) / 255.0
    else:
        feats.update(edge_reach=0.0, contrast=0.0, edge=0.0)
    return feats


def _design(rows: Sequence[Mapping[str, float]], mean: np.ndarray | None = None,
            std: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows], np.float64)
    # fill enters twice: its distance from an ellipse's pi/4 matters, not its sign
    x = np.column_stack([x, (x[:, FEATURES.index("fill")] - np.pi / 4) ** 2])
    mean = x.mean(0) if mean is None else mean
    std = x.std(0) + 1e-9 if std is None else std
    # clipped: a mask far outside what the model was fitted on is not extrapolated linearly
    return np.clip((x - mean) / std, -CLIP, CLIP), mean, std


def fit_quality_model(rows: Sequence[Mapping[str, float]], dice: Sequence[float], *,
                      ridge: float = 1.0) -> dict[str, Any]:
    """Ridge regression of ``logit(Dice)`` on the standardised features, each coefficient
    held to its sign in :data:`SIGNS` (0: free), so the score moves the way the feature's
    meaning says even where features are correlated.

    Returns the model as a JSON-ready dict (``features``, ``mean``, ``std``, ``coef``,
    ``intercept``).
    """
    if len(rows) != len(dice) or len(rows) < len(FEATURES) + 2:
        raise FlipsegError(f"need matching features and Dice for at least {len(FEATURES) + 2} masks")
    x, mean, std = _design(rows)
    d = np.clip(np.asarray(dice, np.float64), 0.01, 0.995)
    y = np.log(d / (1 - d))
    from scipy.optimize import lsq_linear

    n = x.shape[1]
    # ridge as extra rows: ||x c - y||^2 + ridge ||c||^2
    a = np.vstack([x, np.sqrt(ridge) * np.eye(n)])
    b = np.concatenate([y - y.mean(), np.zeros(n)])
    lo = [0.0 if sg > 0 else -np.inf for sg in SIGNS]
    hi = [0.0 if sg < 0 else np.inf for sg in SIGNS]
    coef = lsq_linear(a, b, bounds=(lo, hi)).x
    return {"features": list(FEATURES), "mean": mean.tolist(), "std": std.tolist(),
            "coef": coef.tolist(), "intercept": float(y.mean())}


def load_quality_model(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped model (``flipseg/models/qc.json``) or another fitted one."""
    p = Path(path) if path else Path(str(resources.files("flipseg") / "models" / "qc.json"))
    try:
        model = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise FlipsegError(f"cannot read quality model {p}: {exc}".splitlines()[0]) from None
    if model.get("features") != list(FEATURES):
        raise FlipsegError(f"{p} is a quality model for other features")
    return model


def quality_score(features: Mapping[str, float] | Sequence[Mapping[str, float]],
                  model: Mapping[str, Any] | None = None) -> float | np.ndarray:
    """The predicted Dice of a mask (or of many) from its :func:`quality_features`, in [0, 1]."""
    model = model or load_quality_model()
    many = not isinstance(features, Mapping)
    rows = list(features) if many else [features]
    x, _, _ = _design(rows, np.asarray(model["mean"]), np.asarray(model["std"]))
    z = x @ np.asarray(model["coef"]) + float(model["intercept"])
    score = 1.0 / (1.0 + np.exp(-z))
    return score if many else float(score[0])
