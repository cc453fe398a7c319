"""Curriculum over superpixel counts: progressive (PCL), mixed (MCL) or fixed."""

from __future__ import annotations

import numpy as np

from flipseg.methods.flip.config import FlipConfig

__all__ = ["level_for_epoch", "episode_levels", "scaled_level"]


def level_for_epoch(cfg: FlipConfig, epoch: int) -> int:
    """Index of the PCL level used in ``epoch`` (0-based)."""
    n = len(cfg.levels)
    if cfg.curriculum == "fixed":
        return n - 1
    per = cfg.epochs_per_level or max(1, int(np.ceil(cfg.epochs / n)))
    return min(epoch // per, n - 1)


def episode_levels(
    cfg: FlipConfig, epoch: int, n_episodes: int, rng: np.random.Generator
) -> np.ndarray:
    """Superpixel count for each episode of an epoch.

    ``progressive`` and ``fixed``: one level for the epoch; ``mixed``: a random level
    per episode, drawn uniformly from all levels.
    """
    if cfg.curriculum == "mixed":
        return np.asarray(cfg.levels)[rng.integers(0, len(cfg.levels), size=n_episodes)]
    return np.full(n_episodes, cfg.levels[level_for_epoch(cfg, epoch)])


def scaled_level(cfg: FlipConfig, n_segments: int, box_shape: tuple[int, ...]) -> int:
    """Superpixel count, optionally scaled to the box size (relative to a box of edge
    ``cfg.level_reference_edge``, at least 8)."""
    if not cfg.scale_levels_to_box:
        return int(n_segments)
    ref = float(cfg.level_reference_edge) ** len(box_shape)
    return max(8, int(round(n_segments * float(np.prod(box_shape)) / ref)))
