"""LA-Net's registration (paper 003): the ``lanet`` classifier and ``flipseg train lanet``
(``flipseg classify --model`` runs it)."""

from __future__ import annotations

from flipseg.registry import MethodSpec, register_method

register_method(MethodSpec(
    name="lanet", kind="classifier", dims=(2,),
    help="LA-Net: benign/malignant classification with a lesion map",
    factory="flipseg.methods.lanet.predict:LANetModel.load",
    model="required", model_formats=("flipseg-lanet-1",),
    model_files=("lanet_model.safetensors",),
    recipe="lanet",
    recipe_help="LA-Net: joint benign/malignant classification and lesion localization",
    add_train_args="flipseg.methods.lanet.cli:add_lanet_args",
    train="flipseg.methods.lanet.cli:train_lanet_cli", distributed=True,
    source=__name__,
))
