"""A compact CNN that regresses the four edge corrections of a rough 2D box.

Input ``[B, 1, S, S]`` (the box with a margin, resized to ``S``), output
``[B, 4]``: the corrections of the top, left, bottom and right edges. The features
are flattened, not pooled, because where the lesion edge lies in the crop is the
answer.

>>> net = BoxRegressor(input_size=64)
>>> net(torch.zeros(2, 1, 64, 64)).shape
torch.Size([2, 4])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["BoxRegressor", "EncoderBoxRegressor"]


class BoxRegressor(nn.Module):
    """Blocks of two 3x3 conv-BN-ReLU layers and a 2x2 max pool, then two linear layers.

    Parameters
    ----------
    input_size : side of the square input; a multiple of ``2 ** len(channels)``
    channels : widths of the blocks (about 0.5 M weights with the default at 96 px)
    hidden : width of the hidden linear layer
    dropout : before the hidden layer, in training
    """

    def __init__(self, input_size: int = 96, channels: Sequence[int] = (16, 32, 64, 96),
                 hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            width = c
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(width * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EncoderBoxRegressor(nn.Module):
    """The same head on flipseg's ResNet-style encoder (layout ``encoder``), so that the
    pretrained backbone (:mod:`flipseg.networks.backbone`) can start it: the deepest
    feature grid (``input_size / 32`` squared) is flattened, not pooled.

    >>> net = EncoderBoxRegressor(input_size=64)
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 4])
    """

    def __init__(self, input_size: int = 96, encoder: str = "compact", hidden: int = 128,
                 dropout: float = 0.2) -> None:
        super().__init__()
        from flipseg.networks.hybrid import ENCODERS, ResNetEncoder

        self.encoder = ResNetEncoder(ENCODERS.get(encoder))
        side = input_size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(self.encoder.out_channels[-1] * side * side, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])
