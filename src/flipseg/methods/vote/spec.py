"""``flip-vote``'s registration: the default method for 2D boxes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from flipseg.registry import MethodSpec, register_method

__all__ = ["VoteOptions"]


@dataclass
class VoteOptions:
    """Inference-time options of ``flip-vote`` (``--set`` on ``segment`` / ``evaluate``)."""

    batch_size: int = 64
    """Boxes segmented together by the Flip and U-Net voters."""
    segments: Optional[int] = None
    """Flip's superpixels per box (None: the Flip model's own level)."""
    prior_fusion: Optional[float] = None
    """Flip's ellipse-prior weight, in [0, 1) (None: the Flip model's)."""
    threads: int = 0
    """PyTorch threads at inference (0: torch's default, every core)."""
    refine_core: float = 0.3
    """GrabCut voter: the Flip mask's core deeper than this fraction of its largest inscribed
    radius is certain foreground."""


register_method(MethodSpec(
    name="flip-vote", kind="box", dims=(2,),
    help="the pixels on which two of flip, flip-grabcut and the boxinst U-Net agree (default, 2D)",
    factory="flipseg.methods.vote.segmenter:VoteSegmenter",
    config="flipseg.methods.vote.spec:VoteOptions",
    model="optional",
    options=(("--vote-model", "vote_model",
              "flip-vote's third voter: a `flipseg train boxinst` run, e.g. trained on your own "
              "boxes (default: the shipped BoxInst U-Net)"),),
    default_for=(2,), source=__name__,
))
