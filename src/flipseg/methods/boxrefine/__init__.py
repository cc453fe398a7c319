"""Box refinement (``flipseg train box-refiner``, ``--refine-box``): rough box -> tight box."""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that registering the method does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "BoxRefineConfig": "flipseg.methods.boxrefine.model",
    "BoxRefiner": "flipseg.methods.boxrefine.model",
    "RefinedBoxSegmenter": "flipseg.methods.boxrefine.model",
    "train_box_refiner": "flipseg.methods.boxrefine.model",
})
