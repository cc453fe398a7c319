"""Masks as PNG (0/255) and NIfTI (the image's geometry) files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.data.io import write_png
from flipseg.data.volumes import write_volume
from flipseg.errors import FlipsegError

__all__ = ["nifti_meta", "write_mask_nifti", "write_mask_png"]


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """A 2D bool mask as an 8-bit PNG: lesion 255, background 0.

    Raises
    ------
    FlipsegError
        ``mask`` is not 2D.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise FlipsegError(f"{Path(path).name}: a PNG holds a 2D mask, got shape {mask.shape}")
    return write_png(path, mask)


def nifti_meta(shape: Sequence[int], spacing: Sequence[float] | None,
               meta: dict[str, Any] | None) -> dict[str, Any]:
    """Geometry for :func:`flipseg.data.volumes.write_volume` of an array of ``shape``.

    A volume keeps the geometry it was read with (``meta``: NIfTI, NRRD or DICOM affine);
    otherwise, and for a 2D image (written as one slice ``(1, H, W)``), the affine is the
    diagonal of the spacing (mm; 1.0 when unknown).
    """
    shape = tuple(int(s) for s in shape)
    shape3 = shape if len(shape) == 3 else (1, *shape)
    if meta is not None and meta.get("affine") is not None and tuple(meta.get("shape", ())) == shape3:
        return meta
    sp = tuple(float(s) for s in (spacing or (1.0,) * len(shape)))
    dz, dy, dx = sp if len(sp) == 3 else (1.0, *sp)
    return {"format": None, "affine": np.diag([dx, dy, dz, 1.0]), "shape": shape3}


def write_mask_nifti(path: str | Path, mask: np.ndarray, *, spacing: Sequence[float] | None = None,
                     meta: dict[str, Any] | None = None) -> Path:
    """A bool (or small integer label) mask as NIfTI (uint8), with the image's geometry.

    ``mask`` is ``(H, W)`` (stored as one slice, x the column) or ``(D, H, W)``; see
    :func:`nifti_meta` for the geometry.
    """
    arr = np.asarray(mask)
    arr = arr.astype(np.uint8) if arr.dtype == bool else arr
    vol = arr if arr.ndim == 3 else arr[None]
    return write_volume(path, vol, nifti_meta(arr.shape, spacing, meta))
