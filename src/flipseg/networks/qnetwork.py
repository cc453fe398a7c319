"""Multi-agent Q-network: a shared convolutional trunk and one head per agent.

Input states are per-agent crops ``[B, K, C, *S]`` (2D or 3D); the trunk is
applied to every agent's crop with shared weights, optional scalar features
``[B, K, F]`` are appended, and agent ``k``'s own fully connected head maps the
result to its action values ``[B, K, A]``.
"""

from __future__ import annotations

import torch
from torch import nn

from flipseg.registry import Registry

__all__ = ["MultiAgentQNetwork", "TRUNKS", "build_trunk"]

TRUNKS: Registry = Registry("q-network trunk")


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


@TRUNKS.register("compact")
def compact_trunk(in_channels: int, spatial_dims: int = 2, width: int = 16) -> tuple[nn.Module, int]:
    """Four stride-2 conv blocks (width, 2w, 2w, 4w channels) + global average pool.

    GroupNorm rather than BatchNorm: acting and learning then see the same function.
    """
    conv = _conv(spatial_dims)
    chans = [in_channels, width, 2 * width, 2 * width, 4 * width]
    layers: list[nn.Module] = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [conv(cin, cout, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(True)]
    pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(*layers, pool, nn.Flatten()), chans[-1]


@TRUNKS.register("resnet18")
def resnet18_trunk(in_channels: int, spatial_dims: int = 2) -> tuple[nn.Module, int]:
    """MONAI ResNet18 without its classification layer (the paper's backbone)."""
    from monai.networks.nets import resnet18

    net = resnet18(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=1)
    feat = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat


def build_trunk(name: str, in_channels: int, spatial_dims: int) -> tuple[nn.Module, int]:
    return TRUNKS.get(name)(in_channels, spatial_dims)


class MultiAgentQNetwork(nn.Module):
    """Shared trunk + per-agent heads.

    Parameters
    ----------
    agents : K
    in_channels : channels per agent crop (frames [+ position channel])
    spatial_dims : 2 or 3
    n_aux : scalar features per agent appended to the trunk features
    n_actions : 2 (pass, erase)
    trunk : registered trunk name
    hidden : width of each head's hidden layer
    """

    def __init__(
        self,
        agents: int,
        in_channels: int,
        *,
        spatial_dims: int = 2,
        n_aux: int = 0,
        n_actions: int = 2,
        trunk: str = "compact",
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.agents = agents
        self.n_aux = n_aux
        self.trunk, feat = build_trunk(trunk, in_channels, spatial_dims)
        d = feat + n_aux
        self.w1 = nn.Parameter(torch.empty(agents, d, hidden))
        self.b1 = nn.Parameter(torch.zeros(agents, hidden))
        self.w2 = nn.Parameter(torch.empty(agents, hidden, n_actions))
        self.b2 = nn.Parameter(torch.zeros(agents, n_actions))
        for w in (self.w1, self.w2):
            for k in range(agents):
                nn.init.kaiming_uniform_(w.data[k].T, a=5**0.5)

    def forward(self, states: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, K, C, *S] float (0-1) -> Q-values [B, K, A]."""
        B, K = states.shape[:2]
        feats = self.trunk(states.flatten(0, 1)).view(B, K, -1)  # [B, K, F]
        if self.n_aux:
            feats = torch.cat([feats, aux], dim=-1)
        h = torch.relu(torch.einsum("bkd,kdh->bkh", feats, self.w1) + self.b1)
        return torch.einsum("bkh,kha->bka", h, self.w2) + self.b2  # [B, K, A]
