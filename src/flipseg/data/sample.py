"""The sample dict every reader returns (see DESIGN.md, "Data contract").

A file-backed reader returns :class:`LazySample` entries: what the index knows (case id,
box, label, file, ...) is at hand at once, and the image and mask are read from disk when
first asked for. The decoded data of recently used samples is kept in one bounded cache
(:data:`CACHE`), so a run over 100,000 images holds the index and a few hundred images,
not the archive.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import MutableMapping
from functools import partial
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError, MaskShapeError

__all__ = ["CACHE", "LABELS", "LazySample", "case_entry", "case_ndim", "make_sample", "try_case"]

LABELS = ("benign", "malignant", "normal")

T = TypeVar("T")


def make_sample(
    image: np.ndarray,
    *,
    case_id: str,
    mask: np.ndarray | None = None,
    box: Box | None = None,
    label: str | None = None,
    spacing: Sequence[float] | None = None,
    patient_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build and check a sample dict.

    Keys: ``image`` float32 (H, W) or (D, H, W); ``mask`` bool of the same
    shape (omitted when unknown); ``box`` (:class:`Box`, from the mask when not
    given and the mask is non-empty, else None); ``label``; ``spacing`` (1.0
    per axis when unknown); ``case_id``; ``patient_id`` (defaults to case_id).
    Extra keyword arguments are kept as extra keys.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise FlipsegError(f"case {case_id}: image must be 2D or 3D, got shape {image.shape}")
    if label is not None and label not in LABELS:
        raise FlipsegError(f"case {case_id}: label {label!r} is not one of {LABELS}")
    sample: dict[str, Any] = {"image": image, "case_id": str(case_id)}
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != image.shape:
            raise FlipsegError(
                f"case {case_id}: mask shape {mask.shape} differs from image shape {image.shape}"
            )
        sample["mask"] = mask
    if box is None and mask is not None and mask.any():
        box = Box.from_mask(mask)
    if box is not None:
        box = box.validate(image.shape)
    sample["box"] = box
    sample["label"] = label
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * image.ndim
    if len(sp) != image.ndim:
        raise FlipsegError(f"case {case_id}: spacing {sp} does not match {image.ndim}D image")
    sample["spacing"] = sp
    sample["patient_id"] = str(patient_id) if patient_id is not None else str(case_id)
    sample.update(extra)
    return sample


def try_case(case_id: str, load: Callable[[], T], errors: list | None) -> T | None:
    """Run ``load()`` for one case of a batch.

    With ``errors=None`` a :class:`FlipsegError` propagates. With a list, the
    error is recorded as ``(case_id, message)`` and None is returned, so a
    reader can skip the bad case and finish the rest. A :class:`MaskShapeError`
    (a mask of another size than its image) always propagates: it is fixed by a
    reading option (``--resize-masks``), not by skipping the case.
    """
    try:
        return load()
    except FlipsegError as exc:
        if errors is None or isinstance(exc, MaskShapeError):
            raise
        errors.append((str(case_id), str(exc)))
        return None


class _DataCache:
    """The decoded data of the most recently used lazy samples: at most ``items`` samples
    and about ``megabytes`` MB (``FLIPSEG_CACHE_ITEMS``, ``FLIPSEG_CACHE_MB``; the older
    ones are read again when asked for)."""

    def __init__(self) -> None:
        self.items = int(os.environ.get("FLIPSEG_CACHE_ITEMS", "256"))
        self.megabytes = float(os.environ.get("FLIPSEG_CACHE_MB", "1024"))
        self._data: OrderedDict[int, tuple["LazySample", dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self.loads = 0  # samples read from disk (tests and benchmarks count them)

    def get(self, sample: "LazySample") -> dict[str, Any] | None:
        got = self._data.get(id(sample))
        if got is None or got[0] is not sample:
            return None
        self._data.move_to_end(id(sample))
        return got[1]

    def put(self, sample: "LazySample", data: dict[str, Any]) -> None:
        size = sum(v.nbytes for v in data.values() if isinstance(v, np.ndarray))
        self.drop(sample)
        self._data[id(sample)] = (sample, data, size)
        self._bytes += size
        self.loads += 1
        while self._data and (len(self._data) > max(1, self.items)
                              or (self._bytes > self.megabytes * 2**20 and len(self._data) > 1)):
            _k, (_s, _d, n) = self._data.popitem(last=False)
            self._bytes -= n

    def drop(self, sample: "LazySample") -> None:
        got = self._data.pop(id(sample), None)
        if got is not None:
            self._bytes -= got[2]

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0


#: The one cache of decoded lazy samples.
CACHE = _DataCache()


class LazySample(MutableMapping):
    """A sample dict whose image (and mask, and whatever else its reader finds in the file)
    is read when first asked for.

    Parameters
    ----------
    case_id
        The case's id.
    load
        ``load() -> sample dict`` (a :func:`make_sample` result): reads the files. Called
        again when the cache has let the data go.
    known
        What the index knows without reading: ``box``, ``label``, ``file``, ... Values
        here win over the loaded ones, and assignments go here.
    keys
        Every key the loaded sample will have (with ``known``'s), when the reader knows
        them: ``"mask" in s`` and ``s.get("mask")`` on a sample without one then read
        nothing. None: unknown, ask the file.
    ndim
        The image's dimensions when known (:func:`case_ndim`).
    """

    __slots__ = ("case_id", "_load", "known", "_keys", "ndim", "__weakref__")

    def __init__(self, case_id: str, load: Callable[[], dict[str, Any]],
                 known: dict[str, Any] | None = None, *, keys: Sequence[str] | None = None,
                 ndim: int | None = None) -> None:
        self.case_id = str(case_id)
        self._load = load
        self.known = {"case_id": self.case_id, **(known or {})}
        self._keys = None if keys is None else frozenset(keys) | frozenset(self.known)
        self.ndim = ndim

    def data(self) -> dict[str, Any]:
        """The loaded sample (from the cache, else read now)."""
        got = CACHE.get(self)
        if got is None:
            got = self._load()
            CACHE.put(self, got)
            if "box" in self.known and "box" in got:  # the reader's box, checked and clipped
                self.known["box"] = got["box"]
        return got

    def __getitem__(self, key: str) -> Any:
        if key in self.known:
            return self.known[key]
        if self._keys is not None and key not in self._keys:
            raise KeyError(key)
        return self.data()[key]

    def __contains__(self, key: object) -> bool:
        if key in self.known:
            return True
        if self._keys is not None:
            return key in self._keys
        return key in self.data()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        self.known[key] = value
        if self._keys is not None:
            self._keys = self._keys | {key}

    def __delitem__(self, key: str) -> None:
        raise TypeError("a sample's keys cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        keys = self._keys if self._keys is not None else set(self.data()) | set(self.known)
        return iter(sorted(keys))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"LazySample({self.case_id!r})"

    def release(self) -> None:
        """Let the decoded data go now (it is read again when asked for)."""
        CACHE.drop(self)

    def __reduce__(self) -> tuple:
        """Pickled (to a worker process or a Ray actor) as the loaded sample, read here; a
        sample that cannot be read travels as one that raises the same one-line error
        where it is used, so the worker reports that case alone."""
        try:
            loaded = {**self.data(), **self.known}
        except MaskShapeError:
            raise
        except FlipsegError as exc:
            return (LazySample, (self.case_id, partial(_fail, str(exc)), dict(self.known)),
                    None)
        return (dict, (loaded,))


def case_entry(case_id: str, load: Callable[[], dict[str, Any]], errors: list | None, *,
               lazy: bool, known: dict[str, Any] | None = None,
               keys: Sequence[str] | None = None, ndim: int | None = None,
               files: Sequence[Any] = ()) -> dict[str, Any] | LazySample | None:
    """A reader's entry for one case: with ``lazy``, a :class:`LazySample` (its
    ``files`` checked to exist now, so a missing file is reported with the index);
    else the loaded sample (:func:`try_case`)."""
    if not lazy:
        return try_case(case_id, load, errors)
    from pathlib import Path

    for f in files:
        if f is not None and not Path(f).is_file():
                return try_case(case_id, lambda f=f: _missing(f), errors)
    return LazySample(case_id, load, known, keys=keys, ndim=ndim)


def _missing(path: Any) -> dict[str, Any]:
    raise FlipsegError(f"file not found: {path}")


def _fail(message: str) -> dict[str, Any]:
    raise FlipsegError(message)


def case_ndim(case: Any) -> int:
    """The dimensions of a case's image, without reading it when its reader knows them."""
    nd = getattr(case, "ndim", None)
    if isinstance(case, LazySample) and nd is not None:
        return int(nd)
    return int(np.ndim(case["image"]))
