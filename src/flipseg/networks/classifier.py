"""Nodule-vs-normal classifiers (2D and 3D), built by name.

Every network maps ``[B, in_channels, *S]`` to logits ``[B, num_classes]`` and
has a ``cam_layer`` attribute: the dotted module path of its last convolutional
feature layer, for class-activation-map methods (e.g. ``monai.visualize``).

>>> net = build_classifier("compact", spatial_dims=2)
>>> net(torch.zeros(4, 1, 64, 64)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from flipseg.errors import FlipsegError
from flipseg.registry import Registry

__all__ = ["CLASSIFIERS", "CompactClassifier", "EncoderClassifier", "build_classifier"]

#: name -> factory ``(spatial_dims, in_channels, num_classes) -> nn.Module``.
CLASSIFIERS: Registry[Callable[..., nn.Module]] = Registry("network")


class CompactClassifier(nn.Module):
    """Four stride-2 conv-BN-ReLU blocks, global average pool, linear layer.

    About 98k weights with the default widths (16, 32, 64, 128) in 2D
    (~0.4 MB), three times that in 3D. The same code serves both through
    ``spatial_dims``.

    Parameters
    ----------
    spatial_dims : 2 or 3
    in_channels : input channels
    num_classes : output logits
    widths : channels of the four blocks
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: tuple[int, ...] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        cin = in_channels
        for i, cout in enumerate(widths, start=1):
            blocks[f"block{i}"] = nn.Sequential(
                conv(cin, cout, 3, stride=2, padding=1, bias=False),
                norm(cout),
                nn.ReLU(inplace=True),
            )
            cin = cout
        self.features = nn.Sequential(blocks)
        self.pool = pool(1)
        self.fc = nn.Linear(cin, num_classes)
        self.cam_layer = f"features.block{len(widths)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *S] -> logits [B, num_classes]."""
        return self.fc(self.pool(self.features(x)).flatten(1))


@CLASSIFIERS.register("compact")
def _compact(spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    return CompactClassifier(spatial_dims, in_channels, num_classes)


@CLASSIFIERS.register("resnet18")
def _resnet18(spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    """MONAI ResNet18 (the paper's backbone), randomly initialised, no downloads."""
    from monai.networks.nets import resnet18

    net = resnet18(
        pretrained=False,
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
    )
    net.cam_layer = "layer4"
    return net


class EncoderClassifier(nn.Module):
    """flipseg's ResNet-style encoder (layout ``layout``, 2D), global average pool, linear
    layer: the classifier that the pretrained backbone (:mod:`flipseg.networks.backbone`)
    can start."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, layout: str = "compact") -> None:
        super().__init__()
        from flipseg.networks.hybrid import ENCODERS, ResNetEncoder

        self.layout = layout
        self.encoder = ResNetEncoder(ENCODERS.get(layout), in_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.encoder.out_channels[-1], num_classes)
        self.cam_layer = f"encoder.stages.{len(self.encoder.stages) - 1}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.fc(self.pool(self.encoder(x)[-1]).flatten(1))


@CLASSIFIERS.register("encoder")
def _encoder(spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    """flipseg's compact ResNet-style encoder (2D), the pretrained backbone's layout."""
    if spatial_dims != 2:
        raise FlipsegError("the encoder classifier is 2D only (use compact or resnet18 in 3D)")
    return EncoderClassifier(in_channels, num_classes)


def build_classifier(
    name: str = "compact", *, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2
) -> nn.Module:
    """Build a registered classifier.

    Parameters
    ----------
    name : registered network name (``compact``, ``resnet18``, ``encoder``)
    spatial_dims : 2 (images [B, C, H, W]) or 3 (volumes [B, C, D, H, W])
    in_channels, num_classes : input channels and output logits

    Raises
    ------
    FlipsegError
        Unknown name (the message lists the valid ones) or spatial_dims not 2/3.
    """
    factory = CLASSIFIERS.get(name)
    if spatial_dims not in (2, 3):
        raise FlipsegError(f"classifier spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return factory(spatial_dims, in_channels, num_classes)
