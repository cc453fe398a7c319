"""What the nodule-vs-normal classifier sees of a box.

The classifier's *view* of a box is the box grown by a relative margin on every
side (default a quarter of the box extent), clipped to the image, resized to a
fixed square (cube) and scaled from the 0-255 intensity range to 0-1. The
erasing environment builds its classifier inputs the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.resize import resize

__all__ = ["DEFAULT_SIZE", "default_size", "view_box", "to_input", "extract_views"]

#: Default classifier input side per number of spatial dimensions.
DEFAULT_SIZE = {2: 64, 3: 32}


def default_size(ndim: int) -> int:
    """64 for 2D inputs, 32 for 3D inputs."""
    if ndim not in DEFAULT_SIZE:
        raise FlipsegError(f"classifier views are 2D or 3D, got {ndim}D")
    return DEFAULT_SIZE[ndim]


def view_box(box: Box, shape: Sequence[int], margin: float = 0.25) -> Box:
    """The box grown by ``margin`` times its extent on each side, clipped to ``shape``.

    Parameters
    ----------
    box : 2D or 3D box
    shape : image shape (array order)
    margin : relative margin per side (0.25: a 40x20 box grows by 10x5 on each side)
    """
    if margin < 0:
        raise FlipsegError(f"view margin must be >= 0, got {margin!r}")
    return box.validate(shape).expand(margin, relative=True).clip(shape)


def to_input(arrays: Sequence[np.ndarray], size: int | None = None) -> torch.Tensor:
    """Stack 2D/3D arrays of any shapes into a classifier batch.

    Each array is resized (bi/trilinear, half-pixel centres) to ``size`` per axis
    and divided by 255.

    Parameters
    ----------
    arrays : B arrays, all 2D or all 3D, intensities 0-255
    size : side of the output (default 64 in 2D, 32 in 3D)

    Returns
    -------
    FloatTensor [B, 1, S, S] or [B, 1, S, S, S]
    """
    if len(arrays) == 0:
        raise FlipsegError("to_input needs at least one array")
    nd = np.ndim(arrays[0])
    size = default_size(nd) if size is None else int(size)
    out = np.empty((len(arrays), 1) + (size,) * nd, dtype=np.float32)
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim != nd:
            raise FlipsegError(f"cannot batch a {a.ndim}D array with {nd}D arrays")
        out[i, 0] = resize(a.astype(np.float32, copy=False), (size,) * nd)
    out /= 255.0
    return torch.from_numpy(out)


def extract_views(
    image: np.ndarray, boxes: Sequence[Box], *, margin: float = 0.25, size: int | None = None
) -> torch.Tensor:
    """Classifier inputs ``[B, 1, *S]`` of several boxes of one image."""
    image = np.asarray(image)
    crops = [image[view_box(b, image.shape, margin).slices()] for b in boxes]
    return to_input(crops, size)
