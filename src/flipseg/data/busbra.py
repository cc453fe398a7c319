"""BUS-BRA (Gomez-Flores et al., Medical Physics 2023) in its published layout.

::

    BUS-BRA/
      Images/bus_XXXX-{l,r,s}.png    8-bit greyscale
      Masks/mask_XXXX-{l,r,s}.png
      bus_data.csv      ID, Case (patient), Histology, Pathology, BIRADS, Device,
                        Width, Height, Side, BBOX ("[x,y,w,h]")
      5-fold-cv.csv     ID, Pathology, kFold, valid_1 .. valid_5
      10-fold-cv.csv    ID, Pathology, kFold, valid_1 .. valid_10

Folds: ``kFold`` is the fold in which the image is in the test set; for fold
``k``, ``valid_k`` is 1 (training), 0 (validation) or NaN (test). The folds are
patient-level (no patient is in two test folds).

BBOX: the published ``[x, y, w, h]`` uses 1-based pixel coordinates with
``w = x_last - x_first`` (MATLAB style). Checked against the masks, the tight
mask box is ``Box(x - 1, y - 1, x + w, y + h)`` for 1874 of the 1875 images
(``Box(x, y, x + w, y + h)`` would be one pixel short at the top and left);
the exception, ``bus_0845-s``, has a published box reaching 78 px further left
and 31 px further up than its mask (right and bottom edges agree).
We use ``Box(x - 1, y - 1, x + w, y + h)``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from flipseg.boxes import Box
from flipseg.data.io import read_image, read_mask
from flipseg.data.sample import case_entry, make_sample, try_case
from flipseg.data.splits import PARTS, check_fold
from flipseg.errors import FlipsegError

__all__ = [
    "BUSBRA_FOLDER_NAMES",
    "PARTS",
    "find_busbra_root",
    "load_busbra",
    "parse_busbra_bbox",
    "samples_from_rows",
]

BUSBRA_FOLDER_NAMES = ("BUS-BRA", "BUSBRA")


def parse_busbra_bbox(text: str) -> Box:
    """``"[x,y,w,h]"`` as published -> the tight half-open :class:`Box`.

    ``Box(x - 1, y - 1, x + w, y + h)``; see the module docstring for why.
    """
    try:
        x, y, w, h = (int(round(float(v))) for v in str(text).strip().strip("[]").split(","))
    except ValueError:
        raise FlipsegError(f"BUS-BRA BBOX {text!r} is not '[x,y,w,h]'") from None
    return Box(x - 1, y - 1, x + w, y + h)


def find_busbra_root(root: str | Path) -> Path:
    """The folder holding ``bus_data.csv``: ``root`` or a BUS-BRA child of it."""
    root = Path(root)
    if not root.is_dir():
        raise FlipsegError(f"dataset folder not found: {root}")
    for cand in (root, *(root / n for n in BUSBRA_FOLDER_NAMES)):
        if (cand / "bus_data.csv").is_file():
            return cand
    raise FlipsegError(f"BUS-BRA folder {root} has no bus_data.csv")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FlipsegError(f"BUS-BRA file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _fold_filter(part: str, fold: int | None, k: int) -> Callable[[dict[str, str]], bool]:
    fold = check_fold(part, fold, k)
    if fold is None:
        return lambda row: True
    if part == "test":
        return lambda row: int(row["kFold"]) == fold
    if part == "train":  # training + validation images of this fold
        return lambda row: int(row["kFold"]) != fold
    if part == "val":
        return lambda row: row.get(f"valid_{fold}", "").strip() == "0"
    return lambda row: True


def samples_from_rows(
    rows: Iterable[dict[str, str]],
    image_path: Callable[[str], Path],
    mask_path: Callable[[str], Path],
    *,
    errors: list | None = None,
    folds: dict[str, int] | None = None,
    lazy: bool = False,
) -> list[dict[str, Any]]:
    """Sample dicts from ``bus_data.csv``-style rows (also used for the embedded samples);
    with ``lazy``, :class:`~flipseg.data.sample.LazySample` entries that read the image and
    mask when asked for."""
    samples = []
    for row in rows:
        case_id = row["ID"].strip()
        extra = _row_extras(row, case_id, folds)

        def load(row=row, case_id=case_id, extra=extra):
            image = read_image(image_path(case_id))
            mask = read_mask(mask_path(case_id), shape=image.shape)
            return make_sample(
                image, mask=mask, box=parse_busbra_bbox(row["BBOX"]),
                label=row["Pathology"].strip().lower() or None, case_id=case_id,
                patient_id=f"busbra_{row['Case'].strip()}", **extra,
            )

        if lazy:
            known: dict[str, Any] = {
                "label": row["Pathology"].strip().lower() or None,
                "patient_id": f"busbra_{row['Case'].strip()}", "spacing": (1.0, 1.0), **extra}
            try:
                known["box"] = parse_busbra_bbox(row["BBOX"])
            except FlipsegError as exc:
                if errors is None:
                    raise
                errors.append((case_id, str(exc)))
                continue
            sample = case_entry(case_id, load, errors, lazy=True, known=known, ndim=2,
                                keys=["image", "mask", *known],
                                files=[image_path(case_id), mask_path(case_id)])
        else:
            sample = try_case(case_id, load, errors)
        if sample is not None:
            samples.append(sample)
    return samples


def _row_extras(row: dict[str, str], case_id: str, folds: dict[str, int] | None) -> dict[str, Any]:
    """The extra keys of a sample from its ``bus_data.csv`` row: ``fold``, ``device``,
    ``histology``, ``birads`` (those given)."""
    extra: dict[str, Any] = {}
    if folds is not None:
        extra["fold"] = folds.get(case_id)
    for key, name in (("Device", "device"), ("Histology", "histology"), ("BIRADS", "birads")):
        if row.get(key) not in (None, ""):
            extra[name] = row[key].strip()
    return extra


def _mask_name(case_id: str) -> str:
    return "mask_" + (case_id[4:] if case_id.startswith("bus_") else case_id) + ".png"


def load_busbra(
    root: str | Path,
    *,
    fold: int | None = None,
    part: str = "all",
    cv: str | int = "5",
    errors: list | None = None,
    lazy: bool = False,
) -> list[dict[str, Any]]:
    """Read BUS-BRA as published, optionally one part of an official fold.

    Parameters
    ----------
    root : the BUS-BRA folder (with ``bus_data.csv``) or a folder containing it.
    fold : fold number (1-5 or 1-10); required unless ``part="all"``.
    part : ``"all"``; ``"test"`` (kFold == fold); ``"train"`` (kFold != fold,
        i.e. the fold's training and validation images); ``"val"``
        (valid_fold == 0).
    cv : ``"5"`` or ``"10"``: which official fold file to use.
    errors : if a list, unreadable cases are appended as ``(case_id, message)``
        and skipped; if None they raise.
    lazy : return :class:`~flipseg.data.sample.LazySample` entries (images read when
        used; a missing file is still reported here, an unreadable one when it is used).

    Returns
    -------
    samples in ``bus_data.csv`` order with ``box`` from BBOX, ``mask`` from
    ``Masks/``, ``label`` from Pathology, ``patient_id`` ``"busbra_<Case>"``
    and extra keys ``fold`` (the test fold of the image in the chosen cv),
    ``device``, ``histology``, ``birads``.
    """
    cv = str(cv)
    if cv not in ("5", "10"):
        raise FlipsegError(f"BUS-BRA cv {cv!r} must be '5' or '10'")
    base = find_busbra_root(root)
    keep = _fold_filter(part, fold, int(cv))
    cv_rows = _read_csv(base / f"{cv}-fold-cv.csv")
    folds = {}
    selected = set()
    for r in cv_rows:
        k = r.get("kFold", "").strip()
        if k and not math.isnan(float(k)):
            folds[r["ID"].strip()] = int(float(k))
        if keep(r):
            selected.add(r["ID"].strip())
    rows = [r for r in _read_csv(base / "bus_data.csv") if r["ID"].strip() in selected]
    return samples_from_rows(
        rows,
        lambda cid: base / "Images" / f"{cid}.png",
        lambda cid: base / "Masks" / _mask_name(cid),
        errors=errors,
        folds=folds,
        lazy=lazy,
    )
