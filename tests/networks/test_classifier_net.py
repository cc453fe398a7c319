import pytest
import torch

from flipseg.errors import FlipsegError
from flipseg.networks.classifier import CLASSIFIERS, build_classifier


@pytest.mark.parametrize("name", ["compact", "resnet18"])
@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_output_shape_and_cam_layer(name, dims, size):
    torch.manual_seed(0)
    net = build_classifier(name, spatial_dims=dims)
    net.eval()
    with torch.no_grad():
        out = net(torch.rand((3, 1) + (size,) * dims))
    assert out.shape == (3, 2)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    layer = net.get_submodule(net.cam_layer)
    assert any(isinstance(m, conv) for m in layer.modules())


def test_compact_is_small():
    net = build_classifier("compact", spatial_dims=2)
    n_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    assert n_bytes < 1_000_000


def test_same_seed_same_weights():
    torch.manual_seed(5)
    a = build_classifier("compact").state_dict()
    torch.manual_seed(5)
    b = build_classifier("compact").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_valid_ones():
    assert CLASSIFIERS.names() == ["compact", "encoder", "resnet18"]
    with pytest.raises(FlipsegError, match="compact, encoder, resnet18"):
        build_classifier("vgg")
    with pytest.raises(FlipsegError, match="spatial_dims"):
        build_classifier("compact", spatial_dims=4)
