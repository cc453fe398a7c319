"""DICOM images: single files (one frame, one picked frame, or all frames) and series.

Read with pydicom; compressed transfer syntaxes (JPEG baseline and lossless, JPEG-LS,
JPEG 2000) are decoded by the pylibjpeg plug-ins. What comes back:

- one grey image: MONOCHROME2 as stored, MONOCHROME1 inverted within its stored range,
  RGB, YBR_FULL, YBR_FULL_422 (converted to RGB by pydicom) and PALETTE COLOR (through its
  lookup table) reduced to luminance ``0.299 R + 0.587 G + 0.114 B``; a Rescale
  Slope/Intercept other than 1/0 applied to grey images;
- intensities on the 0-255 scale by :func:`flipseg.data.io.normalize_intensities`, the
  stored bit depth being BitsStored (a 12-bit image is scaled by 255/4095);
- ``spacing`` in mm, ``(dy, dx)`` for an image: from the ultrasound region calibration
  (SequenceOfUltrasoundRegions PhysicalDeltaY/X, whose PhysicalUnitsY/XDirection is 3 =
  cm: the 2D tissue region when there are several), else PixelSpacing, else 1.0;
- a multi-frame file gives one frame, ``frame=K`` (from 0; default 0, the first), or all
  its frames as a ``(F, H, W)`` volume with ``frame="all"`` (frame spacing:
  SpacingBetweenSlices, else SliceThickness, else 1.0);
- a folder holding one series (one SeriesInstanceUID) gives a ``(D, H, W)`` volume, slices
  sorted by their position along the slice normal (ImagePositionPatient with
  ImageOrientationPatient), else by InstanceNumber; slice spacing from the positions.

``meta`` (the sample's ``volume_meta``) records ``format="dicom"``, ``files`` (the source
files in array order), ``frame`` (the frame read, None for all or a single-frame file),
``shape`` and an ``affine`` (stored index ``(x, y, z, 1)`` -> RAS mm, as
:func:`flipseg.data.volumes.write_volume` takes it), so masks can be written back with the
image's geometry or as a DICOM-SEG referencing the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.data.io import normalize_intensities
from flipseg.errors import FlipsegError

__all__ = [
    "DICOM_EXTENSIONS",
    "dicom_spacing",
    "dicom_stem",
    "is_dicom_file",
    "is_dicom_series",
    "make_us_dicom",
    "read_dicom",
    "read_dicom_series",
]

#: File endings always read as DICOM (a file without ending is DICOM when it says so).
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CM = 3  # PhysicalUnitsX/YDirection: 3 = cm
_FRAME_ALL = "all"


def is_dicom_file(path: str | Path) -> bool:
    """True for a file ending in ``.dcm``/``.dicom``/``.dic``, or a file with no (or an
    unknown) ending that starts with the DICOM preamble (``DICM`` at byte 128).
    ``DICOMDIR`` index files are not images: False."""
    path = Path(path)
    if path.name.upper() == "DICOMDIR" or not path.is_file():
        return False
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_series(path: str | Path) -> bool:
    """True for a folder that directly holds at least one DICOM file."""
    path = Path(path)
    return path.is_dir() and any(is_dicom_file(f) for f in sorted(path.iterdir())
                                 if not f.name.startswith("."))


def dicom_stem(path: str | Path) -> str:
    """``a.dcm`` -> ``a``; a file without a DICOM ending keeps its whole name
    (``1.2.840.1234`` stays ``1.2.840.1234``)."""
    path = Path(path)
    return path.stem if path.suffix.lower() in DICOM_EXTENSIONS else path.name


def _dcmread(path: Path, *, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise FlipsegError(f"DICOM file not found: {path}")
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlipsegError(f"cannot read DICOM {path}: {reason}") from None


def dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """``(dy, dx)`` in mm: ultrasound region calibration (cm), else PixelSpacing, else None."""
    regions = [r for r in getattr(ds, "SequenceOfUltrasoundRegions", None) or []
               if getattr(r, "PhysicalUnitsXDirection", None) == _CM
               and getattr(r, "PhysicalUnitsYDirection", None) == _CM
               and getattr(r, "PhysicalDeltaX", None) and getattr(r, "PhysicalDeltaY", None)]
    if regions:
        tissue = [r for r in regions if getattr(r, "RegionSpatialFormat", None) == 1]
        r = (tissue or regions)[0]
        return abs(float(r.PhysicalDeltaY)) * 10.0, abs(float(r.PhysicalDeltaX)) * 10.0
    ps = getattr(ds, "PixelSpacing", None)
    if ps is not None and len(ps) == 2 and float(ps[0]) > 0 and float(ps[1]) > 0:
        return float(ps[0]), float(ps[1])
    return None


def _frame_spacing(ds: Any) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        v = getattr(ds, key, None)
        if v is not None and float(v) > 0:
            return float(v)
    return 1.0


def _decode(ds: Any, path: Path, index: int | None) -> np.ndarray:
    """Decoded samples: ``(H, W)``/``(H, W, 3)`` for one frame, ``(F, H, W[, 3])`` for all;
    YBR colour converted to RGB by pydicom."""
    from pydicom.pixels import pixel_array

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise FlipsegError(f"cannot read DICOM {path}: it holds no image (no pixel data)")
    try:
        return np.asarray(pixel_array(ds, index=index))
    except (RuntimeError, ValueError, NotImplementedError, AttributeError, KeyError,
            TypeError, IndexError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(tsyntax, "name", tsyntax)
        raise FlipsegError(f"cannot decode DICOM {path} ({name}): {reason}") from None


def _grey(ds: Any, arr: np.ndarray, path: Path) -> np.ndarray:
    """Stored samples of one or more frames -> float32 grey on the 0-255 scale."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(getattr(ds, "BitsStored", 0) or 0) or None
    if photometric == "PALETTE COLOR":
        try:
            rgb = np.asarray(apply_color_lut(arr, ds))
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            raise FlipsegError(f"cannot read DICOM {path}: bad palette ({exc})") from None
        return normalize_intensities(rgb) @ _LUMA
    if photometric.startswith(("RGB", "YBR")):
        if arr.shape[-1] != 3:
            raise FlipsegError(f"cannot read DICOM {path}: {photometric} with shape {arr.shape}")
        return normalize_intensities(arr, bits=bits) @ _LUMA
    if not photometric.startswith("MONOCHROME"):
        raise FlipsegError(f"cannot read DICOM {path}: photometric interpretation "
                           f"{photometric!r} is not supported")
    if photometric == "MONOCHROME1":  # white is 0: invert within the stored range
        b = bits or arr.dtype.itemsize * 8
        if np.issubdtype(arr.dtype, np.signedinteger):
            arr = (-1 - arr.astype(np.int64)).astype(arr.dtype)
        elif np.issubdtype(arr.dtype, np.integer):
            arr = ((2**b - 1) - arr.astype(np.int64)).clip(0).astype(arr.dtype)
        else:
            arr = arr.max() + arr.min() - arr
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        arr = np.asarray(apply_modality_lut(arr, ds))
        bits = None
    return normalize_intensities(arr, bits=bits)


def _affine(spacing_zyx: Sequence[float], ds: Any | None = None,
            origin: Sequence[float] | None = None, normal: np.ndarray | None = None) -> np.ndarray:
    """Stored index ``(x, y, z, 1)`` -> RAS mm; from ImageOrientationPatient when present."""
    dz, dy, dx = (float(s) for s in spacing_zyx)
    affine = np.diag([dx, dy, dz, 1.0])
    iop = getattr(ds, "ImageOrientationPatient", None) if ds is not None else None
    if iop is not None and len(iop) == 6:
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        nrm = normal if normal is not None else np.cross(row, col)
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * dx, col * dy, nrm * dz
        if origin is not None:
            lps[:3, 3] = np.asarray(origin, float)
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    return affine


def _frame_count(ds: Any) -> int:
    try:
        return max(int(getattr(ds, "NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def read_dicom(path: str | Path, *, frame: int | str | None = None
               ) -> tuple[np.ndarray, tuple[float, ...], dict[str, Any]]:
    """Read one DICOM file as a grey image (or a volume of all its frames).

    Parameters
    ----------
    path : the file.
    frame : for a multi-frame file, which frame (from 0; None: the first) or ``"all"``
        for a ``(F, H, W)`` volume. A single-frame file gives its image whatever the
        frame (so one option serves a folder mixing both).

    Returns
    -------
    image : float32 ``(H, W)`` (or ``(F, H, W)``), 0-255 (see module docstring)
    spacing : ``(dy, dx)`` (or ``(dz, dy, dx)``) in mm, 1.0 where the file says nothing
    meta : ``format``, ``files``, ``frame``, ``shape``, ``affine``

    Raises
    ------
    FlipsegError
        Not a DICOM file, no pixel data, a transfer syntax nothing can decode, an
        unsupported photometric interpretation, or a frame out of range.
    """
    path = Path(path)
    ds = _dcmread(path)
    n = _frame_count(ds)
    want_all = isinstance(frame, str) and frame.strip().lower() == _FRAME_ALL
    if frame is not None and not want_all:
        try:
            k = int(frame)
        except (TypeError, ValueError):
            raise FlipsegError(f"frame={frame!r}: give a frame number (from 0) or 'all'") from None
        if n > 1 and not 0 <= k < n:
            raise FlipsegError(f"frame={k}: {path.name} has {n} frame(s) (0..{n - 1})")
    else:
        k = 0
    sp2 = dicom_spacing(ds) or (1.0, 1.0)
    if n > 1 and want_all:
        image = _grey(ds, _decode(ds, path, None), path)
        spacing: tuple[float, ...] = (_frame_spacing(ds), *sp2)
        used = None
    else:
        image = _grey(ds, _decode(ds, path, k if n > 1 else None), path)
        if image.ndim == 3 and n == 1:  # a single frame stored with a frame axis
            image = image[0]
        spacing = sp2
        used = k if n > 1 else None
    if image.ndim not in (2, 3):
        raise FlipsegError(f"cannot read DICOM {path}: image of shape {image.shape}")
    image = np.ascontiguousarray(image, dtype=np.float32)
    sp3 = spacing if len(spacing) == 3 else (1.0, *spacing)
    meta = {"format": "dicom", "files": [str(path)], "frame": used, "shape": image.shape,
            "affine": _affine(sp3, ds, getattr(ds, "ImagePositionPatient", None))}
    return image, tuple(float(s) for s in spacing), meta


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, tuple[float, float, float],
                                                   dict[str, Any]]:
    """Read a folder of single-frame DICOM slices of one series as a ``(D, H, W)`` volume.

    Returns ``(volume, (dz, dy, dx) in mm, meta)``; ``meta["files"]`` lists the slices in
    array order (see the module docstring for the sort).

    Raises
    ------
    FlipsegError
        No DICOM file, several series (the message counts them), slices of different
        sizes, or a slice that cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FlipsegError(f"DICOM folder not found: {folder}")
    files = [f for f in sorted(folder.iterdir()) if not f.name.startswith(".") and is_dicom_file(f)]
    if not files:
        raise FlipsegError(f"DICOM folder {folder} holds no DICOM file")
    headers = [(f, _dcmread(f, stop_before_pixels=True)) for f in files]
    series = {str(getattr(h, "SeriesInstanceUID", "")) for _f, h in headers}
    if len(series) != 1:
        raise FlipsegError(f"DICOM folder {folder} holds {len(series)} series; give a folder "
                           "with one series")
    first = headers[0][1]
    iop = getattr(first, "ImageOrientationPatient", None)
    positions = [getattr(h, "ImagePositionPatient", None) for _f, h in headers]
    normal = None
    if iop is not None and len(iop) == 6 and all(p is not None and len(p) == 3 for p in positions):
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        keys = [float(np.dot(normal, np.asarray(p, float))) for p in positions]
    else:
        keys = [float(getattr(h, "InstanceNumber", i) or i) for i, (_f, h) in enumerate(headers)]
    order = sorted(range(len(headers)), key=lambda i: (keys[i], str(headers[i][0])))
    slices = []
    for i in order:
        f = headers[i][0]
        image, _sp, _meta = read_dicom(f)
        if image.ndim != 2:
            raise FlipsegError(f"DICOM series {folder}: {f.name} is multi-frame; read it alone "
                               "(frame=all gives its frames as a volume)")
        if slices and image.shape != slices[0].shape:
            raise FlipsegError(f"DICOM series {folder}: {f.name} is {image.shape}, the first "
                               f"slice {slices[0].shape}")
        slices.append(image)
    volume = np.ascontiguousarray(np.stack(slices), dtype=np.float32)
    dy, dx = dicom_spacing(first) or (1.0, 1.0)
    sorted_keys = [keys[i] for i in order]
    steps = np.diff(sorted_keys) if normal is not None and len(order) > 1 else np.array([])
    steps = steps[steps > 1e-6]
    dz = float(np.median(steps)) if steps.size else _frame_spacing(first)
    origin = positions[order[0]] if normal is not None else None
    meta = {"format": "dicom", "files": [str(headers[i][0]) for i in order], "frame": None,
            "shape": volume.shape,
            "affine": _affine((dz, dy, dx), first, origin, normal)}
    return volume, (dz, dy, dx), meta


def make_us_dicom(
    image: np.ndarray,
    *,
    pixel_size_mm: float | tuple[float, float] | None = None,
    photometric: str | None = None,
    patient_id: str = "ANON",
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    compress: str | None = None,
) -> Any:
    """A minimal ultrasound DICOM dataset (Ultrasound [Multi-frame] Image Storage) of an
    8/16-bit array, for converting PNGs and for tests.

    Parameters
    ----------
    image : uint8/uint16 ``(H, W)`` grey, ``(H, W, 3)`` RGB, or ``(F, H, W[, 3])`` frames.
    pixel_size_mm : ``dx`` or ``(dy, dx)``: written as an ultrasound region calibration
        (SequenceOfUltrasoundRegions, PhysicalDelta in cm) over the whole image.
    photometric : default MONOCHROME2 for grey, RGB for colour.
    compress : None (explicit VR little endian), ``"jpeg"`` (JPEG baseline, 8-bit,
        encoded with Pillow: grey, or colour as YBR_FULL_422), ``"jpeg2000"`` (lossless,
        pylibjpeg-openjpeg) or ``"rle"``.

    Returns
    -------
    pydicom Dataset; save it with ``ds.save_as(path, enforce_file_format=True)``.
    """
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise FlipsegError(f"make_us_dicom: dtype {arr.dtype} must be uint8 or uint16")
    colour = arr.shape[-1] == 3 and arr.ndim in (3, 4)
    frames = arr.ndim == (4 if colour else 3)
    photometric = photometric or ("RGB" if colour else "MONOCHROME2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if frames else UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.Modality = "US"
    ds.Manufacturer = "flipseg"
    bits = 8 if arr.dtype == np.uint8 else 16
    ds.set_pixel_data(arr, "RGB" if colour else "MONOCHROME2", bits)
    if photometric != ds.PhotometricInterpretation and compress is None:
        ds.PhotometricInterpretation = photometric
    if pixel_size_mm is not None:
        dy, dx = (pixel_size_mm, pixel_size_mm) if np.isscalar(pixel_size_mm) else pixel_size_mm
        region = Dataset()
        region.RegionSpatialFormat = 1  # 2D tissue
        region.RegionDataType = 1
        region.RegionFlags = 0
        h, w = arr.shape[-3:-1] if colour else arr.shape[-2:]
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = int(w) - 1, int(h) - 1
        region.PhysicalUnitsXDirection = _CM
        region.PhysicalUnitsYDirection = _CM
        region.PhysicalDeltaX = float(dx) / 10.0
        region.PhysicalDeltaY = float(dy) / 10.0
        ds.SequenceOfUltrasoundRegions = [region]
    if compress == "jpeg":
        from PIL import Image
        from pydicom.encaps import encapsulate

        if bits != 8:
            raise FlipsegError("make_us_dicom: JPEG baseline needs 8-bit samples")
        chunks = []
        for f in (arr if frames else arr[None]):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(f)).save(buf, format="JPEG", quality=95)
            chunks.append(buf.getvalue())
        ds.PixelData = encapsulate(chunks)
        ds["PixelData"].VR = "OB"
        if colour:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif compress == "jpeg2000":
        ds.compress(JPEG2000Lossless)
    elif compress == "rle":
        ds.compress(RLELossless)
    elif compress is not None:
        raise FlipsegError(f"make_us_dicom: compress={compress!r}: use jpeg, jpeg2000 or rle")
    return ds
