#!/usr/bin/env python3
"""Convert the models shipped in ``src/flipseg/models`` from ``.pt`` pickles to ``.safetensors``.

Run once from the repository root (the ``.pt`` files are our own, trusted):

    python scripts/convert_shipped_models.py

It writes ``flip2d.safetensors``, ``flip3d.safetensors``, ``boxinst2d.safetensors`` and
``boxrefine2d.safetensors`` next to the ``.pt`` files with
:func:`flipseg.bundles.convert_model` (what ``flipseg convert-model`` runs), checks
that each new file reads back equal to its pickle, and leaves existing outputs alone.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from flipseg.bundles import UnsafeLoadWarning, convert_model, load_bundle

MODELS = Path(__file__).resolve().parents[1] / "src" / "flipseg" / "models"
NAMES = ("flip2d", "flip3d", "boxinst2d", "boxrefine2d")


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's memory as bytes (NaN payloads and -0.0 included)."""
    return t.detach().contiguous().view(-1).view(torch.uint8)


def same(a, b) -> bool:
    """Equal trees: same types and keys, bit-identical tensors (numpy scalars may be Python ones)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(_bytes(a), _bytes(b)))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.generic):
        return a.item() == b
    return type(a) is type(b) and (a == b or (a != a and b != b))


def main() -> int:
    for name in NAMES:
        src, dst = MODELS / f"{name}.pt", MODELS / f"{name}.safetensors"
        if dst.exists():
            print(f"{dst} exists, left as is")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsafeLoadWarning)  # our own files
            convert_model(src, dst)
        if not same(torch.load(src, map_location="cpu", weights_only=True), load_bundle(dst)):
            dst.unlink()
            print(f"{dst} does not read back equal to {src}; removed", file=sys.stderr)
            return 1
        print(f"wrote {dst} ({dst.stat().st_size} bytes, from {src.stat().st_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
