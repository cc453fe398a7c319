"""``flipseg label``: a mask for every box of a folder, a COCO file or a DICOM folder, written
for other tools (``--format png,nifti,coco,dicom-seg,nnunet``).

Inputs (one of):

- ``--images DIR --boxes FILE``: ``FILE`` a COCO JSON (CVAT, Label Studio), a MONAI /
  Decathlon datalist JSON or a ``boxes.csv`` (``case_id,x0,y0,x1,y1[,z0,z1][,label]``,
  ``case_id`` the image's file name without ending); ``DIR`` holds the images (PNG, JPEG,
  TIFF, NIfTI, NRRD, DICOM files with or without ending, DICOM series sub-folders);
- ``--images DIR`` alone: a folder dataset (``images/`` + ``boxes.csv``, or a manifest), a
  folder with its own ``boxes.csv``, or a CVAT / Label Studio COCO export folder;
- ``--dataset NAME`` with the usual data options (e.g. ``--dataset coco --data-root DIR
  --data-opt annotations=FILE``).

``--data-opt frame=K|all`` picks the frame of multi-frame DICOM files, ``category=NAME``
the COCO category. Everything goes under ``--out`` with names of its own (see
``docs/formats.md``)::

    done.json              what is done: settings, and per box its box and cached mask
    done/<case>.npz        the cached mask of every box (re-runs skip these boxes)
    png/<case>.png         0/255, one per box; png/merged/<image>.png one per image
    nifti/<case>.nii.gz    with the image's geometry; nifti/merged/<image>.nii.gz
    coco.json              COCO with RLE masks (ids of the input COCO file kept)
    dicom-seg/<image>.seg.dcm   one DICOM-SEG per source image, one segment per box
    nnunet/Dataset<ID>_<Name>/  imagesTr, labelsTr, dataset.json
    errors.csv             the boxes that failed (exit code 3), the others are written

``--out`` is checked before any work: a file, a folder that cannot be written, or a folder
that is or holds an input is a one-line error.

Scale-out (``docs/scale.md``): ``--workers N`` segments the boxes in N processes and
``--engine ray`` on a Ray cluster (each worker loads the models once; the masks are those
of one process); ``--num-parts K --part-id I`` segments only part I of K (whole images)
into ``done-part-I-of-K.json`` and ``errors-part-I-of-K.csv``, and the run without them
then writes the formats from every part's masks. ``--device`` puts the networks on the GPU.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import io
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flipseg.errors import FlipsegError

__all__ = ["FORMATS", "parse_formats", "read_label_cases", "run_label"]

FORMATS = ("png", "nifti", "coco", "dicom-seg", "nnunet")
MANIFEST = "done.json"
#: Boxes segmented per call of the segmenter (the manifest is saved after each).
CHUNK = 16
_UNSAFE = re.compile(r"[^\w .()+#=,-]+")


def parse_formats(text: str) -> list[str]:
    """``"png,coco"`` -> ``["png", "coco"]``; an unknown name is a one-line error."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise FlipsegError(f"--format {text!r}: use one or several of {', '.join(FORMATS)} "
                           "(comma-separated)")
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ inputs
def _call_loader(loader: Callable[..., list], what: str, opts: dict[str, Any],
                 *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    params = inspect.signature(loader).parameters
    valid = sorted(p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p not in kwargs
                   and p != "errors")
    for key in opts:
        if key not in valid:
            raise FlipsegError(f"--data-opt {key}: not an option of {what}; options: "
                               + (", ".join(valid) or "none"))
    return loader(*args, **kwargs, **opts)


def _json_kind(path: Path) -> str:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FlipsegError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
        return "coco"
    return "datalist"


def _from_files(images: Path, boxes: Path | None, opts: dict[str, Any],
                errors: list) -> list[dict[str, Any]]:
    from flipseg.data.coco import find_coco_file, load_coco, load_datalist
    from flipseg.data.folder import load_folder, load_images

    if boxes is not None:
        if not images.is_dir():
            raise FlipsegError(f"--images {images}: give the folder of the images with --boxes")
        suffix = boxes.suffix.lower()
        if suffix == ".csv":
            return _call_loader(load_images, "a boxes.csv input", opts, images, boxes=boxes,
                                errors=errors, lazy=True)
        if suffix == ".json":
            if _json_kind(boxes) == "coco":
                return _call_loader(load_coco, "a COCO input", opts, images, annotations=boxes,
                                    errors=errors, lazy=True)
            return _call_loader(load_datalist, "a datalist input", opts, images,
                                datalist=boxes, errors=errors)
        raise FlipsegError(f"--boxes {boxes}: give a COCO .json, a datalist .json or a "
                           "boxes .csv")
    if images.is_file() and images.suffix.lower() == ".json":
        if _json_kind(images) == "coco":
            return _call_loader(load_coco, "a COCO input", opts, images, errors=errors, lazy=True)
        return _call_loader(load_datalist, "a datalist input", opts, images, errors=errors)
    if not images.is_dir():
        raise FlipsegError(f"--images {images}: give a folder (or a COCO / datalist .json)")
    has_csv = (images / "boxes.csv").is_file()
    if (images / "manifest.json").is_file() or ((images / "images").is_dir() and has_csv):
        return _call_loader(load_folder, "a folder dataset", opts, images, errors=errors,
                            lazy=True)
    if has_csv:
        return _call_loader(load_images, "a boxes.csv input", opts, images,
                            boxes=images / "boxes.csv", errors=errors, lazy=True)
    try:
        coco = find_coco_file(images)
    except FlipsegError:
        coco = None
    if coco is not None:
        return _call_loader(load_coco, "a COCO input", opts, images, annotations=coco,
                            errors=errors, lazy=True)
    if (images / "images").is_dir():  # boxes from the masks/ folder
        return _call_loader(load_folder, "a folder dataset", opts, images, errors=errors,
                            lazy=True)
    raise FlipsegError(f"--images {images} has no boxes (no boxes.csv, manifest or COCO file): "
                       "give them with --boxes FILE")


def read_label_cases(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The cases (one per box) named by ``--images``/``--boxes`` or ``--dataset``, and the
    cases that could not be read as ``(case_id, message)``. Images without a box are left
    out (and counted in a printed line)."""
    from flipseg.runs import load_cases, parse_data_opts

    errors: list[tuple[str, str]] = []
    if args.dataset:
        if args.images or args.boxes:
            raise FlipsegError("give --images [--boxes] or --dataset, not both")
        cases, errors, _name = load_cases(args, lazy=True)
    else:
        if not args.images:
            raise FlipsegError("give --images FOLDER [--boxes FILE] or --dataset NAME")
        images = Path(args.images)
        if not images.exists():
            raise FlipsegError(f"--images not found: {images}")
        boxes = Path(args.boxes) if args.boxes else None
        if boxes is not None and not boxes.is_file():
            raise FlipsegError(f"--boxes file not found: {boxes}")
        if args.fold is not None or (args.part or "all") != "all":
            raise FlipsegError("--fold and --split go with --dataset")
        opts = parse_data_opts(args.data_opt or [])
        cases = _from_files(images, boxes, opts, errors)
        if args.limit is not None:
            if args.limit < 1:
                raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
            cases = cases[: args.limit]
    boxed = [c for c in cases if c.get("box") is not None]
    if len(boxed) < len(cases):
        print(f"{len(cases) - len(boxed)} image(s) without a box left out")
    if not boxed and not errors:
        raise FlipsegError("no box to label in the input")
    return boxed, errors


def _input_files(case: dict[str, Any]) -> list[str]:
    files = [case["file"]] if case.get("file") else []
    meta = case.get("volume_meta") or {}
    return files + list(meta.get("files") or [])


# ------------------------------------------------------------------ names
def _safe(name: str) -> str:
    """A file name for a case or an image: odd characters replaced, long names shortened
    (with a hash of the whole name, so two names never meet)."""
    text = _UNSAFE.sub("_", str(name)).strip(" .") or "case"
    if len(text) > 120 or text != str(name):
        text = f"{text[:110]}-{hashlib.sha1(str(name).encode('utf-8')).hexdigest()[:8]}"
    return text


def _image_key(case: dict[str, Any]) -> tuple[str, Any]:
    meta = case.get("volume_meta") or {}
    return (str(case.get("file") or case["case_id"]), meta.get("frame"))


def _image_names(cases: list[dict[str, Any]]) -> dict[tuple[str, Any], str]:
    """One file name per image (cases sharing an image share it)."""
    from flipseg.data.folder import image_stem

    names: dict[tuple[str, Any], str] = {}
    used: set[str] = set()
    for c in cases:
        key = _image_key(c)
        if key in names:
            continue
        base = image_stem(c["file"]) if c.get("file") else c["case_id"]
        if key[1] is not None and (c.get("volume_meta") or {}).get("format") == "dicom":
            base = f"{base}-frame{key[1]}"
        name, k = _safe(base), 2
        while name in used:
            name, k = f"{_safe(base)}-{k}", k + 1
        used.add(name)
        names[key] = name
    return names


# ------------------------------------------------------------------ manifest
def _box_list(box: Any) -> list[int]:
    return [int(v) for v in box.as_tuple()]


def _settings(args: argparse.Namespace, method: str) -> dict[str, Any]:
    from flipseg.commands import _spec_extras

    return {"method": method, "model": str(args.model) if args.model else None,
            "set": sorted(args.set or []), "options": {k: str(v) for k, v in _spec_extras(args).items()},
            "seed": int(args.seed)}


def _manifest_name(part: tuple[int, int] | None) -> str:
    """``done.json``, or ``done-part-I-of-K.json`` for part I of K (``--num-parts``)."""
    return MANIFEST if part is None else f"done-part-{part[1]}-of-{part[0]}.json"


def _read_one_manifest(path: Path, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise FlipsegError(f"{path} is not valid JSON ({exc}); move it aside to start again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), dict):
        raise FlipsegError(f"{path} is not a flipseg label manifest; give another --out")
    if doc.get("settings") != settings:
        old = doc.get("settings") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in settings
                         if old.get(k) != settings[k])
        raise FlipsegError(f"--out {out} holds masks made with other settings ({diff}); "
                           "give another --out")
    return doc


def _read_manifest(out: Path, settings: dict[str, Any],
                   part: tuple[int, int] | None = None) -> dict[str, Any]:
    """What is done in ``out``: ``done.json`` and every part's ``done-part-I-of-K.json``
    merged (the run without ``--num-parts`` after the parts reuses their masks)."""
    files = [out / MANIFEST] + sorted(out.glob("done-part-*-of-*.json"))
    own = out / _manifest_name(part)
    manifest: dict[str, Any] = {"settings": settings, "cases": {}}
    for path in [f for f in files if f != own] + [own]:  # this run's own file last
        if path.is_file():
            manifest["cases"].update(_read_one_manifest(path, out, settings)["cases"])
    return manifest


def _save_manifest(out: Path, manifest: dict[str, Any], part: tuple[int, int] | None = None) -> None:
    from flipseg.io_utils import atomic_write_text

    atomic_write_text(out / _manifest_name(part), json.dumps(manifest, indent=1))


def _is_done(out: Path, manifest: dict[str, Any], case: dict[str, Any], parts: bool) -> bool:
    entry = manifest["cases"].get(case["case_id"])
    return bool(entry and entry.get("box") == _box_list(case["box"])
                and (out / entry["mask"]).is_file() and (not parts or entry.get("disagree")))


def _save_case(out: Path, manifest: dict[str, Any], case: dict[str, Any], mask: np.ndarray,
               disagree: np.ndarray | None, quality: float) -> None:
    from flipseg.io_utils import atomic_save

    cid = case["case_id"]
    entry = manifest["cases"].get(cid)
    rel = entry["mask"] if entry else None
    if rel is None:
        taken = {e["mask"] for e in manifest["cases"].values()}
        rel, k = f"done/{_safe(cid)}.npz", 2
        while rel in taken:
            rel, k = f"done/{_safe(cid)}-{k}.npz", k + 1
    arrays = {"mask": np.asarray(mask, bool)}
    if disagree is not None:
        arrays["disagree"] = np.asarray(disagree, bool)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_save(out / rel, write)
    manifest["cases"][cid] = {"box": _box_list(case["box"]), "file": case.get("file"),
                              "mask": rel, "disagree": disagree is not None,
                              "quality": round(float(quality), 4)}


def _load_case(out: Path, manifest: dict[str, Any], cid: str) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(out / manifest["cases"][cid]["mask"]) as z:
        return z["mask"].astype(bool), (z["disagree"].astype(bool) if "disagree" in z else None)


# ------------------------------------------------------------------ segmenting
def _segment_chunk(seg: Any, method: str, chunk: list[dict[str, Any]], seed: int,
                   parts: bool) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
    """Each box's mask, the voters' disagreement (with ``parts``) and its quality score
    (:mod:`flipseg.qc`: from the voters when the method has them)."""
    from flipseg.qc import quality_features, quality_score

    ims, bxs = [c["image"] for c in chunk], [c["box"] for c in chunk]
    if hasattr(seg, "vote_parts"):
        got = seg.vote_parts(ims, bxs, seed=seed)
        masks = [np.asarray(m, bool) for m in got[method]]
        voters = [[np.asarray(got[k][i], bool) for k in got if k != method] for i in range(len(chunk))]
    else:
        masks = [np.asarray(m, bool) for m in seg.segment_many(ims, bxs, seed=seed)]
        voters = [[] for _ in chunk]
    out = []
    for im, b, m, vs in zip(ims, bxs, masks, voters):
        disagree = None
        if parts:
            stack = np.stack(vs)
            disagree = stack.any(0) & ~stack.all(0)
        q = float(quality_score(quality_features(im, b, m, vs))) if m.shape == np.shape(im) else 0.0
        out.append((m, disagree, q))
    return out


def _error_words(exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, FlipsegError) else f"{type(exc).__name__}: {exc}"
    return msg.splitlines()[0] if msg.strip() else type(exc).__name__


def label_work(state: dict[str, Any], chunk: list[dict[str, Any]], *, method: str, seed: int,
               parts: bool) -> list[tuple[np.ndarray, np.ndarray | None, float] | str]:
    """In a worker (:mod:`flipseg.engines`): each box's ``(mask, disagreement, quality)``, or
    the one-line error of a box that failed. A chunk that fails is run again box by box so a
    single bad box cannot sink the others."""
    seg = state[method]
    try:
        return list(_segment_chunk(seg, method, chunk, seed, parts))
    except Exception:  # noqa: BLE001 - retried one by one below
        pass
    out: list[Any] = []
    for c in chunk:
        try:
            out.append(_segment_chunk(seg, method, [c], seed, parts)[0])
        except Exception as exc:  # noqa: BLE001 - reported per box, the run goes on
            out.append(_error_words(exc))
    return out


def _work_case(c: dict[str, Any]) -> Any:
    """What a worker needs of a case (not its mask, files or DICOM geometry). A lazy case
    goes as it is: it is read in the worker's own process, or where it is pickled for
    another process, when its chunk runs (not all at once up front)."""
    from flipseg.data.sample import LazySample

    if isinstance(c, LazySample):
        return c
    return {"case_id": c["case_id"], "image": c["image"], "box": c["box"]}


def _run_boxes(engine: Any, method: str, todo: list[dict[str, Any]], out: Path,
               manifest: dict[str, Any], seed: int, parts: bool, progress: bool,
               errors: list[tuple[str, str]], part: tuple[int, int] | None = None) -> None:
    """Segment ``todo`` on ``engine`` (:func:`label_work`), ``CHUNK`` boxes a call (fewer
    with several workers, so that each gets some), saving each box's mask and the manifest
    as the chunks finish (in any order)."""
    from functools import partial

    from tqdm.auto import tqdm

    from flipseg.commands import _chunk_size

    size = _chunk_size(len(todo), engine.workers, CHUNK)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    work = partial(label_work, method=method, seed=seed, parts=parts)
    bar = tqdm(total=len(todo), desc=f"label ({method})", unit="box", disable=not progress)
    for res in engine.map(work, [[_work_case(c) for c in ch] for ch in chunks]):
        chunk = chunks[res.index]
        results = res.value if res.error is None else [_error_words(res.error)] * len(chunk)
        for c, got in zip(chunk, results):
            if isinstance(got, str):
                errors.append((c["case_id"], got))
                tqdm.write(f"skipped case {c['case_id']}: {got}")
                continue
            shape = _image_shape(c)
            if got[0].shape != shape:
                errors.append((c["case_id"], f"mask shape {got[0].shape} != image shape "
                                             f"{shape}"))
                continue
            _save_case(out, manifest, c, got[0], got[1], got[2])
        for c in chunk:
            _release(c)
        _save_manifest(out, manifest, part)
        bar.update(len(chunk))
    bar.close()


def _image_shape(c: Any) -> tuple[int, ...]:
    """A case's image shape (a lazy case is read, or found in the cache)."""
    return tuple(np.shape(c["image"]))


def _release(c: Any) -> None:
    """Let a lazy case's image go (it is read again if needed)."""
    release = getattr(c, "release", None)
    if release is not None:
        release()


# ------------------------------------------------------------------ writing
class _Groups(dict):
    """Image key -> its boxes' cases; their masks are read by ``load(case) -> (mask,
    disagreement)`` one image at a time (:meth:`items`), so writing 100,000 masks holds one
    image's at a time (``flipseg label`` reads them from ``done/``, ``serve`` from its
    store)."""

    def __init__(self, load: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]) -> None:
        super().__init__()
        self.load = load

    def add(self, key: Any, case: Any) -> None:
        self.setdefault(key, []).append(case)

    def items(self):  # type: ignore[override]
        for key, cases in super().items():
            yield key, [(c, *self.load(c)) for c in cases]

    def cases(self) -> list[Any]:
        return [c for cs in super().values() for c in cs]


def _merged(items: list[tuple[dict, np.ndarray, np.ndarray | None]]) -> np.ndarray:
    return np.logical_or.reduce([m for _c, m, _d in items])


def _write_files(out: Path, fmt: str, groups: dict, names: dict, errors: list) -> None:
    from flipseg.export.masks import write_mask_nifti, write_mask_png

    for key, items in groups.items():
        for c, m, _d in items:
            try:
                if fmt == "png":
                    write_mask_png(out / "png" / f"{_safe(c['case_id'])}.png", m)
                else:
                    write_mask_nifti(out / "nifti" / f"{_safe(c['case_id'])}.nii.gz", m,
                                     spacing=c.get("spacing"), meta=c.get("volume_meta"))
            except FlipsegError as exc:
                errors.append((c["case_id"], f"{fmt}: {exc}"))
        c0 = items[0][0]
        merged = _merged(items)
        if fmt == "png":
            write_mask_png(out / "png" / "merged" / f"{names[key]}.png", merged)
        else:
            write_mask_nifti(out / "nifti" / "merged" / f"{names[key]}.nii.gz", merged,
                             spacing=c0.get("spacing"), meta=c0.get("volume_meta"))


def _write_coco(out: Path, groups: "_Groups", names: dict, method: str,
                images_root: Path | None) -> None:
    from flipseg.export.coco import coco_annotation, write_coco

    images, anns, cats = [], [], {}
    every = groups.cases()
    from_coco = all(c.get("coco_image") for c in every)
    used_ids = {c.get("coco_annotation_id") for c in every}
    next_id = max([i for i in used_ids if isinstance(i, int)] + [0]) + 1
    for n, (key, items) in enumerate(groups.items(), start=1):
        c0 = items[0][0]
        h, w = np.shape(items[0][1])  # the mask has the image's shape
        if from_coco:
            entry = dict(c0["coco_image"])
        else:
            file = Path(c0["file"]) if c0.get("file") else Path(f"{names[key]}.png")
            if images_root is not None and c0.get("file"):
                try:
                    name = file.resolve().relative_to(images_root.resolve()).as_posix()
                except ValueError:
                    name = file.name
            else:
                name = file.name
            entry = {"id": n, "file_name": name}
        entry.update({"width": int(w), "height": int(h)})
        images.append(entry)
        for c, m, _d in items:
            cat = c.get("coco_category_id") if from_coco else 1
            cats.setdefault(cat, c.get("category") if from_coco else "lesion")
            ann_id = c.get("coco_annotation_id") if from_coco else None
            if not isinstance(ann_id, int):
                ann_id, next_id = next_id, next_id + 1
            attrs = {"box": _box_list(c["box"]), "case_id": c["case_id"], "method": method,
                     "quality": c.get("quality")}
            if c.get("label"):
                attrs["label"] = c["label"]
            anns.append(coco_annotation(m, ann_id=ann_id, image_id=entry["id"], category_id=cat,
                                        attributes=attrs))
    categories = [{"id": i, "name": name or "lesion", "supercategory": ""}
                  for i, name in sorted(cats.items(), key=lambda kv: str(kv[0]))]
    write_coco(out / "coco.json", images, anns, categories,
               description=f"masks from boxes by flipseg label ({method})")


def _write_dicom_seg(out: Path, groups: dict, names: dict, method: str, errors: list) -> None:
    from flipseg import __version__
    from flipseg.export.dicom_seg import write_dicom_seg

    for key, items in groups.items():
        c0 = items[0][0]
        meta = c0.get("volume_meta") or {}
        try:
            write_dicom_seg(out / "dicom-seg" / f"{names[key]}.seg.dcm", meta["files"],
                            [m for _c, m, _d in items],
                            labels=[f"{c['case_id']} (quality {c.get('quality', 0):.2f})"
                                    for c, _m, _d in items],
                            frame=meta.get("frame"),
                            slice_thickness=float((c0.get("spacing") or (1.0,))[0]),
                            algorithm=f"flipseg {method}", version=__version__)
        except FlipsegError as exc:
            errors += [(c["case_id"], f"dicom-seg: {exc}") for c, _m, _d in items]


def _write_nnunet(out: Path, groups: dict, names: dict, args: argparse.Namespace,
                  errors: list) -> Path:
    from flipseg.export import nnunet

    folder = nnunet.dataset_folder(out / "nnunet", args.nnunet_id, args.nnunet_name)
    ignore = bool(args.ignore_disagreement)
    used: set[str] = set()
    n = 0
    ending = ".png"
    for key, items in groups.items():
        c0 = items[0][0]
        lesion = np.zeros(np.shape(items[0][1]), bool)
        unsure = np.zeros_like(lesion)
        for _c, m, d in items:
            if ignore and d is not None:
                lesion |= m & ~d
                unsure |= d
            else:
                lesion |= m
        labels = np.where(lesion, nnunet.LESION, np.where(unsure, nnunet.IGNORE, 0)).astype(np.uint8)
        case, k = nnunet.case_name(names[key]), 2
        while case in used:
            case, k = f"{nnunet.case_name(names[key])}_{k}", k + 1
        used.add(case)
        try:
            nnunet.write_case(folder, case, c0["image"], labels, spacing=c0.get("spacing"),
                              meta=c0.get("volume_meta"))
        except FlipsegError as exc:
            errors += [(c["case_id"], f"nnunet: {exc}") for c, _m, _d in items]
            continue
        finally:
            _release(c0)
        n += 1
        ending = ".png" if labels.ndim == 2 else ".nii.gz"
    nnunet.write_dataset_json(folder, num_training=n, file_ending=ending, ignore=ignore)
    return folder


def _write_qc(out: Path, done: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    """``qc.csv``: every mask's quality score (its predicted Dice), worst first."""
    import csv
    import io

    from flipseg.io_utils import atomic_write_text

    rows = sorted(done, key=lambda c: (c.get("quality") is None, c.get("quality") or 0.0))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_id", "quality", "file", "box"])
    for c in rows:
        w.writerow([c["case_id"], c.get("quality"), c.get("file") or "",
                    " ".join(map(str, _box_list(c["box"])))])
    atomic_write_text(out / "qc.csv", buf.getvalue())


def _write_worst(out: Path, groups: "_Groups", n: int = 16) -> None:
    """``worst.png``: a contact sheet of the ``n`` lowest-scored masks, to review first."""
    from flipseg.viz import case_sheet, save_png

    every = sorted(groups.cases(),
                   key=lambda c: c.get("quality") if c.get("quality") is not None else 1.0)
    tiles = []
    for c in every[:n]:
        m = groups.load(c)[0]
        tiles.append((c["image"], c["box"], m, None, f"{c['case_id']} q={c.get('quality') or 0:.2f}"))
    save_png(out / "worst.png", case_sheet(tiles))


def _write_errors(out: Path, errors: list[tuple[str, str]]) -> None:
    _write_errors_to(out / "errors.csv", errors)


def _write_errors_to(path: Path, errors: list[tuple[str, str]]) -> None:
    """The failed boxes as ``case_id,error`` rows (an old file removed when none failed)."""
    from flipseg.io_utils import atomic_write_text

    if not errors:
        if path.is_file():
            path.unlink()
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_id", "error"])
    w.writerows(errors)
    atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------ command
def _check_formats(formats: list[str], cases: list[dict[str, Any]], dims: int,
                   args: argparse.Namespace) -> None:
    if dims == 3:
        for fmt in ("png", "coco"):
            if fmt in formats:
                raise FlipsegError(f"--format {fmt} holds 2D masks and the images are volumes; "
                                   "use nifti, dicom-seg or nnunet")
    if "dicom-seg" in formats:
        for c in cases:
            if (c.get("volume_meta") or {}).get("format") != "dicom":
                raise FlipsegError(f"--format dicom-seg needs DICOM images; {c['case_id']} "
                                   f"({c.get('file') or 'no file'}) is not DICOM")
    if args.ignore_disagreement and "nnunet" not in formats:
        raise FlipsegError("--ignore-disagreement writes nnU-Net's ignore label: add "
                           "--format nnunet")


def _has_voters(method: str) -> bool:
    """Whether ``method``'s segmenter has ``vote_parts`` (flip-vote), without building it."""
    from flipseg.methods import method_spec
    from flipseg.registry import resolve

    factory = method_spec(method).factory
    return factory is not None and hasattr(resolve(factory), "vote_parts")


def _finish_part(out: Path, part: tuple[int, int], cases: list[dict[str, Any]],
                 todo: list[dict[str, Any]], manifest: dict[str, Any],
                 errors: list[tuple[str, str]], method: str) -> int:
    """A part of a job array stops after its masks: ``done-part-I-of-K.json`` (+ the cached
    masks) and ``errors-part-I-of-K.csv``; the run without ``--num-parts`` writes the
    formats from every part's masks."""
    name = f"part-{part[1]}-of-{part[0]}"
    failed = {cid for cid, _m in errors}
    done = [c for c in cases if c["case_id"] not in failed and c["case_id"] in manifest["cases"]]
    path = out / f"errors-{name}.csv"
    _write_errors_to(path, errors)
    skipped = len(cases) - len(todo)
    print(f"{method}: {name}: {len(done)} of {len(cases)} box(es) done"
          + (f" ({skipped} before)" if skipped else "") + f" -> {out / _manifest_name(part)}; "
          "when every part is done, run the same command without --num-parts/--part-id to "
          "write the formats (it reuses the parts' masks)")
    if errors:
        print(f"{len(errors)} case(s) failed; see {path}")
        return 3
    return 0


def run_label(args: argparse.Namespace) -> int:
    """``flipseg label`` (see the module docstring). Returns 0, or 3 when some boxes failed
    (listed in ``errors.csv``; the others are written)."""
    from functools import partial

    from flipseg.commands import (
        _case_dims,
        _default_method,
        _device,
        _engine_settings,
        _part,
        _segmenter_recipes,
        _shard_cases,
        build_segmenters,
    )
    from flipseg.engines.options import make_engine
    from flipseg.io_utils import check_out_dir

    formats = parse_formats(args.format)
    _engine_settings(args)
    part = _part(args)
    device = _device(args)
    out = Path(args.out)
    check_out_dir(out, inputs=[args.images, args.boxes, args.data_root])
    cases, errors = read_label_cases(args)
    if part is not None:  # job arrays: the boxes of every other image go to the other parts
        cases, errors = _shard_cases(cases, part, key=_image_key), (errors if part[1] == 0 else [])
    check_out_dir(out, inputs=[f for c in cases for f in _input_files(c)])
    dims = _case_dims(cases) if cases else 2
    method = args.method or _default_method(args, dims)
    _check_formats(formats, cases, dims, args)
    settings = _settings(args, method)
    manifest = _read_manifest(out, settings, part)
    parts = bool(args.ignore_disagreement)
    todo = [c for c in cases if not _is_done(out, manifest, c, parts)]
    if todo:
        if parts and not _has_voters(method):
            raise FlipsegError(f"--ignore-disagreement needs a method with voters (flip-vote), "
                               f"not {method}")
        setup = partial(build_segmenters, _segmenter_recipes([method], args, dims), device=device)
        with make_engine(setup, args, device=device) as engine:
            if engine.describe != "this process":
                print(f"label: the boxes run in {engine.describe}")
            _run_boxes(engine, method, todo, out, manifest, args.seed, parts,
                       not args.no_progress, errors, part)
    if part is not None:
        return _finish_part(out, part, cases, todo, manifest, errors, method)
    if cases:
        _save_manifest(out, manifest)  # done.json: every box, the parts' too
    failed = {cid for cid, _m in errors}
    done = [c for c in cases if c["case_id"] not in failed and c["case_id"] in manifest["cases"]]
    # masks read from done/ an image at a time, as they are written
    groups = _Groups(lambda c: _load_case(out, manifest, c["case_id"]))
    for c in done:
        c["quality"] = manifest["cases"][c["case_id"]].get("quality")
        groups.add(_image_key(c), c)
    names = _image_names(done)
    written = []
    if groups:
        for fmt in formats:
            if fmt in ("png", "nifti"):
                _write_files(out, fmt, groups, names, errors)
                written.append(f"{fmt}/")
            elif fmt == "coco":
                root = Path(args.images) if args.images and Path(args.images).is_dir() else None
                _write_coco(out, groups, names, method, root)
                written.append("coco.json")
            elif fmt == "dicom-seg":
                _write_dicom_seg(out, groups, names, method, errors)
                written.append("dicom-seg/")
            else:
                folder = _write_nnunet(out, groups, names, args, errors)
                written.append(str(folder.relative_to(out)) + "/")
    _write_errors(out, errors)
    if done:
        _write_qc(out, done, manifest)
        _write_worst(out, groups)
        written += ["qc.csv", "worst.png"]
    skipped = len(cases) - len(todo)
    print(f"{method}: {len(done)} box(es) of {len(groups)} image(s) labelled"
          + (f" ({skipped} done before)" if skipped else "")
          + f" -> {out}: {', '.join(written) or 'nothing written'}")
    if errors:
        print(f"{len(errors)} case(s) failed; see {out / 'errors.csv'}")
        return 3
    return 0
