"""What one ``flipseg serve`` process holds: the items of the data, their state on disk, the
segmenters (loaded once per method) and the "segment every box" job.

An *item* is one box of one image, the unit of ``flipseg label`` (its case). Images that
come without a box are items too: the box is drawn on the page. Nothing here knows about
HTTP; :mod:`flipseg.serve.app` turns requests into calls of :class:`Session`.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.serve.store import STATES, StaleVersion, Store

__all__ = ["Busy", "Job", "Session", "decode_rle", "encode_rle", "read_cases"]

#: Boxes per segmenter call of the batch job (small, so a click on the page waits little).
JOB_CHUNK = 2


class Busy(FlipsegError):
    """The batch job is already running."""


# ------------------------------------------------------------------ masks on the wire
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A bool mask as run lengths over its C-order pixels, starting with a run of zeros:
    ``{"shape": [...], "counts": [n0, n1, ...]}`` (what the page decodes)."""
    flat = np.asarray(mask, bool).ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"shape": list(mask.shape), "counts": counts}


def decode_rle(rle: Any, shape: Sequence[int]) -> np.ndarray:
    """The mask of :func:`encode_rle`, checked against the item's ``shape``.

    Raises
    ------
    FlipsegError
        Not a ``{"shape", "counts"}`` object, another shape, counts that are not
        non-negative integers or do not add up to the pixel count.
    """
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), list):
        raise FlipsegError('mask: give {"shape": [...], "counts": [...]} (run lengths, zeros first)')
    if list(rle.get("shape") or []) != list(shape):
        raise FlipsegError(f"mask shape {rle.get('shape')!r} is not the image's {list(shape)}")
    counts = rle["counts"]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise FlipsegError("mask counts must be non-negative integers")
    total = int(np.prod(shape))
    if sum(counts) != total:
        raise FlipsegError(f"mask counts add up to {sum(counts)}, the image has {total} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(tuple(shape))


def parse_box(values: Any, shape: Sequence[int]) -> Box:
    """``[x0, y0, x1, y1]`` (2D) or ``[x0, y0, x1, y1, z0, z1]`` (3D), clipped to the image."""
    n = 4 if len(shape) == 2 else 6
    if not isinstance(values, list) or len(values) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        raise FlipsegError(f"box {values!r}: give {n} numbers "
                           + ("[x0, y0, x1, y1]" if n == 4 else "[x0, y0, x1, y1, z0, z1]"))
    box = Box(*(int(round(v)) for v in values))
    if not box.is_valid():
        raise FlipsegError(f"box {values!r} is empty (need x0 < x1, y0 < y1"
                           + (", z0 < z1)" if n == 6 else ")"))
    return box.validate(shape)


# ------------------------------------------------------------------ reading the data
def _no_box_source(images: Path) -> bool:
    from flipseg.data.coco import find_coco_file

    if not images.is_dir() or (images / "boxes.csv").is_file() or (images / "manifest.json").is_file() \
            or (images / "images").is_dir():
        return False
    try:
        return find_coco_file(images) is None
    except FlipsegError:
        return True


def read_cases(data: str | Path, boxes: str | Path | None = None,
               data_opts: Sequence[str] = ()) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The cases of ``DATA [--boxes FILE]`` as ``flipseg label --images DATA --boxes FILE``
    reads them, images without a box included (their box is drawn on the page); a folder
    of images with no box file at all is read as images to draw boxes on."""
    from flipseg.data.folder import load_images
    from flipseg.label import _call_loader, _from_files
    from flipseg.runs import parse_data_opts

    data = Path(data)
    if not data.exists():
        raise FlipsegError(f"DATA not found: {data}")
    boxes_path = Path(boxes) if boxes else None
    if boxes_path is not None and not boxes_path.is_file():
        raise FlipsegError(f"--boxes file not found: {boxes_path}")
    opts = parse_data_opts(list(data_opts))
    errors: list[tuple[str, str]] = []
    if boxes_path is None and _no_box_source(data):
        cases = _call_loader(load_images, "a folder of images", opts, data, errors=errors)
    else:
        cases = _from_files(data, boxes_path, opts, errors)
    if not cases:
        raise FlipsegError(f"no image to review in {data}"
                           + (f" ({len(errors)} unreadable, e.g. {errors[0][0]}: {errors[0][1]})"
                              if errors else ""))
    seen: set[str] = set()
    for c in cases:
        if c["case_id"] in seen:
            raise FlipsegError(f"two cases are named {c['case_id']!r}")
        seen.add(c["case_id"])
    return cases, errors


# ------------------------------------------------------------------ the batch job
@dataclass
class Job:
    """Progress of "segment every box"."""

    running: bool = False
    method: str | None = None
    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    cancel: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "method": self.method, "total": self.total,
                "done": self.done, "skipped": self.skipped,
                "errors": [{"case_id": c, "error": e} for c, e in self.errors[-20:]]}


# ------------------------------------------------------------------ the session
class Session:
    """The data, the state on disk and the segmenters of one server.

    Parameters
    ----------
    data, boxes, data_opts
        As ``flipseg label --images DATA --boxes FILE --data-opt ...``.
    out
        The output folder: review state, accepted masks and exports.
    method
        The method a box runs by default (default: flip-vote in 2D, flip in 3D).
    quality_model
        A fitted quality model file (default: the shipped ``flipseg/models/qc.json``; when
        it cannot be read, masks get no score and the page says why).
    seed
        Seed of the methods' random choices.
    device
        Torch device of the networks (``cpu``, ``cuda``, ``auto``: see ``flipseg.devices``).
    """

    def __init__(self, data: str | Path, *, out: str | Path, boxes: str | Path | None = None,
                 data_opts: Sequence[str] = (), method: str | None = None,
                 quality_model: str | Path | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        from flipseg.commands import _case_dims
        from flipseg.io_utils import check_out_dir
        from flipseg.label import _input_files, _safe
        from flipseg.methods import default_method, method_names

        self.data = Path(data)
        check_out_dir(out, inputs=[data, boxes])
        self.cases, self.read_errors = read_cases(data, boxes, data_opts)
        self.out = check_out_dir(out, inputs=[f for c in self.cases for f in _input_files(c)])
        self.dims = _case_dims(self.cases)
        self.methods = method_names(kind="box", dims=self.dims)
        self.method = method or default_method(self.dims)
        if self.method not in self.methods:
            raise FlipsegError(f"--method {self.method!r}: not a box method for {self.dims}D "
                               f"images; one of: {', '.join(self.methods)}")
        self.seed = int(seed)
        self.device = device
        self.ids = [c["case_id"] for c in self.cases]
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.names = {cid: _safe(cid) for cid in self.ids}
        self.store = Store(self.out, self.ids, self.names)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="flipseg-segment")
        self.job = Job()
        self._segmenters: dict[str, Any] = {}
        self._seg_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._images: dict[str, bytes] = {}
        self._quality_model, self.quality_note = self._read_quality_model(quality_model)
        self.sync_accepted()

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _read_quality_model(path: str | Path | None) -> tuple[dict | None, str | None]:
        from flipseg.qc import load_quality_model

        try:
            return load_quality_model(path), None
        except FlipsegError as exc:
            return None, f"no quality score: {exc}"

    def case(self, item: int) -> dict[str, Any]:
        if not isinstance(item, int) or not 0 <= item < len(self.cases):
            raise KeyError(item)
        return self.cases[item]

    def roots(self) -> dict[str, Path]:
        """The folders whose files may be downloaded: the data's and the output's."""
        data_root = self.data if self.data.is_dir() else self.data.parent
        return {"data": data_root.resolve(), "out": self.out.resolve()}

    def segmenter(self, method: str) -> Any:
        """The method's segmenter, made once per server."""
        from flipseg.api import make_segmenter, place_on

        if method not in self.methods:
            raise FlipsegError(f"method {method!r}: use one of {', '.join(self.methods)}")
        with self._seg_lock:
            if method not in self._segmenters:
                self._segmenters[method] = place_on(make_segmenter(method, dims=self.dims), self.device)
            return self._segmenters[method]

    def quality(self, image: np.ndarray, box: Box, mask: np.ndarray,
                voters: dict[str, np.ndarray]) -> float | None:
        from flipseg.qc import quality_features, quality_score

        if self._quality_model is None or mask.shape != np.shape(image):
            return None
        feats = quality_features(image, box, mask, list(voters.values()))
        return round(float(quality_score(feats, self._quality_model)), 4)

    def box_of(self, cid: str) -> list[int] | None:
        stored = self.store.get(cid).box
        if stored is not None:
            return list(stored)
        box = self.cases[self.index[cid]].get("box")
        return [int(v) for v in box.as_tuple()] if box is not None else None

    # -------------------------------------------------------------- reading
    def info(self) -> dict[str, Any]:
        formats = ["png", "nifti", "coco", "nnunet"] if self.dims == 2 else ["nifti", "nnunet"]
        if all((c.get("volume_meta") or {}).get("format") == "dicom" for c in self.cases):
            formats.append("dicom-seg")
        return {"data": str(self.data), "out": str(self.out), "dims": self.dims,
                "items": len(self.cases), "methods": self.methods, "method": self.method,
                "quality": self._quality_model is not None, "quality_note": self.quality_note,
                "formats": formats,
                "unreadable": [{"case_id": c, "error": e} for c, e in self.read_errors]}

    def summary(self, item: int) -> dict[str, Any]:
        """An item's state (what the list shows)."""
        c = self.case(item)
        st = self.store.get(c["case_id"])
        return {"id": item, "case_id": c["case_id"], "state": st.state, "version": st.version,
                "quality": st.quality, "box": self.box_of(c["case_id"]), "method": st.method,
                "label": c.get("label")}

    def items(self) -> list[dict[str, Any]]:
        with self._write_lock:
            return [self.summary(i) for i in range(len(self.cases))]

    def queue(self) -> list[dict[str, Any]]:
        """The proposed masks waiting for review, worst quality score first (unscored last)."""
        todo = [s for s in self.items() if s["state"] == "proposed"]
        return sorted(todo, key=lambda s: (s["quality"] is None, s["quality"] or 0.0, s["id"]))

    def detail(self, item: int) -> dict[str, Any]:
        """An item with its mask and its voters' masks (run lengths)."""
        c = self.case(item)
        with self._write_lock:  # a change and its accepted file are seen together
            mask, voters = self.store.load_masks(c["case_id"])
            out = self.summary(item)
        out.update(shape=list(np.shape(c["image"])),
                   spacing=[float(s) for s in (c.get("spacing") or (1.0,) * self.dims)],
                   file=str(c["file"]) if c.get("file") else None,
                   mask=encode_rle(mask) if mask is not None else None,
                   voters={k: encode_rle(v) for k, v in voters.items()})
        return out

    def image_bytes(self, item: int) -> tuple[bytes, list[int]]:
        """The image as uint8 grey levels, C order, and its shape."""
        from flipseg.viz import to_uint8

        c = self.case(item)
        key = str(c.get("file") or c["case_id"]) + f"#{(c.get('volume_meta') or {}).get('frame')}"
        if key not in self._images:
            if len(self._images) > 64:
                self._images.clear()
            self._images[key] = np.ascontiguousarray(to_uint8(c["image"])).tobytes()
        return self._images[key], list(np.shape(c["image"]))

    # -------------------------------------------------------------- segmenting
    def _run(self, method: str, images: list[np.ndarray], boxes: list[Box]
             ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        seg = self.segmenter(method)
        if hasattr(seg, "vote_parts"):
            parts = seg.vote_parts(images, boxes, seed=self.seed)
            if method in parts:
                return [(np.asarray(parts[method][i], bool),
                         {k: np.asarray(v[i], bool) for k, v in parts.items() if k != method})
                        for i in range(len(images))]
        return [(np.asarray(m, bool), {}) for m in seg.segment_many(images, boxes, seed=self.seed)]

    def segment(self, item: int, box: Any, method: str | None, version: int) -> dict[str, Any]:
        """Segment the item's box (a new one when given) and store the mask as proposed.
        Blocking: the web app runs it in :attr:`executor`."""
        c = self.case(item)
        method = method or self.method
        b = parse_box(box, np.shape(c["image"])) if box is not None else None
        if b is None:
            stored = self.box_of(c["case_id"])
            if stored is None:
                raise FlipsegError(f"{c['case_id']} has no box yet: draw one")
            b = Box(*stored)
        self.store.check(c["case_id"], version)  # fail before the work
        mask, voters = self._run(method, [c["image"]], [b])[0]
        if mask.shape != np.shape(c["image"]):
            raise FlipsegError(f"{method} returned a mask of shape {mask.shape} for an image of "
                               f"shape {np.shape(c['image'])}")
        q = self.quality(c["image"], b, mask, voters)
        with self._write_lock:
            self.store.save(c["case_id"], version, state="proposed", box=list(b.as_tuple()), mask=mask,
                            voters=voters, method=method, quality=q)
            self._sync_export(c["case_id"])
            return self.detail(item)

    def save(self, item: int, version: int, *, state: str | None = None, box: Any = None,
             mask: Any = None) -> dict[str, Any]:
        """A change made on the page: a corrected mask (run lengths), a moved box, or a
        decision (``accepted``, ``rejected``, back to ``proposed`` or ``todo``)."""
        c = self.case(item)
        cid = c["case_id"]
        shape = np.shape(c["image"])
        old = self.store.get(cid)
        state = old.state if state is None else state
        if state not in STATES:
            raise FlipsegError(f"state {state!r}: use one of {', '.join(STATES)}")
        new_box = parse_box(box, shape) if box is not None else None
        box_list = list(new_box.as_tuple()) if new_box is not None else self.box_of(cid)
        keep_voters = True
        if state == "todo":
            arr, keep_voters = None, False
        elif mask is not None:
            arr = decode_rle(mask, shape)
        else:
            arr = self.store.load_masks(cid)[0]
        if arr is not None and box_list is None:  # a mask painted without a box: its own box
            if not arr.any():
                raise FlipsegError(f"{cid} has no box and the mask is empty: draw a box first")
            box_list = list(Box.from_mask(arr).as_tuple())
        quality = old.quality
        if arr is not None and (mask is not None or new_box is not None) and box_list is not None:
            voters = self.store.load_masks(cid)[1]
            quality = self.quality(c["image"], Box(*box_list), arr, voters)
        with self._write_lock:
            self.store.save(cid, version, state=state, box=box_list, mask=arr,
                            keep_voters=keep_voters, quality=quality if arr is not None else None)
            self._sync_export(cid)
            return self.detail(item)

    # -------------------------------------------------------------- accepted masks
    def export_path(self, cid: str) -> Path:
        name = self.names[cid]
        return self.out / ("png" if self.dims == 2 else "nifti") / (
            f"{name}.png" if self.dims == 2 else f"{name}.nii.gz")

    def _sync_export(self, cid: str) -> None:
        """An accepted item's mask file is written (the label layout); any other state has none."""
        from flipseg.export.masks import write_mask_nifti, write_mask_png

        path = self.export_path(cid)
        st = self.store.get(cid)
        if st.state != "accepted":
            path.unlink(missing_ok=True)
            return
        mask = self.store.load_masks(cid)[0]
        c = self.cases[self.index[cid]]
        if self.dims == 2:
            write_mask_png(path, mask)
        else:
            write_mask_nifti(path, mask, spacing=c.get("spacing"), meta=c.get("volume_meta"))

    def sync_accepted(self) -> None:
        """At start: every accepted mask is on disk as a file (a crash between saving the
        state and writing the file is made good)."""
        for cid in self.ids:
            if self.store.get(cid).state == "accepted" and not self.export_path(cid).is_file():
                self._sync_export(cid)

    # -------------------------------------------------------------- the batch job
    def start_job(self, method: str | None) -> dict[str, Any]:
        """Segment, in the background, every item that has a box and no mask yet."""
        method = method or self.method
        if method not in self.methods:
            raise FlipsegError(f"method {method!r}: use one of {', '.join(self.methods)}")
        if self.job.running:
            raise Busy("'segment every box' is already running")
        todo = [i for i, cid in enumerate(self.ids)
                if self.store.get(cid).state == "todo" and self.box_of(cid) is not None]
        self.job = Job(running=True, method=method, total=len(todo))
        threading.Thread(target=self._job_loop, args=(self.job, todo), daemon=True,
                         name="flipseg-segment-all").start()
        return self.job.as_dict()

    def _job_loop(self, job: Job, todo: list[int]) -> None:
        try:
            for start in range(0, len(todo), JOB_CHUNK):
                if job.cancel:
                    break
                chunk = todo[start:start + JOB_CHUNK]
                self.executor.submit(self._job_chunk, job, chunk).result()
                job.done += len(chunk)
        finally:
            job.running = False

    def _job_chunk(self, job: Job, chunk: list[int]) -> None:
        cases = [self.cases[i] for i in chunk]
        versions = [self.store.get(c["case_id"]).version for c in cases]
        boxes = [Box(*self.box_of(c["case_id"])) for c in cases]
        try:
            results: list[Any] = self._run(job.method, [c["image"] for c in cases], boxes)
        except Exception:  # retry one by one so one bad box cannot sink the chunk
            results = []
            for c, b in zip(cases, boxes):
                try:
                    results.append(self._run(job.method, [c["image"]], [b])[0])
                except Exception as exc:  # noqa: BLE001 - reported per box, the job goes on
                    msg = str(exc) if isinstance(exc, FlipsegError) else f"{type(exc).__name__}: {exc}"
                    job.errors.append((c["case_id"], (msg.splitlines() or [""])[0]))
                    results.append(None)
        for c, b, v, res in zip(cases, boxes, versions, results):
            if res is None:
                continue
            mask, voters = res
            q = self.quality(c["image"], b, mask, voters)
            try:
                with self._write_lock:
                    self.store.save(c["case_id"], v, state="proposed", box=list(b.as_tuple()),
                                    mask=mask, voters=voters, method=job.method, quality=q)
            except StaleVersion:  # changed on the page meanwhile: the person's work wins
                job.skipped += 1

    # -------------------------------------------------------------- export
    def export(self, formats: Any) -> dict[str, Any]:
        """The accepted masks written as ``flipseg label --format ...`` writes them."""
        from flipseg import label

        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise FlipsegError('formats: give a list such as ["png", "coco"]')
        fmts = label.parse_formats(",".join(formats))
        args = argparse.Namespace(ignore_disagreement=False, nnunet_id=501, nnunet_name="Lesions")
        done = []
        groups = label._Groups(lambda c: (self.store.load_masks(c["case_id"])[0], None))
        methods = set()
        for cid in self.ids:
            st = self.store.get(cid)
            if st.state != "accepted":
                continue
            c = dict(self.cases[self.index[cid]], box=Box(*st.box), quality=st.quality)
            done.append(c)
            methods.add(st.method or "manual")
            groups.add(label._image_key(c), c)
        if not done:
            raise FlipsegError("no accepted mask to export yet")
        label._check_formats(fmts, done, self.dims, args)
        names = label._image_names(done)
        method = "+".join(sorted(methods)) + " (reviewed in flipseg serve)"
        errors: list[tuple[str, str]] = []
        written = []
        for fmt in fmts:
            if fmt in ("png", "nifti"):
                label._write_files(self.out, fmt, groups, names, errors)
                written.append(f"{fmt}/")
            elif fmt == "coco":
                root = self.data if self.data.is_dir() else None
                label._write_coco(self.out, groups, names, method, root)
                written.append("coco.json")
            elif fmt == "dicom-seg":
                label._write_dicom_seg(self.out, groups, names, method, errors)
                written.append("dicom-seg/")
            else:
                folder = label._write_nnunet(self.out, groups, names, args, errors)
                written.append(str(folder.relative_to(self.out)) + "/")
        return {"accepted": len(done), "written": written,
                "errors": [{"case_id": c, "error": e} for c, e in errors]}

    def close(self) -> None:
        self.job.cancel = True
        self.executor.shutdown(wait=False, cancel_futures=True)
