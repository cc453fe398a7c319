"""Box-supervised U-Net with BoxInst's projection and pairwise losses (``boxinst``)."""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that registering the method does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "BoxInstConfig": "flipseg.methods.boxinst.model",
    "BoxInstModel": "flipseg.methods.boxinst.model",
    "BoxInstSegmenter": "flipseg.methods.boxinst.model",
    "mask_loss": "flipseg.methods.boxinst.losses",
    "pairwise_affinity": "flipseg.methods.boxinst.losses",
    "pairwise_loss": "flipseg.methods.boxinst.losses",
    "projection_loss": "flipseg.methods.boxinst.losses",
    "train_boxinst": "flipseg.methods.boxinst.model",
})
