"""3D volumes: NIfTI (nibabel) and NRRD (pynrrd), read and written with their geometry.

Axis convention
---------------
Both formats store voxels indexed ``(i, j, k)`` = ``(x, y, z)`` (x fastest in
the file). We return arrays indexed ``[z, y, x]``, i.e. ``(D, H, W)`` with
``array[k, j, i] == stored[i, j, k]``, and spacing as ``(z, y, x)`` in mm,
matching the 3D :class:`~flipseg.boxes.Box` convention. Voxels are kept in
their stored order: nothing is reoriented or resampled, so a mask written back
with :func:`write_volume` lines up voxel for voxel with the image it came from.

``meta`` carries what is needed to write a mask with the same geometry:

``format``   ``"nifti"`` or ``"nrrd"`` (the file read)
``shape``    ``(D, H, W)`` of the returned array
``affine``   4x4 float array mapping stored indices ``(i, j, k, 1)`` to RAS
             world coordinates in mm (NRRD LPS spaces are converted)
``header``   the original header (nibabel header object / pynrrd dict)
``dtype``    the stored sample type (``float32`` when NIfTI scaling applies), for
             :func:`flipseg.data.io.normalize_intensities`
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np

from flipseg.data.io import atomic_output
from flipseg.errors import FlipsegError

__all__ = ["VOLUME_EXTENSIONS", "is_volume_path", "read_volume", "volume_stem", "write_volume"]

#: File endings read as volumes (lower case).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr")

# world-axis sign flips from each NRRD space to RAS
_TO_RAS = {
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
}


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return None


def is_volume_path(path: str | Path) -> bool:
    """True when the file name ends in one of :data:`VOLUME_EXTENSIONS`."""
    return _kind(Path(path)) is not None


def volume_stem(path: str | Path) -> str:
    """File name without its volume ending (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for ext in VOLUME_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def _to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    """Stored ``(x, y[, z][, 1...])`` -> ``(x, y, z)``."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise FlipsegError(f"volume {path} has shape {data.shape}; expected a 3D volume")
    return data


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict[str, Any]]:
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlipsegError(f"cannot read volume {path}: {reason}") from None
    data = _to_3d(data, path)
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0] * 3
    spacing = tuple(reversed(zooms[:3]))
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    stored = np.dtype(img.get_data_dtype())
    meta = {"format": "nifti", "affine": np.array(img.affine, dtype=float),
            "header": img.header.copy(),
            "dtype": stored.name if (slope, inter) == (1.0, 0.0) else "float32"}
    return data, spacing, meta


def _nrrd_affine(header: dict[str, Any], n_spatial: int) -> np.ndarray:
    """RAS affine of the stored index order from a pynrrd header."""
    affine = np.eye(4)
    dirs = header.get("space directions")
    if dirs is not None:
        vecs = [np.asarray(v, dtype=float) for v in dirs if v is not None and not np.isnan(v).any()]
        vecs = vecs[:n_spatial]
        for col, v in enumerate(vecs):
            affine[: len(v), col] = v
        origin = np.asarray(header.get("space origin", np.zeros(len(vecs[0]) if vecs else 3)),
                            dtype=float)
        origin = np.nan_to_num(origin)
        affine[: len(origin), 3] = origin
        flips = _TO_RAS.get(str(header.get("space", "")).lower(), (1.0, 1.0, 1.0))
        affine[:3] *= np.asarray(flips)[:, None]
    elif header.get("spacings") is not None:
        sp = [float(s) for s in header["spacings"] if not np.isnan(s)][:n_spatial]
        for i, s in enumerate(sp):
            affine[i, i] = s
    return affine


def _read_nrrd(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict[str, Any]]:
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (nrrd.NRRDError, OSError, EOFError, zlib.error, ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlipsegError(f"cannot read volume {path}: {reason}") from None
    stored = np.asarray(data).dtype
    data = _to_3d(np.asarray(data, dtype=np.float32), path)
    affine = _nrrd_affine(header, 3)
    spacing_xyz = [float(np.linalg.norm(affine[:3, c])) or 1.0 for c in range(3)]
    meta = {"format": "nrrd", "affine": affine, "header": dict(header), "dtype": stored.name}
    return data, tuple(reversed(spacing_xyz)), meta


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """Read a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) volume.

    Returns
    -------
    array : float32 ``(D, H, W)`` indexed ``[z, y, x]`` (NIfTI scaling applied)
    spacing : ``(z, y, x)`` voxel size in mm
    meta : geometry to hand back to :func:`write_volume` (see module docstring)

    Raises
    ------
    FlipsegError
        Missing, corrupt or non-3D file, or an unknown file ending.
    """
    path = Path(path)
    kind = _kind(path)
    if kind is None:
        endings = ", ".join(VOLUME_EXTENSIONS)
        raise FlipsegError(f"volume {path}: unknown file ending (use {endings})")
    if not path.is_file():
        raise FlipsegError(f"volume file not found: {path}")
    data, spacing, meta = _read_nifti(path) if kind == "nifti" else _read_nrrd(path)
    array = np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
    meta["shape"] = array.shape
    return array, spacing, meta


def _storage(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.int64:
        return array.astype(np.int32)
    return array


def _write_nifti(tmp: Path, data_xyz: np.ndarray, meta: dict[str, Any]) -> None:
    affine = np.asarray(meta["affine"], dtype=float)
    old = meta.get("header") if meta.get("format") == "nifti" else None
    if isinstance(old, nib.Nifti2Header):
        img = nib.Nifti2Image(data_xyz, affine, old.copy())
    elif isinstance(old, nib.Nifti1Header):
        img = nib.Nifti1Image(data_xyz, affine, old.copy())
    else:
        img = nib.Nifti1Image(data_xyz, affine)
        img.header.set_xyzt_units("mm")
    hdr = img.header
    hdr.set_data_dtype(data_xyz.dtype)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
    sform_code = int(old["sform_code"]) if old is not None else 0
    qform_code = int(old["qform_code"]) if old is not None else 0
    img.set_sform(affine, code=sform_code or 1)
    img.set_qform(affine, code=qform_code or 1)
    nib.save(img, str(tmp))


def _write_nrrd(tmp: Path, data_xyz: np.ndarray, meta: dict[str, Any]) -> None:
    affine = np.asarray(meta["affine"], dtype=float)
    space = "left-posterior-superior"
    old = meta.get("header") if meta.get("format") == "nrrd" else None
    if old is not None and str(old.get("space", "")).lower() in _TO_RAS:
        space = str(old["space"])
    flips = np.asarray(_TO_RAS[space.lower()])[:, None]
    world = affine[:3] * flips  # RAS -> the file's space (the flips are their own inverse)
    header = {
        "space": space,
        "space directions": world[:, :3].T.copy(),
        "space origin": world[:, 3].copy(),
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    if old is not None and old.get("space units") is not None:
        header["space units"] = list(old["space units"])[:3]
    nrrd.write(str(tmp), data_xyz, header, index_order="F")


def write_volume(path: str | Path, array: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write a ``(D, H, W)`` array with the geometry of a volume read by :func:`read_volume`.

    The format follows the file ending of ``path`` (``.nii``, ``.nii.gz``,
    ``.nrrd``); ``meta`` may come from either format. Bool arrays are stored
    as uint8 0/1. The file is written to a temporary name and moved into
    place, so ``path`` is never half-written.

    Raises
    ------
    FlipsegError
        Unknown file ending, or an array whose shape differs from ``meta``.
    """
    path = Path(path)
    kind = _kind(path)
    if kind not in ("nifti", "nrrd") or path.name.lower().endswith(".nhdr"):
        raise FlipsegError(f"cannot write volume {path}: use a .nii, .nii.gz or .nrrd ending")
    array = np.asarray(array)
    expected = tuple(meta.get("shape", array.shape))
    if array.ndim != 3 or tuple(array.shape) != expected:
        raise FlipsegError(
            f"cannot write volume {path}: array shape {array.shape} differs from the "
            f"volume shape {expected}"
        )
    data_xyz = np.asfortranarray(_storage(array).transpose(2, 1, 0))
    with atomic_output(path) as tmp:
        if kind == "nifti":
            _write_nifti(tmp, data_xyz, meta)
        else:
            _write_nrrd(tmp, data_xyz, meta)
    return path
