"""Flip's inference graphs are used only where they equal the eager networks bitwise."""

import torch
from torch import nn

from flipseg.networks.classifier import build_classifier
from flipseg.networks.qnetwork import MultiAgentQNetwork
from flipseg.networks.traced import inference_graph


def test_graphs_of_the_compact_networks_equal_them_at_any_batch_size():
    torch.manual_seed(0)
    q = MultiAgentQNetwork(2, 7, n_aux=7)
    c = build_classifier("compact")
    fq = inference_graph(q, lambda b: [(b, 2, 7, 32, 32), (b, 2, 7)])
    fc = inference_graph(c, lambda b: [(b, 1, 64, 64)])
    assert fq is not q and fc is not c  # traced, not the fallback
    for b in (1, 5, 64):
        x, a, v = torch.rand(b, 2, 7, 32, 32), torch.rand(b, 2, 7), torch.rand(b, 1, 64, 64)
        with torch.no_grad():
            assert torch.equal(fq(x, a), q(x, a)) and torch.equal(fc(v), c(v))


class _BatchDependent(nn.Module):
    """Python control flow on the batch size: a trace would freeze one branch."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.w * (2 if x.shape[0] > 2 else 1)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return {"y": x * self.w, "note": "not a tensor"}


def test_a_graph_that_differs_or_fails_falls_back_to_the_eager_network():
    net = _BatchDependent()
    assert inference_graph(net, lambda b: [(b, 4)]) is net
    bad = _Untraceable()
    assert inference_graph(bad, lambda b: [(b, 4)]) is bad


def test_building_a_graph_leaves_the_global_random_stream_alone():
    net = build_classifier("compact")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    inference_graph(net, lambda b: [(b, 1, 32, 32)])
    assert torch.equal(torch.rand(3), expected)
