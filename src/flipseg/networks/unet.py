"""Segmentation U-Net (MONAI's residual U-Net), compact by default."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["build_unet"]


def build_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 1,
) -> torch.nn.Module:
    """A MONAI ``UNet`` with stride-2 steps between ``channels`` (16-128: ~0.2 M
    parameters, fast on a CPU; (32, 64, 128, 256, 512) is the usual full size)."""
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
