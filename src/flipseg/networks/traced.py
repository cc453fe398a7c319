"""Inference graphs of small networks, checked against the eager network.

Flip calls its two compact networks hundreds of times per box with a handful of crops,
where PyTorch's per-module Python overhead costs as much as the convolutions. A traced
graph runs the same ATen operators without that overhead. It is used only when it gives
bitwise the same outputs as the eager network on probe inputs of several batch sizes;
otherwise (or when tracing fails) the eager network is kept, so the masks never change.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["inference_graph"]


def inference_graph(
    net: nn.Module, input_shapes: Callable[[int], Sequence[tuple[int, ...]]],
    batch_sizes: Sequence[int] = (1, 2, 7),
) -> Callable[..., torch.Tensor]:
    """A traced copy of ``net`` (eval mode, no gradients) that equals it exactly on random
    inputs of ``input_shapes(b)`` for every ``b`` in ``batch_sizes``; else ``net`` itself.

    ``input_shapes(b)`` gives the shapes of the positional inputs for a batch of ``b``."""
    net.eval()
    gen = torch.Generator().manual_seed(0)
    device = next(iter(net.parameters())).device

    def make_inputs(b: int) -> list[torch.Tensor]:
        return [torch.rand(s, generator=gen).to(device) for s in input_shapes(b)]

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, tuple(make_inputs(3)), check_trace=False)
            for b in batch_sizes:
                x = tuple(make_inputs(b))
                if not torch.equal(traced(*x), net(*x)):
                    return net
    except Exception:  # noqa: BLE001 - any tracing failure: keep the eager network
        return net

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return traced(*inputs)

    run.eager = net  # type: ignore[attr-defined]
    return run
