"""Generic datasets: an ``images/`` folder or a JSON manifest.

Folder layout::

    root/
      images/   <stem>.png|.jpg|.jpeg|.bmp|.tif|.tiff|.nii|.nii.gz|.nrrd|.dcm, a DICOM
                file without ending (its whole name is its stem), or a sub-folder
                holding one DICOM series (read as a volume, the folder name its stem)
      masks/    optional: <stem>.<any of those>, <stem>_mask.<ext>,
                <stem>_mask_<k>.<ext> (all files of one image are OR-ed)
      boxes.csv optional: case_id,x0,y0,x1,y1[,z0,z1][,label]

``case_id`` in ``boxes.csv`` is the image stem. Several rows with the same
``case_id`` are several lesions: one sample per row, ``case_id`` suffixed
``#1``, ``#2`` ..., ``patient_id`` the image stem, and the mask restricted to
the connected components lying mostly inside that row's box. An image without
a row gets its box from its mask (or none). Mask files that match no image are
ignored.

Manifest (``root/manifest.json`` or a path to any ``.json`` file)::

    [{"image": "a.png", "mask": "a_mask.png", "box": [x0, y0, x1, y1],
      "label": "benign", "case_id": "a", "patient_id": "p1"}, ...]

Only ``image`` is required; ``mask`` may be a list of files (OR-ed), ``box``
a list of 4 (2D) or 6 (3D) numbers or a ``"x0,y0,x1,y1"`` string; paths are
relative to the manifest. Entries sharing a ``case_id`` are lesions of one
image, handled as repeated ``boxes.csv`` rows.

Volumes (``.nii``, ``.nii.gz``, ``.nrrd``) are read with
:func:`flipseg.data.volumes.read_volume`, DICOM files and series with
:mod:`flipseg.data.dicom` (option ``frame``: which frame of a multi-frame file,
from 0, or ``all``); their samples carry ``spacing`` and an extra
``volume_meta`` for writing masks back with the same geometry (DICOM: also the
source files). Every image's intensities are brought to 0-255 by
:func:`flipseg.data.io.normalize_intensities`.

A mask must have its image's size: another size is an error naming the case and both
sizes (:class:`~flipseg.errors.MaskShapeError`, which stops the reading, since it is fixed
by an option, not by skipping the case), unless option ``resize_masks`` (``--resize-masks``)
is set; then it is resized by nearest neighbour and the sample lists it in ``mask_resized``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.data.dicom import dicom_stem, is_dicom_file, is_dicom_series, read_dicom, read_dicom_series
from flipseg.data.io import IMAGE_EXTENSIONS, normalize_intensities, read_image, read_mask
from flipseg.data.sample import case_entry, make_sample, try_case
from flipseg.data.volumes import is_volume_path, read_volume, volume_stem
from flipseg.errors import FlipsegError, MaskShapeError

__all__ = ["image_stem", "load_folder", "load_images", "load_manifest", "read_any_image",
           "read_any_mask", "resize_mask_nearest"]

_MASK_SUFFIX = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def image_stem(path: str | Path) -> str:
    """The name of an image without its file ending: ``a.nii.gz`` -> ``a``, ``a.png`` ->
    ``a``, a DICOM file without ending or a series folder keeps its whole name."""
    path = Path(path)
    if is_volume_path(path):
        return volume_stem(path)
    if path.is_dir() or (path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path)):
        return dicom_stem(path) if path.is_file() else path.name
    return path.stem


_stem = image_stem


def _is_image_file(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return is_dicom_series(path)
    return path.is_file() and (path.suffix.lower() in IMAGE_EXTENSIONS or is_volume_path(path)
                               or is_dicom_file(path))


def _natural(text: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def read_any_image(path: str | Path, *, frame: int | str | None = None
                   ) -> tuple[np.ndarray, tuple[float, ...] | None, dict | None]:
    """Read a 2D image, a volume, a DICOM file or a DICOM series folder.

    Returns ``(array, spacing or None, meta or None)``: float32 on the 0-255 scale
    (:func:`flipseg.data.io.normalize_intensities`); ``meta`` for volumes and DICOM
    (:mod:`flipseg.data.volumes`, :mod:`flipseg.data.dicom`). ``frame`` picks the frame of
    a multi-frame DICOM file (from 0; default the first) or ``"all"`` for a volume; other
    files ignore it.
    """
    path = Path(path)
    if is_volume_path(path):
        array, spacing, meta = read_volume(path)
        stored = np.dtype(meta.get("dtype", "float32"))
        if np.issubdtype(stored, np.integer):
            array = array.astype(stored)
        return normalize_intensities(array), spacing, meta
    if path.is_dir():
        return read_dicom_series(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path):
        return read_dicom(path, frame=frame)
    return read_image(path), None, None


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def resize_mask_nearest(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A 2D or 3D bool mask resized to ``shape`` by nearest neighbour (pixel centres: output
    index ``i`` takes input index ``floor((i + 0.5) * n_in / n_out)``)."""
    m = np.asarray(mask, bool)
    shape = tuple(int(n) for n in shape)
    if len(shape) != m.ndim:
        raise FlipsegError(f"cannot resize a {m.ndim}D mask to shape {shape}")
    idx = [np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)
           for n_in, n_out in zip(m.shape, shape)]
    return m[np.ix_(*idx)]


def read_any_mask(paths: Sequence[str | Path], shape: Sequence[int], *, resize: bool = False,
                  case_id: str | None = None, notes: list[str] | None = None) -> np.ndarray:
    """OR of 2D mask images or mask volumes, each of the image's ``shape``.

    Parameters
    ----------
    paths : mask files (2D images for a 2D image; NIfTI/NRRD volumes for a volume)
    shape : the image's shape
    resize : a mask of another shape is resized to ``shape`` by nearest neighbour
        (:func:`resize_mask_nearest`) instead of being an error
    case_id : named in error messages
    notes : if a list, ``"<file> HxW -> HxW"`` is appended for each resized mask

    Raises
    ------
    MaskShapeError
        A mask of another shape than the image, without ``resize`` (the message names the
        case, the file and both shapes).
    FlipsegError
        A 2D mask image for a volume, an unreadable file.
    """
    shape = tuple(int(n) for n in shape)
    mask = np.zeros(shape, dtype=bool)
    who = f"case {case_id!r}: " if case_id is not None else ""
    for p in paths:
        p = Path(p)
        if is_volume_path(p):
            part = read_volume(p)[0] != 0
        else:
            if len(shape) != 2:
                raise FlipsegError(f"{who}mask {p} is a 2D image but the image is {len(shape)}D")
            part = read_mask(p)
        if part.shape != shape:
            if not resize:
                raise MaskShapeError(
                    f"{who}mask {p.name} is {_shape_text(part.shape)} but its image is "
                    f"{_shape_text(shape)}; --resize-masks (or --data-opt resize_masks=true) "
                    "resizes masks by nearest neighbour")
            if notes is not None:
                notes.append(f"{p.name} {_shape_text(part.shape)} -> {_shape_text(shape)}")
            part = resize_mask_nearest(part, shape)
        mask |= part
    return mask


def _lesion_part(mask: np.ndarray, box: Box) -> np.ndarray:
    """Connected components of ``mask`` lying mostly inside ``box`` (else mask & box)."""
    inside = box.clip(mask.shape).to_mask(mask.shape)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if n == 0:
        return mask.copy()
    total = np.bincount(labels.ravel(), minlength=n + 1)
    within = np.bincount(labels[inside], minlength=n + 1)
    keep = within * 2 > total
    keep[0] = False
    part = keep[labels]
    return part if part.any() else mask & inside


def _parse_box(values: Sequence[Any], where: str) -> Box:
    try:
        nums = [int(round(float(v))) for v in values]
    except (TypeError, ValueError):
        raise FlipsegError(f"{where}: box {list(values)} is not a list of numbers") from None
    if len(nums) not in (4, 6):
        raise FlipsegError(f"{where}: box {list(values)} needs 4 (2D) or 6 (3D) numbers")
    box = Box(*nums)
    if not box.is_valid():
        raise FlipsegError(f"{where}: box {list(values)} is empty (need x0<x1, y0<y1[, z0<z1])")
    return box


def _label(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def _build(
    case_id: str,
    image_path: Path,
    mask_paths: Sequence[Path],
    lesions: list[tuple[Box | None, str | None]],
    patient_id: str | None,
    spacing: Sequence[float] | None,
    frame: int | str | None = None,
    resize_masks: bool = False,
) -> list[dict[str, Any]]:
    """Samples of one image: one per lesion (box, label), or one without a box."""
    image, vol_spacing, meta = read_any_image(image_path, frame=frame)
    notes: list[str] = []
    mask = read_any_mask(mask_paths, image.shape, resize=resize_masks, case_id=case_id,
                         notes=notes) if mask_paths else None
    extra: dict[str, Any] = {"file": str(image_path)}
    if meta is not None:
        extra["volume_meta"] = meta
    if notes:
        extra["mask_resized"] = notes
    sp = spacing if spacing is not None else vol_spacing
    if not lesions:
        lesions = [(None, None)]
    several = len(lesions) > 1
    out = []
    for k, (box, label) in enumerate(lesions, start=1):
        m = mask
        if several and mask is not None and box is not None:
            m = _lesion_part(mask, box)
        if box is not None:
            box = box.validate(image.shape)
        out.append(make_sample(
            image, mask=m, box=box, label=label, spacing=sp,
            case_id=f"{case_id}#{k}" if several else case_id,
            patient_id=patient_id or case_id, **extra,
            **({"lesion_index": k} if several else {}),
        ))
    return out


#: Files whose image is 2D and whose reader adds no key of its own (no spacing or DICOM
#: geometry): an index of them knows every key of their samples without reading them.
_RASTER = (".png", ".jpg", ".jpeg", ".bmp")


def _entries(case_id: str, load: Callable[[], list[dict[str, Any]]],
             lesions: list[tuple[Box | None, str | None]], errors: list | None, *,
             lazy: bool, image_path: Path, mask_paths: Sequence[Path],
             patient_id: str | None, resize_masks: bool) -> list[Any]:
    """The samples of one image as :func:`_build` makes them: loaded now, or (``lazy``) as
    :class:`LazySample` entries, one per lesion, that read the image when used."""
    if not lazy:
        return try_case(case_id, load, errors) or []
    les = lesions or [(None, None)]
    several = len(les) > 1
    raster = image_path.suffix.lower() in _RASTER and not resize_masks
    out = []
    for k, (box, label) in enumerate(les, start=1):
        known: dict[str, Any] = {"box": box, "label": label,
                                 "patient_id": patient_id or case_id, "file": str(image_path)}
        if several:
            known["lesion_index"] = k
        if raster:
            known["spacing"] = (1.0, 1.0)
        keys = ["image", *known, *(["mask"] if mask_paths else [])] if raster else None
        got = case_entry(f"{case_id}#{k}" if several else case_id,
                         lambda load=load, k=k: load()[k - 1], errors, lazy=True, known=known,
                         keys=keys, ndim=2 if raster else None,
                         files=[] if image_path.is_dir() else [image_path, *mask_paths])
        if got is not None:
            out.append(got)
    return out


def _read_boxes_csv(path: Path, errors: list | None) -> dict[str, list[tuple[Box, str | None]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("case_id", "x0", "y0", "x1", "y1") if c not in fields]
        if missing:
            raise FlipsegError(
                f"{path}: header {','.join(fields) or '(empty)'} lacks {','.join(missing)} "
                "(expected case_id,x0,y0,x1,y1[,z0,z1][,label])"
            )
        rows: dict[str, list[tuple[Box, str | None]]] = {}
        for line, raw in enumerate(reader, start=2):
            if None in raw:  # more fields than the header names
                raise FlipsegError(f"{path} line {line} has more fields than its header "
                                   f"{','.join(fields)}")
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            cid = row["case_id"]
            keys = ["x0", "y0", "x1", "y1"]
            if row.get("z0") or row.get("z1"):
                keys += ["z0", "z1"]

            def parse(row=row, keys=keys, line=line):
                return _parse_box([row.get(k, "") for k in keys], f"{path.name} line {line}")

            box = try_case(cid or f"line {line}", parse, errors)
            if box is not None:
                rows.setdefault(cid, []).append((box, _label(row.get("label"))))
    return rows


def load_folder(root: str | Path, *, errors: list | None = None,
                frame: int | str | None = None, resize_masks: bool = False,
                lazy: bool = False) -> list[dict[str, Any]]:
    """Read a generic dataset folder (``images/`` [+ ``masks/``] [+ ``boxes.csv``]) or manifest.

    ``root`` may be a folder with ``manifest.json`` (read with
    :func:`load_manifest`), a ``.json`` file, or a folder with ``images/``.
    Images are returned in natural file-name order. ``errors``: if a list,
    unreadable cases are appended as ``(case_id, message)`` and skipped; if
    None they raise. ``frame``: see :func:`read_any_image`. ``resize_masks``: a mask of
    another size than its image is resized by nearest neighbour (the sample then carries
    ``mask_resized``, a list of ``"<file> HxW -> HxW"``) instead of being an error.

    Raises
    ------
    MaskShapeError
        A mask of another size than its image (without ``resize_masks``), even when
        ``errors`` is a list.
    FlipsegError
        Missing folder, no ``images/`` or manifest, a bad ``boxes.csv`` header,
        two images with the same stem.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".json":
        return load_manifest(root, errors=errors, frame=frame, resize_masks=resize_masks,
                             lazy=lazy)
    if not root.is_dir():
        raise FlipsegError(f"dataset folder not found: {root}")
    if (root / "manifest.json").is_file():
        return load_manifest(root / "manifest.json", errors=errors, frame=frame,
                             resize_masks=resize_masks, lazy=lazy)
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise FlipsegError(f"dataset folder {root} has neither images/ nor manifest.json")
    boxes = root / "boxes.csv"
    return load_images(image_dir, boxes=boxes if boxes.is_file() else None,
                       masks=root / "masks", errors=errors, frame=frame, resize_masks=resize_masks,
                       lazy=lazy)


def load_images(images: str | Path, *, boxes: str | Path | None = None,
                masks: str | Path | None = None, errors: list | None = None,
                frame: int | str | None = None, resize_masks: bool = False,
                lazy: bool = False) -> list[dict[str, Any]]:
    """The images of one folder, with their boxes from a ``boxes.csv`` file (anywhere) and
    their masks from a masks folder (optional): the ``images/`` part of :func:`load_folder`.

    Image files are the folder's files with an image, volume or DICOM ending, DICOM files
    without ending, and sub-folders holding one DICOM series (volumes). ``boxes``: CSV with
    ``case_id,x0,y0,x1,y1[,z0,z1][,label]``, ``case_id`` the image stem
    (:func:`image_stem`). Samples carry ``file`` (the image path). ``resize_masks``: as in
    :func:`load_folder`.

    Raises
    ------
    FlipsegError
        A missing folder, a bad ``boxes.csv`` header, two images with the same stem.
    """
    image_dir = Path(images)
    if not image_dir.is_dir():
        raise FlipsegError(f"image folder not found: {image_dir}")
    found: dict[str, Path] = {}
    for f in sorted(image_dir.iterdir()):
        if _is_image_file(f):
            stem = _stem(f)
            if stem in found:
                raise FlipsegError(
                    f"two images share the name {stem!r}: {found[stem].name}, {f.name}"
                )
            found[stem] = f
    mask_files: dict[str, list[Path]] = {}
    if masks is not None and Path(masks).is_dir():
        for f in sorted(Path(masks).iterdir()):
            if not _is_image_file(f):
                continue
            stem = _stem(f)
            m = _MASK_SUFFIX.match(stem)
            if stem not in found and m and m["stem"] in found:
                stem = m["stem"]
            if stem in found:
                mask_files.setdefault(stem, []).append(f)
    rows: dict[str, list[tuple[Box, str | None]]] = {}
    if boxes is not None:
        boxes = Path(boxes)
        if not boxes.is_file():
            raise FlipsegError(f"boxes file not found: {boxes}")
        rows = _read_boxes_csv(boxes, errors)
        for cid in rows:
            if cid not in found:
                msg = f"{boxes.name} names case {cid!r} but {image_dir} has no such image"
                if errors is None:
                    raise FlipsegError(msg)
                errors.append((cid, msg))
    samples: list[dict[str, Any]] = []
    for stem in sorted(found, key=_natural):
        lesions = rows.get(stem, [])

        def load(stem=stem, lesions=lesions):
            return _build(stem, found[stem], mask_files.get(stem, []), lesions, None, None,
                          frame, resize_masks)

        samples.extend(_entries(stem, load, lesions, errors, lazy=lazy, image_path=found[stem],
                                mask_paths=mask_files.get(stem, []), patient_id=None,
                                resize_masks=resize_masks))
    return samples


def load_manifest(path: str | Path, *, errors: list | None = None,
                  frame: int | str | None = None, resize_masks: bool = False,
                  lazy: bool = False) -> list[dict[str, Any]]:
    """Read a JSON manifest (see module docstring); entries in file order. ``resize_masks``:
    as in :func:`load_folder`."""
    path = Path(path)
    if not path.is_file():
        raise FlipsegError(f"manifest not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FlipsegError(f"manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise FlipsegError(
            f"manifest {path} must hold a list of entries, got {type(entries).__name__}"
        )
    base = path.parent
    cases: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        where = f"{path.name} entry {i}"
        if not isinstance(entry, dict) or not entry.get("image"):
            raise FlipsegError(f"{where}: needs an object with an \"image\" path, got {entry!r}")
        image = base / str(entry["image"])
        cid = str(entry.get("case_id") or _stem(image))
        mask_field = entry.get("mask")
        mask_list = [mask_field] if isinstance(mask_field, str) else list(mask_field or [])
        box = entry.get("box")

        def parse(box=box, where=where):
            if box is None:
                return None
            return _parse_box(box.split(",") if isinstance(box, str) else box, where)

        case = cases.setdefault(cid, {"image": image, "masks": [], "lesions": [],
                                      "patient_id": entry.get("patient_id"),
                                      "spacing": entry.get("spacing")})
        if case["image"] != image:
            raise FlipsegError(f"{where}: case_id {cid!r} already used for {case['image']}")
        for m in mask_list:
            mp = base / str(m)
            if mp not in case["masks"]:
                case["masks"].append(mp)
        parsed = try_case(cid, parse, errors)
        if parsed is not None or box is None:
            case["lesions"].append((parsed, _label(entry.get("label"))))
    samples: list[dict[str, Any]] = []
    for cid, case in cases.items():
        lesions = [les for les in case["lesions"] if les[0] is not None]
        if not lesions:  # no box: keep the label of the (first) entry
            lesions = [(None, case["lesions"][0][1])] if case["lesions"] else []

        def load(cid=cid, case=case, lesions=lesions):
            return _build(cid, case["image"], case["masks"], lesions, case["patient_id"],
                          case["spacing"], frame, resize_masks)

        samples.extend(_entries(cid, load, lesions, errors,
                                lazy=lazy and case["spacing"] is None, image_path=case["image"],
                                mask_paths=case["masks"], patient_id=case["patient_id"],
                                resize_masks=resize_masks))
    return samples
