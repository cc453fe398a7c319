"""Method recipes.

Importing this package is cheap (the CLI parser imports recipe sub-modules);
:func:`register_all` imports the modules whose segmenters register themselves
(``flip``, ``flip2d-slices``, ``boxinst``, ``sam``, ``hybrid``,
``pseudo-unet``, ``cam-mt``).
"""

from importlib import import_module

__all__ = ["register_all"]

_REGISTERING = (
    "flipseg.methods.boxinst.model",  # "boxinst"
    "flipseg.methods.cam_mt.engines",  # "sam"
    "flipseg.methods.cam_mt.mean_teacher",  # "cam-mt"
    "flipseg.methods.flip.infer",  # "flip"
    "flipseg.methods.flip.slices",  # "flip2d-slices"
    "flipseg.methods.hybrid.predict",  # "hybrid"
    "flipseg.methods.pseudo.model",  # "pseudo-unet"
)


def register_all() -> None:
    """Import every module that registers a segmenter (idempotent)."""
    for name in _REGISTERING:
        import_module(name)
