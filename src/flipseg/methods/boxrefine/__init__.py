"""Box refinement (``flipseg train box-refiner``, ``--refine-box``): rough box -> tight box."""

from flipseg.methods.boxrefine.model import (
    BoxRefineConfig,
    BoxRefiner,
    RefinedBoxSegmenter,
    train_box_refiner,
)

__all__ = ["BoxRefineConfig", "BoxRefiner", "RefinedBoxSegmenter", "train_box_refiner"]
