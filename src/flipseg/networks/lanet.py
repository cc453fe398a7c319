"""LA-Net: a ResNet feature extractor, a lesion-aware localization head and a
mask-attention classifier (Fan et al., Med. Image Anal. 2023, paper 003).

::

    image [B, 1, S, S]
      -> backbone stages f_1 .. f_4                       (LANetBackbone, MONAI ResNet)
      -> per stage: CBAM (channel then spatial attention) -> 1x1 conv to 1 channel
      -> resize to the map stage, concatenate [B, 4, h, w] -> conv -> BN -> lesion logits
         lesion map = sigmoid(lesion logits)               (LesionAwareNet)
      -> f_att = f_4 + f_4 * lesion map  (mask attention) -> average pool -> FC -> class logits
                                                            (MaskAttentionClassifier)

Every attention piece is a switch that really changes the module graph:
``channel_attention=False`` / ``spatial_attention=False`` leave the CBAM part out
(an ``nn.Identity`` takes its place), ``mask_attention=False`` makes the
classifier read ``f_4`` alone, so the class logits no longer depend on the
localization head at all.

>>> net = LANet("compact")
>>> out = net(torch.zeros(2, 1, 64, 64))
>>> out.logits.shape, out.lesion_map.shape
(torch.Size([2, 2]), torch.Size([2, 1, 4, 4]))

Weights are randomly initialised (MONAI's ResNet init for the backbone, Xavier
for the heads, as in the paper); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flipseg.errors import FlipsegError
from flipseg.registry import Registry

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "CBAM",
    "ChannelAttention",
    "LANet",
    "LANetBackbone",
    "LANetOutput",
    "LesionAwareNet",
    "MaskAttention",
    "MaskAttentionClassifier",
    "SpatialAttention",
    "resize_map",
]


@dataclass(frozen=True)
class BackboneSpec:
    """Shape of a MONAI ResNet used as the LA-Net feature extractor."""

    block: str
    """``basic`` (ResNet18/34) or ``bottleneck`` (ResNet50+, 4x wider outputs)."""
    layers: tuple[int, int, int, int]
    """Residual blocks per stage."""
    widths: tuple[int, int, int, int]
    """Block widths per stage (a bottleneck stage outputs 4x this)."""
    stem_max_pool: bool
    """Max-pool after the stride-2 stem: total stride 32 with it, 16 without."""

    @property
    def stride(self) -> int:
        """Input pixels per pixel of the last stage."""
        return 32 if self.stem_max_pool else 16

    @property
    def out_channels(self) -> tuple[int, ...]:
        expansion = 4 if self.block == "bottleneck" else 1
        return tuple(w * expansion for w in self.widths)


#: name -> :class:`BackboneSpec`.
BACKBONES: Registry[BackboneSpec] = Registry("lanet backbone")
# compact: one basic block per stage, 16-128 channels, no stem max-pool, so a 128 px
# input gives an 8 x 8 last stage (the paper's 256 px ResNet gives 8 x 8 as well).
BACKBONES.register("compact")(BackboneSpec("basic", (1, 1, 1, 1), (16, 32, 64, 128), False))
BACKBONES.register("resnet18")(BackboneSpec("basic", (2, 2, 2, 2), (64, 128, 256, 512), True))
BACKBONES.register("resnet50")(BackboneSpec("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), True))


class LANetOutput(NamedTuple):
    """What :class:`LANet` returns."""

    logits: torch.Tensor
    """Class logits [B, num_classes]."""
    lesion_logits: torch.Tensor
    """Lesion map before the sigmoid [B, 1, h, w] (``h, w`` of the map stage)."""
    lesion_map: torch.Tensor
    """Per-pixel lesion probability ``sigmoid(lesion_logits)`` [B, 1, h, w]."""


def resize_map(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize [B, C, H, W] to ``size``: area averaging when shrinking, bilinear when growing."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------ backbone
class LANetBackbone(nn.Module):
    """The four stages of a randomly initialised MONAI ResNet (2D).

    ``forward(x [B, C, S, S])`` returns ``[f_1, f_2, f_3, f_4]`` with
    ``f_i [B, out_channels[i], S / (stride / 2**(4-i)), ...]``; ``f_4`` is at
    ``S / spec.stride``.
    """

    def __init__(self, name: str = "compact", in_channels: int = 1) -> None:
        super().__init__()
        from monai.networks.nets import ResNet

        self.spec = BACKBONES.get(name)
        self.resnet = ResNet(
            block=self.spec.block,
            layers=list(self.spec.layers),
            block_inplanes=list(self.spec.widths),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=not self.spec.stem_max_pool,
            feed_forward=False,
        )
        self.out_channels = self.spec.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.resnet
        x = r.act(r.bn1(r.conv1(x)))
        if not r.no_max_pool:
            x = r.maxpool(x)
        feats = []
        for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
            x = layer(x)
            feats.append(x)
        return feats


# ---------------------------------------------------------------------- CBAM
class ChannelAttention(nn.Module):
    """CBAM channel attention: ``x * sigmoid(MLP(avgpool x) + MLP(maxpool x))``.

    The shared MLP has ``max(2, channels // reduction)`` hidden units.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(2, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))  # [B,C,1,1]
        return x * torch.sigmoid(weights)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``x * sigmoid(BN(conv_k([mean_c x, max_c x])))``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # [B,2,H,W]
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al. 2018); either can be left out."""

    def __init__(
        self,
        channels: int,
        *,
        channel_attention: bool = True,
        spatial_attention: bool = True,
        reduction: int = 16,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction) if channel_attention else nn.Identity()
        self.spatial_attention = SpatialAttention(kernel_size) if spatial_attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


# ------------------------------------------------------------------ heads
class LesionAwareNet(nn.Module):
    """The LA-Net localization head.

    Each stage goes through its own CBAM and a 1x1 convolution to one channel;
    the one-channel maps are resized to the ``map_stage`` resolution (1-based,
    4 = the last stage as in the paper), concatenated and fused by a
    ``fusion_kernel`` convolution and batch normalisation. ``forward`` returns
    the lesion logits [B, 1, h, w]; the lesion map is their sigmoid.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        channel_attention: bool = True,
        spatial_attention: bool = True,
        reduction: int = 16,
        kernel_size: int = 7,
        map_stage: int = 4,
        fusion_kernel: int = 3,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        if not 1 <= map_stage <= n:
            raise FlipsegError(f"map_stage {map_stage} must be between 1 and {n}")
        self.map_stage = map_stage
        self.cbams = nn.ModuleList(
            CBAM(c, channel_attention=channel_attention, spatial_attention=spatial_attention,
                 reduction=reduction, kernel_size=kernel_size)
            for c in in_channels
        )
        self.compress = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in in_channels)
        self.fuse = nn.Conv2d(n, 1, fusion_kernel, padding=fusion_kernel // 2)
        self.bn = nn.BatchNorm2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[self.map_stage - 1].shape[-2:]
        maps = [resize_map(conv(cbam(f)), size) for f, cbam, conv in zip(feats, self.cbams, self.compress)]
        return self.bn(self.fuse(torch.cat(maps, dim=1)))  # [B, 1, h, w]


class MaskAttention(nn.Module):
    """Parameter-free mask attention: ``f + f * mask`` (mask resized to ``f``)."""

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return f + f * resize_map(mask, f.shape[-2:])


class MaskAttentionClassifier(nn.Module):
    """Mask attention (optional), global average pooling and a linear layer."""

    def __init__(
        self, in_channels: int, num_classes: int = 2, *, mask_attention: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.mask_attention = MaskAttention() if mask_attention else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, f: torch.Tensor, lesion_map: torch.Tensor | None = None) -> torch.Tensor:
        """f [B, C, h, w], lesion_map [B, 1, h', w'] -> logits [B, num_classes]."""
        if self.mask_attention is not None:
            if lesion_map is None:
                raise ValueError("mask attention needs the lesion map")
            f = self.mask_attention(f, lesion_map)
        return self.fc(self.dropout(F.adaptive_avg_pool2d(f, 1).flatten(1)))


class LANet(nn.Module):
    """Feature extractor + LA-Net + attention-based classifier.

    Parameters
    ----------
    backbone : name in :data:`BACKBONES` (``compact``, ``resnet18``, ``resnet50``)
    in_channels, num_classes : input channels and class logits
    channel_attention, spatial_attention : CBAM parts in the LA-Net
    mask_attention : classifier reads ``f + f * lesion_map`` (else ``f`` alone)
    reduction, kernel_size : CBAM channel reduction and spatial kernel
    map_stage : stage (1-4) whose resolution the lesion map has (4 = paper)
    dropout : before the classifier's linear layer

    Attributes
    ----------
    cam_layer : dotted path of the last backbone stage, for Grad-CAM.
    """

    def __init__(
        self,
        backbone: str = "compact",
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        channel_attention: bool = True,
        spatial_attention: bool = True,
        mask_attention: bool = True,
        reduction: int = 16,
        kernel_size: int = 7,
        map_stage: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = LANetBackbone(backbone, in_channels)
        chans = self.backbone.out_channels
        self.lanet = LesionAwareNet(
            chans, channel_attention=channel_attention, spatial_attention=spatial_attention,
            reduction=reduction, kernel_size=kernel_size, map_stage=map_stage,
        )
        self.classifier = MaskAttentionClassifier(
            chans[-1], num_classes, mask_attention=mask_attention, dropout=dropout
        )
        self.cam_layer = "backbone.resnet.layer4"

    def localize(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion logits [B, 1, h, w] only (stage-1 training: FEX + LA-Net)."""
        return self.lanet(self.backbone(x))

    def forward(self, x: torch.Tensor) -> LANetOutput:
        """x [B, C, S, S] -> :class:`LANetOutput`."""
        feats = self.backbone(x)
        lesion_logits = self.lanet(feats)
        lesion_map = torch.sigmoid(lesion_logits)
        logits = self.classifier(feats[-1], lesion_map)
        return LANetOutput(logits, lesion_logits, lesion_map)
