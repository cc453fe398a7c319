"""``flip-vote``: a composite of three registered box -> mask methods.

The voters are Flip's mask (``flip``), GrabCut started from it (the
:func:`flipseg.baselines.grabcut.grabcut` baseline with the Flip mask as its
initialisation) and the box-supervised U-Net (``boxinst``; the shipped one unless
``vote_model`` names a run). A pixel is in the mask when at least two voters mark it.
Ours, not in the papers; chosen on BUS-BRA training-fold boxes (``docs/flip.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from flipseg.baselines.grabcut import grabcut
from flipseg.boxes import Box
from flipseg.methods import get_segmenter
from flipseg.segmenters import Segmenter, case_seed

__all__ = ["VoteSegmenter", "majority_vote"]


def majority_vote(*mask_lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per case, the pixels set in more than half of the given masks."""
    need = len(mask_lists) // 2 + 1
    return [np.sum([np.asarray(m, bool) for m in ms], axis=0) >= need for ms in zip(*mask_lists)]


class VoteSegmenter(Segmenter):
    """``--method flip-vote`` (2D).

    Parameters
    ----------
    model
        Flip model (run folder or file; default: the shipped 2D one).
    vote_model
        The U-Net voter: a ``flipseg train boxinst`` run (default: the shipped one).
    batch_size, segments, prior_fusion
        Passed to the Flip voter (``batch_size`` to the U-Net too).
    refine_core
        GrabCut voter: certain-foreground core of the Flip mask.
    """

    name = "flip-vote"
    dims = (2,)

    def __init__(self, model: str | Path | None = None, vote_model: str | Path | None = None,
                 batch_size: int = 64, segments: int | None = None,
                 prior_fusion: float | None = None, refine_core: float = 0.3,
                 dims: int = 2, threads: int = 0) -> None:
        self.voter = get_segmenter("boxinst", model=vote_model, batch_size=batch_size)
        self.flip = get_segmenter("flip", model=model, batch_size=batch_size, dims=dims,
                                  segments=segments, prior_fusion=prior_fusion, threads=threads)
        self.refine_core = float(refine_core)

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images: Sequence[np.ndarray], boxes: Sequence[Box], *,
                     seed: int = 0) -> list[np.ndarray]:
        return self.vote_parts(images, boxes, seed=seed)["flip-vote"]

    def vote_parts(self, images: Sequence[np.ndarray], boxes: Sequence[Box], *,
                   seed: int = 0) -> dict[str, list[np.ndarray]]:
        """The three voters and their vote, per case: keys ``flip``, ``flip-grabcut``,
        ``boxinst`` and ``flip-vote`` (``flipseg segment`` draws them)."""
        parts = {"flip": self.flip.segment_many(images, boxes, seed=seed)}
        parts["flip-grabcut"] = [
            grabcut(im, b, rng=np.random.default_rng(case_seed(seed, b)), init=m,
                    init_core=self.refine_core)
            for im, b, m in zip(images, boxes, parts["flip"])]
        parts["boxinst"] = self.voter.segment_many(images, boxes, seed=seed)
        parts["flip-vote"] = majority_vote(*parts.values())
        return parts
