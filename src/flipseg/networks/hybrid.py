"""Dual-decoder network for hybrid (masks + boxes) supervision (Xiong et al., paper 004).

::

    image [B, 1, S, S]
      -> ResNet encoder: stem f_0 (S/2), stages f_1 .. f_4 (S/4 .. S/32)      (ResNetEncoder)
      -> feature disentanglement of f = f_4 (channel split, one 1x1 conv per half
         back to C channels): f_r (lesion-related), f_o (others)           (Disentangle)
      -> background decoder Dec_a(f_o, skips) -> aux logits [B, 1, S, S]
         (positive = definite background, supervised by reversed boxes)
      -> spatial prompting: f_r * (1 - sigmoid(aux logits)), area-pooled to f_r's size
      -> segmentation decoder Dec_s(f_r, skips) -> seg logits [B, 1, S, S]

Both decoders are U-Net decoders sharing the encoder's skip features. Every
module is a switch that changes the graph: ``disentangle=False`` feeds ``f``
itself to both decoders (no split, no 1x1 convs); ``spatial_prompt=False``
gives Dec_s the lesion features unprompted, so the seg logits no longer depend
on Dec_a; ``dual=False`` drops Dec_a (and with it disentanglement and
prompting): a plain encoder-decoder for the single-branch baselines.

>>> net = HybridNet("compact")
>>> out = net(torch.zeros(2, 1, 64, 64))
>>> out.seg_logits.shape, out.aux_logits.shape
(torch.Size([2, 1, 64, 64]), torch.Size([2, 1, 64, 64]))

Randomly initialised (Kaiming for convolutions); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flipseg.registry import Registry

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "Bottleneck",
    "Disentangle",
    "EncoderSpec",
    "HybridNet",
    "HybridOutput",
    "ResNetEncoder",
    "UNetDecoder",
]


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of a ResNet encoder built from basic or bottleneck blocks."""

    stem: int
    """Channels of the 7x7 stride-2 stem."""
    widths: tuple[int, int, int, int]
    """Inner channels of stages 1-4 (a bottleneck stage puts out 4x as many)."""
    depths: tuple[int, int, int, int]
    """Blocks per stage."""
    block: str = "basic"
    """``basic`` (two 3x3 convolutions, ResNet18/34) or ``bottleneck`` (1x1, 3x3, 1x1 with
    4x expansion, ResNet50)."""

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


#: name -> :class:`EncoderSpec` (unknown names fail with the list of valid ones)
ENCODERS: Registry[EncoderSpec] = Registry("hybrid encoder")
ENCODERS.register("compact")(EncoderSpec(16, (16, 32, 64, 128), (1, 1, 1, 1)))
ENCODERS.register("resnet18")(EncoderSpec(64, (64, 128, 256, 512), (2, 2, 2, 2)))
ENCODERS.register("resnet34")(EncoderSpec(64, (64, 128, 256, 512), (3, 4, 6, 3)))
ENCODERS.register("resnet50")(EncoderSpec(64, (64, 128, 256, 512), (3, 4, 6, 3), "bottleneck"))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """A residual block's shortcut: identity, or a strided 1x1 conv-BN where the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 down to ``width``, 3x3 (strided), 1x1 up to 4 x
    ``width``; identity (or 1x1 projection) shortcut. Names as in MONAI's and
    torchvision's ResNet50, the stride on the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x), inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet-style encoder (ResNet-34 layout with ``"resnet34"``, ResNet-50 with
    ``"resnet50"``); returns ``[f_0 (S/2), f_1 (S/4), f_2 (S/8), f_3 (S/16), f_4 (S/32)]``."""

    def __init__(self, spec: EncoderSpec, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, spec.stem, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(spec.stem), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        block = Bottleneck if spec.block == "bottleneck" else BasicBlock
        stages, cin = [], spec.stem
        for i, (width, depth) in enumerate(zip(spec.widths, spec.depths)):
            blocks = [block(cin, width, stride=1 if i == 0 else 2)]
            cin = width * spec.expansion
            blocks += [block(cin, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = (spec.stem, *(w * spec.expansion for w in spec.widths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.stem(x)
        feats, y = [f0], self.pool(f0)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats


class UNetDecoder(nn.Module):
    """U-Net decoder: from the deepest features up through the skips (x2 bilinear,
    concatenate, two 3x3 conv-BN-ReLU), a last x2 step to the input size, 1x1 head."""

    def __init__(self, encoder_channels: Sequence[int], out_channels: int = 1) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]  # f_3, f_2, f_1, f_0
        blocks, cin = [], encoder_channels[-1]
        for c in skips:
            blocks.append(nn.Sequential(_conv_bn_relu(cin + c, c), _conv_bn_relu(c, c)))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.final = _conv_bn_relu(cin, cin)
        self.head = nn.Conv2d(cin, out_channels, 1)

    def forward(self, deepest: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        y = deepest
        for block, skip in zip(self.blocks, list(skips)[::-1]):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.final(y))


class Disentangle(nn.Module):
    """Split ``f`` [B, C, h, w] along channels; each half -> its own 1x1 conv back to C
    channels: ``(f_r, f_o)``, lesion-related and other features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        self.to_lesion = nn.Conv2d(self.split, channels, 1)
        self.to_other = nn.Conv2d(channels - self.split, channels, 1)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_lesion(f[:, : self.split]), self.to_other(f[:, self.split :])


class HybridOutput(NamedTuple):
    seg_logits: torch.Tensor
    """[B, 1, S, S] lesion logits (segmentation decoder)."""
    aux_logits: torch.Tensor | None
    """[B, 1, S, S] definite-background logits (background decoder); None without it."""


class HybridNet(nn.Module):
    """Shared encoder + segmentation decoder (+ background decoder with disentanglement
    and spatial prompting when ``dual``); see the module docstring."""

    def __init__(
        self,
        encoder: str = "compact",
        in_channels: int = 1,
        *,
        dual: bool = True,
        disentangle: bool = True,
        spatial_prompt: bool = True,
        prompt_detach: bool = False,
    ) -> None:
        super().__init__()
        spec = ENCODERS.get(encoder)
        self.encoder = ResNetEncoder(spec, in_channels)
        chans = self.encoder.out_channels
        self.dual = dual
        self.spatial_prompt = dual and spatial_prompt
        self.prompt_detach = prompt_detach
        self.disentangle: Disentangle | None = Disentangle(chans[-1]) if dual and disentangle else None
        self.seg_decoder = UNetDecoder(chans)
        self.aux_decoder: UNetDecoder | None = UNetDecoder(chans) if dual else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> HybridOutput:
        feats = self.encoder(x)
        f, skips = feats[-1], feats[:-1]
        if self.aux_decoder is None:
            return HybridOutput(self.seg_decoder(f, skips), None)
        f_r, f_o = self.disentangle(f) if self.disentangle is not None else (f, f)
        aux = self.aux_decoder(f_o, skips)  # [B, 1, S, S]
        if self.spatial_prompt:
            uncertain = 1.0 - torch.sigmoid(aux)  # high where Dec_a does not call it background
            if self.prompt_detach:
                uncertain = uncertain.detach()
            f_r = f_r * F.adaptive_avg_pool2d(uncertain, f_r.shape[-2:])
        return HybridOutput(self.seg_decoder(f_r, skips), aux)
