"""Boxes from annotation tools: COCO JSON (CVAT, Label Studio) and MONAI/Decathlon datalists.

COCO (:func:`load_coco`)
    ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``,
    ``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` in pixels from the top-left
    corner, optional ``segmentation``) and ``categories`` (``id``, ``name``), as CVAT's
    "COCO 1.0" export (``annotations/instances_default.json`` beside ``images/``) and
    Label Studio's "COCO" export (``result.json`` beside ``images/``) write them.
    ``file_name`` is looked for under the images folder as given, then under its
    ``images/`` sub-folder, then by its base name in both (Label Studio writes
    ``images/<name>``, CVAT ``<name>``). A box becomes the half-open pixel box
    ``(round(x), round(y), round(x + w), round(y + h))``. Each annotation is one case;
    an image with several boxes gives cases ``<stem>-box1``, ``<stem>-box2`` ... (in
    file order), an image with one box the case ``<stem>``; images without a box are
    left out. ``category`` keeps the boxes of one category (name or id). A non-empty
    ``segmentation`` (polygon or RLE) becomes the case's ``mask``.

Datalist (:func:`load_datalist`)
    MONAI's ``load_decathlon_datalist`` layout: ``{"training": [{"image": "a.png",
    "label": "a_mask.png", "box": [x0, y0, x1, y1]}, ...], "validation": [...]}`` (or a
    plain list of such entries). ``box`` (the key is the ``box_key`` option) is one box or
    a list of boxes; ``box_mode`` says how to read them: ``xyxy`` (2D, the default) /
    ``xyzxyz`` (3D, the default: MONAI's standard mode ``x0, y0, z0, x1, y1, z1``),
    ``xywh`` / ``xyzwhd`` (corner + size) or ``ccwh`` / ``cccwhd`` (centre + size), in
    pixels (voxels), x the column. A string ``label`` is the mask file; a list ``label``
    (MONAI detection's class per box) is ignored. Paths are relative to the datalist's
    folder (or the data root). Several boxes: cases ``<stem>-box<K>`` as for COCO.

Samples carry ``file`` (the image path) and, for COCO, ``coco_image`` (the image entry),
``coco_annotation_id``, ``coco_category_id`` and ``category`` (its name), so results can be
written back against the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.data.folder import _lesion_part, image_stem, read_any_image, read_any_mask
from flipseg.data.sample import LABELS, case_entry, make_sample, try_case
from flipseg.errors import FlipsegError

__all__ = ["coco_box", "find_coco_file", "load_coco", "load_datalist", "read_coco"]

#: Where CVAT and Label Studio put the annotation file in their COCO exports.
COCO_FILES = ("annotations/instances_default.json", "result.json", "annotations.json")


def coco_box(bbox: Sequence[Any], where: str) -> Box:
    """COCO ``[x, y, w, h]`` -> the half-open pixel :class:`Box`
    ``(round(x), round(y), round(x + w), round(y + h))``."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise FlipsegError(f"{where}: bbox {bbox!r} is not [x, y, w, h]") from None
    box = Box(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    if not box.is_valid():
        raise FlipsegError(f"{where}: bbox {list(bbox)} is empty (w and h must be > 0)")
    return box


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FlipsegError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FlipsegError(f"{what} {path} is not valid JSON: {exc}") from None


def read_coco(path: str | Path) -> dict[str, Any]:
    """Read and check a COCO file: a dict with ``images`` and ``annotations`` lists.

    Raises
    ------
    FlipsegError
        Missing file, not JSON, or not COCO (the message names what is missing).
    """
    path = Path(path)
    doc = _read_json(path, "COCO file")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise FlipsegError(f"{path} is not a COCO file (needs \"images\" and \"annotations\" lists)")
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise FlipsegError(f"{path}: images[{i}] needs an \"id\" and a \"file_name\"")
    return doc


def find_coco_file(root: Path) -> Path:
    """The annotation file of a CVAT or Label Studio COCO export folder."""
    for name in COCO_FILES:
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json"))
    if len(found) == 1:
        return found[0]
    raise FlipsegError(f"no COCO file in {root} (looked for {', '.join(COCO_FILES)}); "
                       "give it with --data-opt annotations=FILE")


def _resolve_image(file_name: str, roots: Sequence[Path]) -> Path:
    name = Path(str(file_name).replace("\\", "/"))
    tries = []
    for root in roots:
        tries += [root / name, root / "images" / name, root / name.name, root / "images" / name.name]
    for t in tries:
        if t.exists():
            return t
    raise FlipsegError(f"image {file_name!r} not found under {', '.join(str(r) for r in roots)}")


def _decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray | None:
    """A COCO polygon list / RLE as a bool mask; None when there is none."""
    if not segm:
        return None
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
        if not polys:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    elif isinstance(segm, dict):
        rle = dict(segm)
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        return None
    return mask_utils.decode(rle).astype(bool)


def _label_of(name: str | None) -> str | None:
    text = (name or "").strip().lower()
    return text if text in LABELS else None


def _unique_stems(paths: dict[Any, Path]) -> dict[Any, str]:
    stems = {k: image_stem(p) for k, p in paths.items()}
    count: dict[str, int] = {}
    for s in stems.values():
        count[s] = count.get(s, 0) + 1
    return {k: (s if count[s] == 1 else f"{s}-{k}") for k, s in stems.items()}


def load_coco(root: str | Path, *, annotations: str | Path | None = None,
              category: str | int | None = None, frame: int | str | None = None,
              errors: list | None = None, lazy: bool = False) -> list[dict[str, Any]]:
    """Read a COCO box file and its images (see module docstring).

    Parameters
    ----------
    root : the images folder (or the export folder holding ``images/``), or the COCO
        file itself.
    annotations : the COCO file (default: looked for in ``root``, see
        :data:`COCO_FILES`); a relative path that does not exist is taken relative to
        ``root``.
    category : keep only the boxes of this category (name, case-insensitive, or id).
    frame : frame of multi-frame DICOM images (:func:`flipseg.data.folder.read_any_image`).
    errors : if a list, bad cases are appended as ``(case_id, message)`` and skipped.
    lazy : :class:`~flipseg.data.sample.LazySample` entries that read an image when used.

    Raises
    ------
    FlipsegError
        No or a bad COCO file, an unknown category (the message lists them).
    """
    root = Path(root)
    if root.is_file() and annotations is None:
        annotations, root = root, root.parent
    if annotations is None:
        if not root.is_dir():
            raise FlipsegError(f"dataset folder not found: {root}")
        ann_path = find_coco_file(root)
    else:
        ann_path = Path(annotations)
        if not ann_path.exists() and not ann_path.is_absolute() and (root / ann_path).exists():
            ann_path = root / ann_path
    doc = read_coco(ann_path)
    cats = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories", [])
            if isinstance(c, dict)}
    keep_cat = None
    if category is not None:
        want = str(category).strip().lower()
        keep_cat = {cid for cid, name in cats.items() if name.lower() == want or str(cid) == want}
        if not keep_cat:
            listed = ", ".join(f"{n} ({i})" for i, n in cats.items()) or "none"
            raise FlipsegError(f"category {category!r} is not in {ann_path.name}; categories: {listed}")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or ann.get("bbox") is None:
            continue
        if keep_cat is not None and ann.get("category_id") not in keep_cat:
            continue
        by_image.setdefault(ann.get("image_id"), []).append({**ann, "_index": k})
    roots = [root]
    for extra in (ann_path.parent, ann_path.parent.parent):
        if extra not in roots:
            roots.append(extra)
    images = {im["id"]: im for im in doc["images"]}
    for image_id in by_image:
        if image_id not in images:
            msg = f"{ann_path.name}: annotations name image_id {image_id!r}, which is not in images"
            if errors is None:
                raise FlipsegError(msg)
            errors.append((f"image {image_id}", msg))
    wanted = [i for i in images if i in by_image]
    paths: dict[Any, Path] = {}
    for image_id in wanted:
        im = images[image_id]
        found = try_case(str(im["file_name"]), lambda im=im: _resolve_image(im["file_name"], roots),
                         errors)
        if found is not None:
            paths[image_id] = found
    stems = _unique_stems(paths)
    samples: list[dict[str, Any]] = []
    for image_id in wanted:
        if image_id not in paths:
            continue

        def load(image_id=image_id):
            return _coco_samples(images[image_id], by_image[image_id], paths[image_id],
                                 stems[image_id], cats, frame, ann_path.name)

        if lazy:
            samples.extend(_lazy_coco(images[image_id], by_image[image_id], paths[image_id],
                                      stems[image_id], cats, load, ann_path.name, errors))
            continue
        got = try_case(stems[image_id], load, errors)
        if got:
            samples.extend(got)
    return samples


def _lazy_coco(im: dict[str, Any], anns: list[dict[str, Any]], path: Path, stem: str,
               cats: dict[Any, str], load: Any, where: str, errors: list | None) -> list[Any]:
    """The entries of one COCO image as :func:`_coco_samples` makes them, reading the image
    when used (raster files only; others are read now)."""
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
        return try_case(stem, load, errors) or []
    out = []
    several = len(anns) > 1
    for k, ann in enumerate(anns, start=1):
        cid = f"{stem}-box{k}" if several else stem
        try:
            box = coco_box(ann["bbox"], f"{where} annotation {ann.get('id', ann['_index'])}")
        except FlipsegError as exc:
            if errors is None:
                raise
            errors.append((cid, str(exc)))
            continue
        name = cats.get(ann.get("category_id"))
        known: dict[str, Any] = {
            "box": box, "label": _label_of(name), "patient_id": stem, "file": str(path),
            "spacing": (1.0, 1.0),
            "coco_image": {key: im[key] for key in ("id", "file_name", "width", "height")
                           if key in im},
            "coco_annotation_id": ann.get("id"), "coco_category_id": ann.get("category_id"),
            "category": name}
        if several:
            known["lesion_index"] = k
        keys = ["image", *known,
                *(["mask"] if ann.get("segmentation") else [])]
        got = case_entry(cid, lambda k=k: load()[k - 1], errors, lazy=True, known=known,
                         keys=keys, ndim=2, files=[path])
        if got is not None:
            out.append(got)
    return out


def _coco_samples(im: dict[str, Any], anns: list[dict[str, Any]], path: Path, stem: str,
                  cats: dict[Any, str], frame: int | str | None, where: str) -> list[dict]:
    image, spacing, meta = read_any_image(path, frame=frame)
    if image.ndim != 2:
        raise FlipsegError(f"{path.name}: COCO boxes are 2D, the image is {image.ndim}D "
                           "(pick a frame with --data-opt frame=K)")
    h, w = image.shape
    if im.get("width") and im.get("height") and (int(im["width"]), int(im["height"])) != (w, h):
        raise FlipsegError(f"{path.name} is {w}x{h} pixels, {where} says "
                           f"{im['width']}x{im['height']}")
    out = []
    for k, ann in enumerate(anns, start=1):
        box = coco_box(ann["bbox"], f"{where} annotation {ann.get('id', ann['_index'])}")
        mask = _decode_segmentation(ann.get("segmentation"), h, w)
        name = cats.get(ann.get("category_id"))
        extra: dict[str, Any] = {"file": str(path), "coco_image": {
            key: im[key] for key in ("id", "file_name", "width", "height") if key in im},
            "coco_annotation_id": ann.get("id"), "coco_category_id": ann.get("category_id"),
            "category": name}
        if meta is not None:
            extra["volume_meta"] = meta
        if len(anns) > 1:
            extra["lesion_index"] = k
        out.append(make_sample(
            image, mask=mask, box=box, label=_label_of(name), spacing=spacing,
            case_id=f"{stem}-box{k}" if len(anns) > 1 else stem, patient_id=stem, **extra))
    return out


_MODES_2D = ("xyxy", "xywh", "ccwh")
_MODES_3D = ("xyzxyz", "xyzwhd", "cccwhd")


def _datalist_box(values: Sequence[Any], mode: str | None, where: str) -> Box:
    try:
        v = [float(x) for x in values]
    except (TypeError, ValueError):
        raise FlipsegError(f"{where}: box {values!r} is not a list of numbers") from None
    if len(v) not in (4, 6):
        raise FlipsegError(f"{where}: box {list(values)} needs 4 (2D) or 6 (3D) numbers")
    modes = _MODES_2D if len(v) == 4 else _MODES_3D
    mode = (mode or modes[0]).lower()
    if mode not in modes:
        raise FlipsegError(f"{where}: box_mode {mode!r} does not fit a {len(v) // 2}D box; "
                           f"use one of {', '.join(modes)}")
    n = len(v) // 2
    if mode in ("xyxy", "xyzxyz"):
        lo, hi = v[:n], v[n:]
    elif mode in ("xywh", "xyzwhd"):
        lo, hi = v[:n], [a + b for a, b in zip(v[:n], v[n:])]
    else:
        lo = [c - s / 2 for c, s in zip(v[:n], v[n:])]
        hi = [c + s / 2 for c, s in zip(v[:n], v[n:])]
    r = [int(round(x)) for x in lo + hi]
    box = Box(r[0], r[1], r[2], r[3]) if n == 2 else Box(r[0], r[1], r[3], r[4], r[2], r[5])
    if not box.is_valid():
        raise FlipsegError(f"{where}: box {list(values)} ({mode}) is empty")
    return box


def load_datalist(root: str | Path, *, datalist: str | Path | None = None,
                  section: str = "training", box_key: str = "box",
                  box_mode: str | None = None, frame: int | str | None = None,
                  errors: list | None = None, resize_masks: bool = False) -> list[dict[str, Any]]:
    """Read a MONAI/Decathlon datalist JSON with boxes (see module docstring).

    Parameters
    ----------
    root : folder the paths are relative to, or the datalist file itself.
    datalist : the JSON file (default ``root/datalist.json``, else ``root/dataset.json``).
    section : ``training``, ``validation``, ``test`` or ``all`` (every list in the file).
    box_key : the entry key holding the box(es).
    box_mode : how boxes are written (``xyxy``/``xyzxyz`` by default).
    resize_masks : a ``label`` mask of another size than its image is resized by nearest
        neighbour (the sample lists it in ``mask_resized``) instead of being an error
        (:func:`flipseg.data.folder.read_any_mask`).

    Raises
    ------
    FlipsegError
        A missing or bad file, a section the file lacks (the message lists them), an
        entry without ``image``.
    """
    root = Path(root)
    if root.is_file() and datalist is None:
        datalist, root = root, root.parent
    if datalist is None:
        cands = [root / "datalist.json", root / "dataset.json"]
        path = next((c for c in cands if c.is_file()), cands[0])
    else:
        path = Path(datalist)
        if not path.exists() and not path.is_absolute() and (root / path).exists():
            path = root / path
    doc = _read_json(path, "datalist")
    if isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict):
        lists = {k: v for k, v in doc.items() if isinstance(v, list)}
        if section == "all":
            entries = [e for v in lists.values() for e in v]
        elif section in lists:
            entries = lists[section]
        else:
            raise FlipsegError(f"datalist {path.name} has no section {section!r}; sections: "
                               + (", ".join(lists) or "none"))
    else:
        raise FlipsegError(f"datalist {path} must hold a list or a dict of lists")
    base = root if datalist is not None and root.is_dir() else path.parent
    samples: list[dict[str, Any]] = []
    stems_seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{path.name} entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise FlipsegError(f"{where}: needs an object with an \"image\" path, got {entry!r}")
        stem = image_stem(entry["image"])
        stems_seen[stem] = stems_seen.get(stem, 0) + 1
        if stems_seen[stem] > 1:
            stem = f"{stem}-{stems_seen[stem]}"

        def load(entry=entry, where=where, stem=stem):
            return _datalist_samples(entry, base, stem, box_key, box_mode, frame, where,
                                     resize_masks)

        got = try_case(stem, load, errors)
        if got:
            samples.extend(got)
    return samples


def _datalist_samples(entry: dict[str, Any], base: Path, stem: str, box_key: str,
                      box_mode: str | None, frame: int | str | None, where: str,
                      resize_masks: bool = False) -> list[dict]:
    raw = entry.get(box_key)
    if raw is None or raw == []:
        return []
    boxes_raw = raw if isinstance(raw[0], (list, tuple)) else [raw]
    boxes = [_datalist_box(b, box_mode, where) for b in boxes_raw]
    path = base / entry["image"]
    image, spacing, meta = read_any_image(path, frame=frame)
    label = entry.get("label")
    notes: list[str] = []
    mask = read_any_mask([base / label], image.shape, resize=resize_masks, case_id=stem,
                         notes=notes) if isinstance(label, str) else None
    extra: dict[str, Any] = {"file": str(path)}
    if meta is not None:
        extra["volume_meta"] = meta
    if notes:
        extra["mask_resized"] = notes
    out = []
    for k, box in enumerate(boxes, start=1):
        part = _lesion_part(mask, box.validate(image.shape)) if mask is not None and len(boxes) > 1 \
            else mask
        out.append(make_sample(
            image, mask=part, box=box, spacing=spacing,
            label=_label_of(entry.get("class")) if isinstance(entry.get("class"), str) else None,
            case_id=f"{stem}-box{k}" if len(boxes) > 1 else stem,
            patient_id=str(entry.get("patient_id") or stem), **extra,
            **({"lesion_index": k} if len(boxes) > 1 else {})))
    return out
