"""Resizing 2D/3D arrays to an exact shape (bilinear/trilinear or nearest)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["resize"]


def resize(array: np.ndarray, shape: Sequence[int], *, order: int = 1) -> np.ndarray:
    """Resize a 2D or 3D array to ``shape`` exactly.

    Parameters
    ----------
    array : ndarray (H, W) or (D, H, W)
    shape : target shape, same length
    order : 1 for (bi/tri)linear with half-pixel centres, 0 for nearest.

    Returns
    -------
    ndarray of ``shape``; float32 for order 1, the input dtype for order 0.
    """
    shape = tuple(int(s) for s in shape)
    if array.ndim != len(shape):
        raise ValueError(f"cannot resize a {array.ndim}D array to shape {shape}")
    if tuple(array.shape) == shape:
        return array.astype(np.float32) if order == 1 else array.copy()
    if array.ndim == 2:
        interp = cv2.INTER_LINEAR if order == 1 else cv2.INTER_NEAREST
        src = array.astype(np.float32) if order == 1 else array
        if order == 0 and src.dtype not in (np.uint8, np.int16, np.uint16, np.float32, np.int32):
            src = src.astype(np.int32)
        out = cv2.resize(src, (shape[1], shape[0]), interpolation=interp)
        return out if order == 1 else out.astype(array.dtype)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if order == 1:
        out = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
        return out[0, 0].numpy()
    out = F.interpolate(t, size=shape, mode="nearest-exact")
    return out[0, 0].numpy().astype(array.dtype)
