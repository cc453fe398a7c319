"""Segmentation U-Nets: MONAI's residual U-Net (compact by default), or a U-Net on
flipseg's ResNet-style encoder, which can start from the pretrained backbone
(:mod:`flipseg.networks.backbone`)."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ResUNet", "build_unet"]


class ResUNet(torch.nn.Module):
    """A 2D U-Net on :class:`flipseg.networks.hybrid.ResNetEncoder` (layout ``encoder``:
    compact, resnet18, resnet34, resnet50) with its :class:`~flipseg.networks.hybrid.UNetDecoder`;
    logits at the input size (a multiple of 32)."""

    def __init__(self, encoder: str = "compact", in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        from flipseg.networks.hybrid import ENCODERS, ResNetEncoder, UNetDecoder

        self.layout = encoder
        self.encoder = ResNetEncoder(ENCODERS.get(encoder), in_channels)
        self.decoder = UNetDecoder(self.encoder.out_channels, out_channels)
        for m in self.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return self.decoder(feats[-1], feats[:-1])


def build_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 1,
    encoder: str | None = None,
) -> torch.nn.Module:
    """A MONAI ``UNet`` with stride-2 steps between ``channels`` (16-128: ~0.2 M
    parameters, fast on a CPU; (32, 64, 128, 256, 512) is the usual full size); with
    ``encoder`` (2D only) a :class:`ResUNet` of that encoder layout instead."""
    if encoder not in (None, "", "none", "monai"):
        from flipseg.errors import FlipsegError

        if spatial_dims != 2:
            raise FlipsegError(f"the {encoder} ResNet U-Net is 2D only")
        return ResUNet(str(encoder), in_channels, out_channels)
    from monai.networks.nets import UNet

    chans = tuple(int(c) for c in channels)
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=chans,
        strides=(2,) * (len(chans) - 1),
        num_res_units=num_res_units,
    )
