"""LA-Net: joint benign/malignant classification and lesion localization (paper 003).

A ResNet feature extractor, a lesion-aware localization head with CBAM
attention on every stage, and a mask-attention classifier
(:mod:`flipseg.networks.lanet`), trained in two stages from class labels and a
fraction of location labels (:func:`train_lanet`).
"""

from importlib import import_module
from typing import Any

# Names are imported on first use so that `flipseg --help` does not load PyTorch.
_WHERE = {
    "CLASS_NAMES": "flipseg.methods.lanet.predict",
    "LANetConfig": "flipseg.methods.lanet.config",
    "LANetModel": "flipseg.methods.lanet.predict",
    "LANetPrediction": "flipseg.methods.lanet.predict",
    "add_lanet_parser": "flipseg.methods.lanet.cli",
    "choose_location_labelled": "flipseg.methods.lanet.train",
    "hybrid_loss": "flipseg.methods.lanet.train",
    "localization_loss": "flipseg.methods.lanet.train",
    "pseudo_label_gate": "flipseg.methods.lanet.train",
    "pseudo_location_labels": "flipseg.methods.lanet.train",
    "split_train_val": "flipseg.methods.lanet.train",
    "train_lanet": "flipseg.methods.lanet.train",
    "train_lanet_cli": "flipseg.methods.lanet.cli",
}


__all__ = [
    "CLASS_NAMES",
    "LANetConfig",
    "LANetModel",
    "LANetPrediction",
    "add_lanet_parser",
    "choose_location_labelled",
    "hybrid_loss",
    "localization_loss",
    "pseudo_label_gate",
    "pseudo_location_labels",
    "split_train_val",
    "train_lanet",
    "train_lanet_cli",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
