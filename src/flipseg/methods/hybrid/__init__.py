"""Hybrid supervision: a few masks + many boxes, dual decoder (paper 004).

A shared ResNet encoder, a segmentation decoder trained on the strong (mask)
subset, a background decoder trained on the weak subset's reversed boxes,
feature disentanglement and a spatial prompting module
(:mod:`flipseg.networks.hybrid`), the pixel-position-aware and uncertain-area
perception losses (:mod:`flipseg.methods.hybrid.losses`) and the
Strong-Only / Weak-Only / Vanilla-Hybrid baselines (:func:`train_hybrid`).
The trained network segments whole images (:class:`HybridModel`); the
``hybrid`` segmenter ignores boxes.
"""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that `flipseg --help` does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "HybridConfig": "flipseg.methods.hybrid.config",
    "HybridData": "flipseg.methods.hybrid.train",
    "HybridModel": "flipseg.methods.hybrid.predict",
    "HybridSegmenter": "flipseg.methods.hybrid.predict",
    "MODES": "flipseg.methods.hybrid.config",
    "add_hybrid_args": "flipseg.methods.hybrid.cli",
    "box_target": "flipseg.methods.hybrid.train",
    "choose_strong": "flipseg.methods.hybrid.train",
    "evaluate_model": "flipseg.methods.hybrid.train",
    "hybrid_loss": "flipseg.methods.hybrid.losses",
    "perception_loss": "flipseg.methods.hybrid.losses",
    "ppa_loss": "flipseg.methods.hybrid.losses",
    "prepare_data": "flipseg.methods.hybrid.train",
    "train_hybrid": "flipseg.methods.hybrid.train",
    "train_hybrid_cli": "flipseg.methods.hybrid.cli",
})
