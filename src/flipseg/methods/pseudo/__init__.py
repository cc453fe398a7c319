"""Pseudo masks from boxes feeding a fully supervised U-Net (paper 000, section 4.4, Table 4).

A budget of real masks (``N``, ``P%`` or ``all``, chosen by patient), pseudo masks
from the boxes of every other training image by a registered box -> mask segmenter
(Flip, ellipse, GrabCut, box), a MONAI U-Net on whole images with BCE + Dice, and
pseudo labels refreshed from the model's own predictions inside the boxes every
``refresh_every`` epochs (:mod:`flipseg.methods.pseudo.train`). The trained model
segments whole images without a box (:class:`PseudoUNetModel`; segmenter
``pseudo-unet`` in :mod:`flipseg.methods.pseudo.model`).
"""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that `flipseg --help` does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "PseudoConfig": "flipseg.methods.pseudo.config",
    "PseudoData": "flipseg.methods.pseudo.train",
    "PseudoUNetModel": "flipseg.methods.pseudo.model",
    "PseudoUNetSegmenter": "flipseg.methods.pseudo.model",
    "add_pseudo_args": "flipseg.methods.pseudo.cli",
    "bce_dice_loss": "flipseg.methods.pseudo.train",
    "budget_count": "flipseg.methods.pseudo.config",
    "choose_real_masks": "flipseg.methods.pseudo.train",
    "make_pseudo_masks": "flipseg.methods.pseudo.train",
    "parse_budget": "flipseg.methods.pseudo.config",
    "prepare_data": "flipseg.methods.pseudo.train",
    "refresh_pseudo_labels": "flipseg.methods.pseudo.train",
    "train_pseudo": "flipseg.methods.pseudo.train",
    "train_pseudo_cli": "flipseg.methods.pseudo.cli",
})
