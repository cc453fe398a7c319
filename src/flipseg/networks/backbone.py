"""flipseg's own pretrained encoder: load it into a network's ResNet-style encoder.

``flipseg train backbone`` pretrains a :class:`flipseg.networks.hybrid.ResNetEncoder` on
breast ultrasound (BUS-BRA folds 1-4: their boxes and benign/malignant labels, no mask and
no image of an evaluation set) and writes it as a ``flipseg-backbone-1`` bundle (safetensors
+ JSON). The compact one is shipped (``models/backbone_compact.safetensors``, see
``models/README.md``). A recipe whose network has such an encoder takes ``backbone_weights``:

- ``none``: random initialisation (as before the backbone);
- ``shipped``: the shipped weights of the encoder's layout (an error when none is shipped);
- a path: a ``backbone.safetensors`` file or a ``flipseg train backbone`` run folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torch import nn

from flipseg.errors import FlipsegError

__all__ = ["BACKBONE_FORMAT", "BACKBONE_FILE", "load_backbone", "shipped_backbone"]

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

    ``weights``: None or ``"none"`` (leave it as it is), ``"shipped"``, or a path. Returns
    the file read (None for none). Raises FlipsegError for a missing or foreign file, or a
    backbone of another layout."""
    if weights is None or str(weights).lower() == "none":
        return None
    from flipseg.bundles import read_bundle

    path = shipped_backbone(layout) if str(weights).lower() == "shipped" else Path(weights)
    bundle = read_bundle(path, BACKBONE_FILE, BACKBONE_FORMAT, "pretrained backbone")
    if bundle.get("encoder") != layout:
        raise FlipsegError(f"{path} is a {bundle.get('encoder')!r} backbone; this network's "
                           f"encoder is {layout!r} (set encoder={bundle.get('encoder')} or give "
                           "another backbone)")
    encoder.load_state_dict(bundle["state_dict"])
    return path
