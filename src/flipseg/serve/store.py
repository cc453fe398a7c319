"""The review state of ``flipseg serve``, kept on disk under ``--out/serve/``.

::

    serve/state.json            every item: state, version, box, method, quality, mask file
    serve/masks/<case>-v<N>.npz the mask (and the voters' masks) of version N
    png/<case>.png              an accepted 2D mask (0/255), as ``flipseg label`` names it
    nifti/<case>.nii.gz         an accepted 3D mask, with the input volume's geometry

Every write is atomic (:mod:`flipseg.io_utils`): the mask file of a new version is written
first, then ``state.json`` is replaced in one step, so a crash leaves the old or the new
state, never half of one. Each item carries a version number; a save that names another
version than the stored one is refused with :class:`StaleVersion` (two tabs cannot
overwrite each other's work without seeing it).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipseg.errors import FlipsegError

__all__ = ["FORMAT", "STATES", "ItemState", "StaleVersion", "Store"]

FORMAT = "flipseg-serve-1"
#: ``todo``: no mask yet; ``proposed``: a mask waits for review; ``accepted`` and
#: ``rejected``: reviewed.
STATES = ("todo", "proposed", "accepted", "rejected")


class StaleVersion(FlipsegError):
    """A save based on an older version of an item than the stored one."""


@dataclass
class ItemState:
    """What is stored about one item (one box of one image)."""

    case_id: str
    version: int = 0
    state: str = "todo"
    box: list[int] | None = None
    method: str | None = None
    quality: float | None = None
    mask: str | None = None
    """The mask file, relative to ``--out``."""
    voters: list[str] = field(default_factory=list)
    updated: float | None = None


class Store:
    """The items' states under ``out``, loaded at start, saved on every change.

    Parameters
    ----------
    out
        The ``--out`` folder (created by the caller, checked writable).
    case_ids
        The items of the data, in order.
    names
        case id -> the file name of its exported mask (``flipseg label``'s names).
    """

    def __init__(self, out: Path, case_ids: list[str], names: dict[str, str]) -> None:
        self.out = Path(out)
        self.dir = self.out / "serve"
        self.index = self.dir / "state.json"
        self.names = names
        self._lock = threading.Lock()
        self.items: dict[str, ItemState] = {cid: ItemState(cid) for cid in case_ids}
        if self.index.is_file():
            self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        try:
            doc = json.loads(self.index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FlipsegError(f"{self.index} is not valid JSON ({exc}); move it aside to "
                               "start again") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("items"), dict):
            raise FlipsegError(f"{self.index} is not a flipseg serve state file; give another --out")
        known = {f for f in ItemState.__dataclass_fields__}
        for cid, entry in doc["items"].items():
            if cid in self.items and isinstance(entry, dict):
                item = ItemState(**{k: v for k, v in entry.items() if k in known and k != "case_id"},
                                 case_id=cid)
                if item.state not in STATES:
                    raise FlipsegError(f"{self.index}: item {cid!r} has an unknown state {item.state!r}")
                self.items[cid] = item

    def get(self, cid: str) -> ItemState:
        return self.items[cid]

    def load_masks(self, cid: str) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The item's mask and its voters' masks (None and {} when it has none)."""
        item = self.items[cid]
        if not item.mask:
            return None, {}
        with np.load(self.out / item.mask) as z:
            mask = z["mask"].astype(bool)
            voters = {name: z[f"voter_{k}"].astype(bool) for k, name in enumerate(item.voters)
                      if f"voter_{k}" in z}
        return mask, voters

    def check(self, cid: str, version: int) -> None:
        """Raise :class:`StaleVersion` unless ``version`` is the item's stored version."""
        stored = self.items[cid].version
        if int(version) != stored:
            raise StaleVersion(
                f"{cid} was saved elsewhere (another tab or the batch run) since you opened it: "
                f"version {stored} on disk, yours is {version}; reload the image to see it, then "
                "redo your change")

    # ------------------------------------------------------------------ writing
    def save(self, cid: str, version: int, *, state: str, box: list[int] | None,
             mask: np.ndarray | None, voters: dict[str, np.ndarray] | None = None,
             method: str | None = None, quality: float | None = None,
             keep_voters: bool = False) -> ItemState:
        """Store a new version of an item.

        ``version`` is the version the change was made on; ``mask`` None keeps no mask
        (state ``todo``). ``keep_voters`` keeps the stored voters' masks (a brush
        correction changes the mask, not what the voters said).

        Raises
        ------
        StaleVersion
            The stored version is not ``version``.
        FlipsegError
            An unknown state, or a state that needs a mask without one.
        """
        if state not in STATES:
            raise FlipsegError(f"state {state!r}: use one of {', '.join(STATES)}")
        if state != "todo" and mask is None:
            raise FlipsegError(f"state {state!r} needs a mask; segment the box first")
        with self._lock:
            self.check(cid, version)
            old = self.items[cid]
            if keep_voters and old.mask:
                voters = self.load_masks(cid)[1]
            new = ItemState(cid, version=old.version + 1, state=state, box=box,
                            method=method if method is not None else old.method,
                            quality=quality, voters=list(voters or {}), updated=time.time())
            if mask is not None:
                new.mask = f"serve/masks/{self.names[cid]}-v{new.version}.npz"
                self._write_mask(self.out / new.mask, mask, voters or {})
            self.items[cid] = new
            self._write_index()
            if old.mask and old.mask != new.mask:
                (self.out / old.mask).unlink(missing_ok=True)
            return new

    @staticmethod
    def _write_mask(path: Path, mask: np.ndarray, voters: dict[str, np.ndarray]) -> None:
        from flipseg.io_utils import atomic_save

        arrays = {"mask": np.asarray(mask, bool)}
        arrays.update({f"voter_{k}": np.asarray(v, bool) for k, v in enumerate(voters.values())})

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        atomic_save(path, write)

    def _write_index(self) -> None:
        from flipseg.io_utils import atomic_write_text

        doc = {"format": FORMAT,
               "items": {cid: {k: v for k, v in asdict(it).items() if k != "case_id"}
                         for cid, it in self.items.items() if it.version > 0}}
        atomic_write_text(self.index, json.dumps(doc, indent=1))

    def to_dict(self, cid: str) -> dict[str, Any]:
        return asdict(self.items[cid])
