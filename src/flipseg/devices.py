"""Which torch device a command runs its networks on (``--device auto|cpu|cuda``).

``auto`` is the GPU when PyTorch sees one (``torch.cuda.is_available()``), else the CPU.
``cuda`` (or ``cuda:N``) on a machine without a usable GPU is a one-line error, never a
silent fall back to the CPU. PyTorch is imported only when a device is resolved.
"""

from __future__ import annotations

import argparse
import re

from flipseg.errors import FlipsegError

__all__ = ["DEVICE_HELP", "add_device_arg", "check_device", "resolve_device"]

DEVICE_HELP = ("torch device of the networks: auto (default: the GPU when PyTorch sees one, "
               "else the CPU), cpu, cuda or cuda:N")
_CUDA = re.compile(r"^cuda(:\d+)?$")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device`` (default None: the command treats it as ``auto``)."""
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda", help=DEVICE_HELP)


def check_device(name: str | None) -> None:
    """The early check of ``--device``, before any work: an unknown name, or ``cuda``
    without a usable GPU, is a one-line error. ``auto`` and ``cpu`` need no PyTorch here
    (so a command's other input errors still come back in a fraction of a second)."""
    text = "auto" if name is None else str(name).strip().lower()
    if text in ("auto", "cpu"):
        return
    resolve_device(name)


def resolve_device(name: str | None) -> str:
    """``"auto"`` / None -> ``"cuda"`` when a GPU is usable, else ``"cpu"``; ``"cpu"`` and
    ``"cuda[:N]"`` are checked and returned as they are.

    Raises
    ------
    FlipsegError
        An unknown device name, or ``cuda`` (``cuda:N``) when PyTorch sees no such GPU.
    """
    text = "auto" if name is None else str(name).strip().lower()
    if text not in ("auto", "cpu") and not _CUDA.match(text):
        raise FlipsegError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    if text == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if text == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise FlipsegError(f"--device {name}: no CUDA GPU is usable here (torch.cuda.is_available() "
                           "is False); use --device cpu or auto")
    index = int(text.split(":")[1]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        raise FlipsegError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return text
