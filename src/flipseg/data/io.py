"""Reading 2D images and masks, writing PNGs atomically.

Images come back as float32 ``(H, W)`` on the 0-255 scale the models expect, by one
rule (:func:`normalize_intensities`, also used for DICOM and volumes): 8-bit files
as stored, 16-bit files scaled by 255/65535 unless every value is <= 255, 1-bit
files 0/255, float files kept when in 0-255 (x255 when in 0-1), else stretched.
Colour is reduced to luminance (ITU-R BT.601 weights ``0.299 R + 0.587 G + 0.114
B``) and alpha is dropped. Masks come back as bool ``(H, W)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from flipseg.errors import FlipsegError
from flipseg.io_utils import new_file_mode

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_output",
    "normalize_intensities",
    "read_image",
    "read_mask",
    "read_raw",
    "write_png",
]

#: 2D image file endings the readers look for (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _png_is_16bit_colour(path: Path) -> bool:
    """True for a 16-bit RGB(A) PNG, which Pillow would truncate to 8 bits."""
    with open(path, "rb") as f:
        head = f.read(26)
    # PNG signature (8) + IHDR length/type (8) + width, height (8) + depth, colour type
    return (
        len(head) == 26
        and head[:8] == b"\x89PNG\r\n\x1a\n"
        and head[24] == 16
        and head[25] in (2, 6)
    )


def _decode_cv2(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is not None and arr.ndim == 3:
        # OpenCV gives BGR(A); return RGB(A) like Pillow does
        arr = arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
    return arr


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file into its stored array, without any conversion.

    Returns
    -------
    ndarray
        ``(H, W)`` for greyscale (bool for 1-bit files, uint8/uint16/int32/
        float32 otherwise) or ``(H, W, C)`` with C = 2 (grey + alpha),
        3 (RGB) or 4 (RGBA).

    Raises
    ------
    FlipsegError
        The file is missing, is a folder, or cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise FlipsegError(f"image file not found: {path}")
    if not path.is_file():
        raise FlipsegError(f"not an image file: {path}")
    if path.suffix.lower() == ".png" and _png_is_16bit_colour(path):
        arr = _decode_cv2(path)
        if arr is None:
            raise FlipsegError(f"cannot read image {path}: corrupt 16-bit PNG")
        return arr
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            elif im.mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            return np.asarray(im).copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlipsegError(f"cannot read image {path}: {reason}") from None


def normalize_intensities(array: np.ndarray, *, bits: int | None = None) -> np.ndarray:
    """Bring stored intensities to the 0-255 float scale, by one rule for every reader.

    - bool: False/True -> 0/255.
    - integers, all values in 0..255: kept as they are (an 8-bit image stays itself,
      also when saved in a 16-bit file with its values unchanged).
    - integers with a value above 255 and none below 0: multiplied by 255 / (2**b - 1),
      ``b`` the stored bit depth: ``bits`` when given (DICOM BitsStored), else the
      sample size of the dtype (16 for 16-bit files; 16 for 32-bit integers whose
      maximum is <= 65535, as Pillow reads some 16-bit files). An 8-bit image saved as
      16-bit with its values times 257 comes back exactly.
    - anything else (floats, integers with negative values): kept when all values are
      in 0..255, multiplied by 255 when all are in 0..1, otherwise stretched linearly
      from [min, max] to [0, 255]. Non-finite values become the smallest finite one.

    Parameters
    ----------
    array : the stored samples, any shape (colour channels included: the rule is
        applied to all of them at once, before any conversion to grey).
    bits : stored bit depth, when the file says it (DICOM BitsStored).

    Returns
    -------
    float32 array of the same shape, values in [0, 255].
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.float32) * np.float32(255.0)
    if arr.size == 0:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            return arr.astype(np.float32)
        if lo >= 0:
            b = int(bits) if bits else arr.dtype.itemsize * 8
            if not bits and b > 16 and hi <= 65535:
                b = 16
            b = max(b, int(hi).bit_length())
            scale = 255.0 / float(2**b - 1)
            return np.clip(arr.astype(np.float64) * scale, 0.0, 255.0).astype(np.float32)
    out = arr.astype(np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        out = np.where(finite, out, out[finite].min() if finite.any() else 0.0).astype(np.float32)
    lo, hi = float(out.min()), float(out.max())
    if lo >= 0.0 and hi <= 1.0:
        return out * np.float32(255.0)
    if lo >= 0.0 and hi <= 255.0:
        return out
    return ((out - lo) * np.float32(255.0 / (hi - lo))).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image as float32 ``(H, W)`` on the 0-255 scale.

    Accepts greyscale (8/16-bit, float TIFF), 1-bit (read as 0/255), grey +
    alpha, RGB and RGBA (luminance of the colour channels, alpha dropped) and
    palette images. Intensities follow :func:`normalize_intensities` (applied to
    the stored samples, alpha left out, before the luminance).

    Raises
    ------
    FlipsegError
        Missing, unreadable or corrupt file, or an unexpected channel count;
        the message names the file.
    """
    arr = read_raw(path)
    if arr.ndim == 2:
        return normalize_intensities(arr)
    channels = arr.shape[2]
    if channels in (1, 2):  # grey (+ alpha)
        return normalize_intensities(arr[..., 0])
    if channels in (3, 4):  # RGB (+ alpha)
        return normalize_intensities(arr[..., :3]) @ _LUMA
    raise FlipsegError(f"cannot read image {path}: {channels} channels (expected 1-4)")


def read_mask(
    path: str | Path,
    *,
    shape: Sequence[int] | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Read a 2D mask as bool ``(H, W)``; any non-zero pixel is lesion.

    Parameters
    ----------
    path : mask image (any format :func:`read_image` accepts); in colour
        masks a pixel is lesion when any colour channel is non-zero.
    shape : ``(H, W)`` the mask must have. A mask of another size (e.g. an
        anti-aliased mask drawn at a higher resolution) is scaled to its
        maximum, resized (area averaging when shrinking, bilinear otherwise)
        and thresholded at 0.5.
    threshold : for same-size masks, keep pixels ``>= threshold * max``
        instead of all non-zero pixels (for anti-aliased masks).

    Raises
    ------
    FlipsegError
        Unreadable file, or ``shape`` not 2D.
    """
    arr = read_raw(path)
    if arr.ndim == 3:
        arr = arr[..., : (1 if arr.shape[2] <= 2 else 3)].max(axis=2)
    arr = arr.astype(np.float32)
    top = float(arr.max())
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise FlipsegError(f"mask {path}: target shape {shape} is not 2D")
        if shape != arr.shape:
            if top <= 0:
                return np.zeros(shape, dtype=bool)
            shrink = shape[0] <= arr.shape[0] and shape[1] <= arr.shape[1]
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            small = cv2.resize(arr / top, (shape[1], shape[0]), interpolation=interp)
            return small >= 0.5
    if threshold is not None and top > 0:
        return arr >= threshold * top
    return arr > 0


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` with the same file endings.

    On normal exit the temporary file replaces ``path`` (``os.replace``) with the usual
    permissions of a new file (``0o666`` less the umask, not the owner-only ones of a
    temporary file); on an exception it is removed, so ``path`` is never left half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 or bool array (``(H, W)`` or ``(H, W, 3|4)``) as PNG, atomically.

    Bool arrays are written as 0/255.

    Raises
    ------
    FlipsegError
        Another dtype or shape.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise FlipsegError(f"write_png {path}: array dtype {array.dtype} must be uint8 or bool")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise FlipsegError(f"write_png {path}: shape {array.shape} must be (H, W) or (H, W, 3|4)")
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)
