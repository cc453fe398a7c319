"""The pretrained backbone's registration: ``flipseg train backbone`` (no segmenter)."""

from __future__ import annotations

from flipseg.registry import MethodSpec, register_method

register_method(MethodSpec(
    name="backbone", kind="backbone", dims=(2,),
    help="flipseg's own pretrained encoder (train only; other recipes load it)",
    recipe="backbone",
    recipe_help="pretrain the shared ResNet-style encoder on BUS-BRA folds 1-4 "
                "(boxes + benign/malignant labels; refuses evaluation images)",
    add_train_args="flipseg.methods.backbone.cli:add_backbone_args",
    train="flipseg.methods.backbone.cli:train_backbone_cli",
    source=__name__,
))
