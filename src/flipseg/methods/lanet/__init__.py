"""LA-Net: joint benign/malignant classification and lesion localization (paper 003).

A ResNet feature extractor, a lesion-aware localization head with CBAM
attention on every stage, and a mask-attention classifier
(:mod:`flipseg.networks.lanet`), trained in two stages from class labels and a
fraction of location labels (:func:`train_lanet`).
"""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that `flipseg --help` does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "CLASS_NAMES": "flipseg.methods.lanet.predict",
    "LANetConfig": "flipseg.methods.lanet.config",
    "LANetModel": "flipseg.methods.lanet.predict",
    "LANetPrediction": "flipseg.methods.lanet.predict",
    "add_lanet_args": "flipseg.methods.lanet.cli",
    "choose_location_labelled": "flipseg.methods.lanet.train",
    "hybrid_loss": "flipseg.methods.lanet.train",
    "localization_loss": "flipseg.methods.lanet.train",
    "pseudo_label_gate": "flipseg.methods.lanet.train",
    "pseudo_location_labels": "flipseg.methods.lanet.train",
    "split_train_val": "flipseg.methods.lanet.train",
    "train_lanet": "flipseg.methods.lanet.train",
    "train_lanet_cli": "flipseg.methods.lanet.cli",
})
