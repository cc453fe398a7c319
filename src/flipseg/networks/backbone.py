"""flipseg's own pretrained encoder: load it into a network's ResNet-style encoder.

``flipseg train backbone`` pretrains a :class:`flipseg.networks.hybrid.ResNetEncoder` on
breast ultrasound (BUS-BRA folds 1-4: their boxes and benign/malignant labels, no mask and
no image of an evaluation set) and writes it as a ``flipseg-backbone-1`` bundle (safetensors
+ JSON). The compact one is shipped (``models/backbone_compact.safetensors``, see
``models/README.md``). A recipe whose network has such an encoder takes ``backbone_weights``:

- ``none``: random initialisation (as before the backbone);
- ``shipped``: the shipped weights of the encoder's layout (an error when none is shipped);
- ``auto``: ``shipped`` when weights of the encoder's layout are shipped, else ``none``;
- a path: a ``backbone.safetensors`` file or a ``flipseg train backbone`` run folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torch import nn

from flipseg.errors import FlipsegError

__all__ = ["BACKBONE_FORMAT", "BACKBONE_FILE", "load_backbone", "load_backbone_into_resnet",
           "shipped_backbone"]

BACKBONE_FORMAT = "flipseg-backbone-1"
BACKBONE_FILE = "backbone.safetensors"


def shipped_backbone(encoder: str) -> Path:
    """The shipped pretrained weights of encoder layout ``encoder``."""
    path = Path(str(resources.files("flipseg") / "models" / f"backbone_{encoder}.safetensors"))
    if not path.is_file():
        raise FlipsegError(f"no pretrained backbone is shipped for encoder {encoder!r} (only "
                           "compact); train one with `flipseg train backbone --set "
                           f"encoder={encoder}` and give its path, or use backbone_weights=none")
    return path


def load_backbone(encoder: nn.Module, weights: str | Path | None, layout: str) -> Path | None:
    """Load pretrained weights into ``encoder`` (a ResNetEncoder of layout ``layout``).

    ``weights``: None or ``"none"`` (leave it as it is), ``"shipped"``, ``"auto"`` (shipped
    when there are weights of ``layout``, else none), or a path. Returns
    the file read (None for none). Raises FlipsegError for a missing or foreign file, or a
    backbone of another layout."""
    weights = _auto(weights, layout)
    if weights is None:
        return None
    path, bundle = _read(weights, layout)
    encoder.load_state_dict(bundle["state_dict"])
    return path


def _auto(weights: str | Path | None, layout: str) -> str | Path | None:
    """None for ``none``; ``auto`` -> ``shipped`` or None (nothing shipped for ``layout``)."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() == "auto":
        try:
            shipped_backbone(layout)
        except FlipsegError:
            return None
        return "shipped"
    return weights


def _read(weights: str | Path, layout: str) -> tuple[Path, dict]:
    from flipseg.bundles import read_bundle

    path = shipped_backbone(layout) if str(weights).lower() == "shipped" else Path(weights)
    bundle = read_bundle(path, BACKBONE_FILE, BACKBONE_FORMAT, "pretrained backbone")
    if bundle.get("encoder") != layout:
        raise FlipsegError(f"{path} is a {bundle.get('encoder')!r} backbone; this network's "
                           f"encoder is {layout!r}")
    return path, bundle


def load_backbone_into_resnet(resnet: nn.Module, weights: str | Path | None,
                              layout: str) -> Path | None:
    """Load a backbone into a MONAI ``ResNet`` of the same blocks and widths (LA-Net's
    feature extractor): ``stem`` -> ``conv1``/``bn1``, ``stages.i.j`` -> ``layer{i+1}.j``,
    ``shortcut`` -> ``downsample`` (whose conv bias MONAI adds is set to 0); an ``fc`` head
    keeps its own initialisation. Weights as in
    :func:`load_backbone`; the max-pool after the stem is a layout choice of the network,
    not a weight, so a ResNet without it takes the same weights."""
    weights = _auto(weights, layout)
    if weights is None:
        return None
    import torch

    path, bundle = _read(weights, layout)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in bundle["state_dict"].items():
        parts = key.split(".")
        if parts[0] == "stem":
            name = {"0": "conv1", "1": "bn1"}[parts[1]] + "." + ".".join(parts[2:])
        else:  # stages.i.j.rest
            rest = ".".join(parts[3:]).replace("shortcut.", "downsample.")
            name = f"layer{int(parts[1]) + 1}.{parts[2]}.{rest}"
        mapped[name] = value
    own = resnet.state_dict()
    for key in own:
        if key.endswith("downsample.0.bias") and key not in mapped:
            mapped[key] = torch.zeros_like(own[key])
    head = {k for k in own if k.startswith("fc.")}  # a classifier head is not the encoder's
    missing = sorted(set(own) - set(mapped) - head)
    extra = sorted(set(mapped) - set(own))
    if missing or extra or any(own[k].shape != mapped[k].shape for k in mapped):
        raise FlipsegError(f"{path} does not fit this ResNet (layout {layout!r}): "
                           f"{len(missing)} weights missing, {len(extra)} extra")
    resnet.load_state_dict(mapped, strict=not head)
    return path
