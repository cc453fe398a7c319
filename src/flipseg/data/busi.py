"""BUSI (Al-Dhabyani et al., Data in Brief 2020) in its published layout.

::

    BUSI/                       (or Dataset_BUSI_with_GT/)
      benign/benign (N).png     benign/benign (N)_mask.png [, _mask_1.png, _mask_2.png ...]
      malignant/malignant (N).png ...
      normal/normal (N).png     normal/normal (N)_mask.png  (all zero)

All mask files of an image are OR-ed, and the box is the tight box of that
union. Seventeen BUSI images have more than one mask file, one file per lesion
(``_mask``, ``_mask_1``, ...), and the union's box then encloses two or three
separate lesions, which is not a box anyone draws. ``per_lesion=True`` reads
such an image as one sample per mask file instead: ``case_id`` suffixed ``#1``,
``#2`` ... in file order, the mask that file's lesion, the box its tight box,
``lesion_index`` its number. Images with one mask file are read the same either
way (647 image samples, 665 lesion samples). BUSI publishes no patient ids, and about
a fifth of its images are near-duplicates (re-saved copies, other frames of the
same lesion, the same frame with and without calipers), some across the benign
and malignant folders. ``patient_id`` is therefore a near-duplicate group:
images whose high-passed 64 x 64 thumbnails correlate above 0.5 are linked,
and each connected group is named after its first case in load order (see
:func:`flipseg.data.splits.near_duplicate_groups`). Groups are formed among the
images loaded in the same call, so splitting by ``patient_id`` keeps
near-duplicates on the same side.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from flipseg.data.sample import LABELS, make_sample, try_case
from flipseg.data.splits import near_duplicate_groups
from flipseg.errors import FlipsegError

__all__ = ["BUSI_FOLDER_NAMES", "find_busi_root", "load_busi"]

#: Folder names the dataset is published / commonly stored under.
BUSI_FOLDER_NAMES = ("BUSI", "Dataset_BUSI_with_GT")

_FILE = re.compile(r"^(?P<stem>.+?)(?P<mask>_mask(?:_\d+)?)?$", re.IGNORECASE)
_BUSI_STEM = re.compile(r"^(?P<cls>[A-Za-z]+) \((?P<num>\d+)\)$")


def find_busi_root(root: str | Path) -> Path:
    """The folder holding ``benign/``, ``malignant/``, ``normal/``: ``root`` or a BUSI child."""
    root = Path(root)
    if not root.is_dir():
        raise FlipsegError(f"dataset folder not found: {root}")
    if any((root / c).is_dir() for c in LABELS):
        return root
    for name in BUSI_FOLDER_NAMES:
        if any((root / name / c).is_dir() for c in LABELS):
            return root / name
    raise FlipsegError(f"BUSI folder {root} has no benign/, malignant/ or normal/ subfolder")


def _case_id(stem: str) -> str:
    m = _BUSI_STEM.match(stem)
    if m:
        return f"{m['cls'].lower()}_{int(m['num'])}"
    return re.sub(r"[^\w.-]+", "_", stem).strip("_")


def _sort_key(stem: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem))


def _scan(folder: Path) -> list[tuple[str, Path, list[Path]]]:
    """(stem, image path, mask paths) per image in one class folder, natural order."""
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for f in folder.iterdir():
        if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        m = _FILE.match(f.stem)
        if m is None:  # pragma: no cover - the pattern matches any non-empty stem
            continue
        if m["mask"]:
            masks.setdefault(m["stem"], []).append(f)
        else:
            images[f.stem] = f
    return [
        (stem, images[stem], sorted(masks.get(stem, []), key=lambda p: _sort_key(p.stem)))
        for stem in sorted(images, key=_sort_key)
    ]


def load_busi(
    root: str | Path,
    *,
    classes: Sequence[str] = ("benign", "malignant"),
    include_normal: bool = False,
    per_lesion: bool = False,
    errors: list | None = None,
) -> list[dict[str, Any]]:
    """Read BUSI as published.

    Parameters
    ----------
    root : the BUSI folder (with ``benign/`` ...) or a folder containing it.
    classes : class folders to read, from ``benign``, ``malignant``, ``normal``.
    include_normal : also read ``normal/`` (all-zero masks, box None).
    per_lesion : one sample per mask file (lesion) of an image with several,
        instead of one sample with the OR of them (see the module docstring).
    errors : if a list, unreadable cases are appended as ``(case_id, message)``
        and skipped; if None they raise.

    Returns
    -------
    samples in class order then image number; ``case_id`` like
    ``"benign_12"``, ``label`` from the folder, ``mask`` = OR of all mask
    files (or one file per sample with ``per_lesion``), ``box`` = tight box
    of the mask (None for normal images),
    ``patient_id`` = near-duplicate group (see module docstring), extra key
    ``file`` (image path).
    """
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    for c in classes:
        if c not in LABELS:
            raise FlipsegError(f"BUSI class {c!r} must be one of {LABELS}")
    if include_normal and "normal" not in classes:
        classes = classes + ("normal",)
    base = find_busi_root(root)
    samples: list[dict[str, Any]] = []
    for cls in classes:
        folder = base / cls
        if not folder.is_dir():
            raise FlipsegError(f"BUSI class folder not found: {folder}")
        for stem, image_path, mask_paths in _scan(folder):
            case_id = _case_id(stem)

            def load(cls=cls, image_path=image_path, mask_paths=mask_paths, case_id=case_id):
                image = read_image(image_path)
                if not mask_paths and cls != "normal":
                    raise FlipsegError(f"BUSI case {case_id}: no mask file next to {image_path}")
                parts = [read_mask(mp, shape=image.shape) for mp in mask_paths]
                if per_lesion and len(parts) > 1:
                    return [make_sample(image, mask=m, label=cls, case_id=f"{case_id}#{k}",
                                        file=str(image_path), lesion_index=k)
                            for k, m in enumerate(parts, start=1)]
                mask = np.zeros(image.shape, dtype=bool)
                for m in parts:
                    mask |= m
                return [make_sample(image, mask=mask, label=cls, case_id=case_id,
                                    file=str(image_path))]

            loaded = try_case(case_id, load, errors)
            samples.extend(loaded or [])
    groups = near_duplicate_groups([s["image"] for s in samples])
    names: dict[int, str] = {}
    for s, g in zip(samples, groups, strict=True):
        s["patient_id"] = names.setdefault(int(g), s["case_id"].split("#")[0])
    return samples
