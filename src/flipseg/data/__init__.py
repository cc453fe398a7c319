"""Datasets as lists of sample dicts (see :func:`flipseg.data.sample.make_sample`).

``load_dataset(name, root)`` reads any registered dataset by name:

=============  ==============================================================
``busi``       BUSI in its published layout (:func:`load_busi`)
``bus-bra``    BUS-BRA with its official folds (:func:`load_busbra`)
``folder``     generic ``images/`` [+ ``masks/``, ``boxes.csv``] or manifest
``coco``       images + a COCO box file (CVAT, Label Studio) (:func:`load_coco`)
``datalist``   a MONAI/Decathlon datalist JSON with boxes (:func:`load_datalist`)
``stu``        STU-Hospital ``Test_Image_N`` / ``mask_N`` (:func:`load_stu`)
``samples``    the ten BUS-BRA images shipped with flipseg
``phantom2d``  synthetic 2D phantoms (``n=20, seed=0`` by default)
``phantom3d``  synthetic 3D volumes, one sample per lesion (``n=12, seed=0``)
=============  ==============================================================
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from flipseg.data.busbra import load_busbra
from flipseg.data.busi import load_busi
from flipseg.data.coco import load_coco, load_datalist
from flipseg.data.dicom import read_dicom, read_dicom_series
from flipseg.data.embedded import load_embedded
from flipseg.data.folder import load_folder, load_images, load_manifest, read_any_image
from flipseg.data.io import normalize_intensities, read_image, read_mask, write_png
from flipseg.data.phantoms import (
    make_phantom_2d,
    make_phantom_3d,
    phantom_dataset_2d,
    phantom_dataset_3d,
)
from flipseg.data.sample import LABELS, make_sample, try_case
from flipseg.data.splits import check_fold, near_duplicate_groups, split_by_patient
from flipseg.data.stu import load_stu
from flipseg.data.volumes import read_volume, write_volume
from flipseg.errors import FlipsegError
from flipseg.registry import Registry

__all__ = [
    "DATASETS",
    "LABELS",
    "default_data_root",
    "load_busbra",
    "load_busi",
    "load_coco",
    "load_dataset",
    "load_datalist",
    "load_embedded",
    "load_folder",
    "load_images",
    "load_manifest",
    "load_stu",
    "make_phantom_2d",
    "make_phantom_3d",
    "make_sample",
    "near_duplicate_groups",
    "normalize_intensities",
    "phantom_dataset_2d",
    "phantom_dataset_3d",
    "read_any_image",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "read_mask",
    "read_volume",
    "split_by_patient",
    "try_case",
    "write_png",
    "write_volume",
]

#: name -> loader ``(root, *, fold, part, errors, **opts) -> list[sample]``
DATASETS: Registry[Callable[..., list[dict[str, Any]]]] = Registry("dataset")

#: Folder names looked for by :func:`default_data_root`, per dataset.
DEFAULT_FOLDERS = {"busi": ("BUSI", "Dataset_BUSI_with_GT"), "bus-bra": ("BUS-BRA",)}


def default_data_root(name: str) -> Path:
    """Where dataset ``name`` lives when no root is given.

    Looks for the dataset's folder (``BUSI``, ``BUS-BRA``) under, in order:
    ``$FLIPSEG_DATA``, then ``./shared/data``, ``../shared/data`` and
    ``../../shared/data`` relative to the current directory.

    Raises
    ------
    FlipsegError
        ``dataset folder not found: PATH`` (PATH = the first place looked);
        or the dataset has no default location.
    """
    name = name.lower()
    if name not in DEFAULT_FOLDERS:
        raise FlipsegError(f"dataset {name!r} has no default folder; give its root folder")
    bases = []
    if os.environ.get("FLIPSEG_DATA"):
        bases.append(Path(os.environ["FLIPSEG_DATA"]).expanduser())
    cwd = Path.cwd()
    bases += [cwd / "shared" / "data", cwd.parent / "shared" / "data",
              cwd.parent.parent / "shared" / "data"]
    for base in bases:
        for folder in DEFAULT_FOLDERS[name]:
            if (base / folder).is_dir():
                return base / folder
    raise FlipsegError(f"dataset folder not found: {bases[0] / DEFAULT_FOLDERS[name][0]}")


def _root(name: str, root: str | Path | None) -> Path:
    if root is None:
        return default_data_root(name)
    root = Path(root).expanduser()
    if not root.exists():
        raise FlipsegError(f"dataset folder not found: {root}")
    return root


def _no_folds(name: str, fold: int | None, part: str) -> None:
    if fold is not None or part != "all":
        raise FlipsegError(
            f"dataset {name!r} has no official folds: use part='all' and no fold "
            f"(got part={part!r}, fold={fold})"
        )


def _cv_part(name: str, samples: list[dict[str, Any]], fold: int | None, part: str,
             cv: Any) -> list[dict[str, Any]]:
    """Fold ``fold`` of a ``cv``-fold patient-level cross-validation of a dataset without
    official folds.

    The samples are dealt to ``cv`` folds of about equal size by
    :func:`flipseg.data.splits.split_by_patient` (seed 0), so no patient (BUSI: no
    near-duplicate group) is in two folds and the same files give the same folds.
    ``test`` is fold ``fold``; ``train`` the other folds; ``val`` a patient-level tenth
    of ``train`` (inside it, as in BUS-BRA's official folds); ``all`` every sample.
    """
    try:
        k = int(cv)
    except (TypeError, ValueError):
        raise FlipsegError(f"dataset {name!r}: cv {cv!r} must be a whole number of folds") from None
    if k < 2:
        raise FlipsegError(f"dataset {name!r}: cv {cv!r} needs at least 2 folds")
    fold = check_fold(part, fold, k)
    if fold is None or part == "all":
        return samples
    folds = split_by_patient(samples, [1.0 / k] * k, seed=0)
    if part == "test":
        return folds[fold - 1]
    held = {id(s) for s in folds[fold - 1]}
    train = [s for s in samples if id(s) not in held]
    if part == "train":
        return train
    return split_by_patient(train, (0.9, 0.1), seed=0)[1] if len(train) > 1 else []


def _check_opts(name: str, func: Callable, opts: dict[str, Any], extra: tuple = ()) -> None:
    """Unknown loader options fail with the list of valid ones."""
    params = inspect.signature(func).parameters
    valid = sorted(
        {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY} - {"errors", "case_id", "lazy"}
        | set(extra)
    )
    for key in opts:
        if key not in valid:
            raise FlipsegError(
                f"dataset {name!r} has no option {key!r}; options: {', '.join(valid) or 'none'}"
            )


def _no_root(name: str, root: str | Path | None) -> None:
    if root is not None:
        raise FlipsegError(f"dataset {name!r} takes no root folder (got {root})")


@DATASETS.register("busi")
def _load_busi(root, *, fold=None, part="all", errors=None, cv=5, **opts):
    _check_opts("busi", load_busi, opts, extra=("cv",))
    return _cv_part("busi", load_busi(_root("busi", root), errors=errors, **opts), fold, part, cv)


@DATASETS.register("bus-bra")
def _load_busbra(root, *, fold=None, part="all", errors=None, lazy=False, **opts):
    _check_opts("bus-bra", load_busbra, opts)
    return load_busbra(_root("bus-bra", root), fold=fold, part=part, errors=errors, lazy=lazy,
                       **opts)


@DATASETS.register("folder")
def _load_folder(root, *, fold=None, part="all", errors=None, cv=5, lazy=False, **opts):
    _check_opts("folder", load_folder, opts, extra=("cv",))
    if root is None:
        raise FlipsegError("dataset 'folder' needs a root folder (images/ or manifest.json)")
    samples = load_folder(_root("folder", root), errors=errors, lazy=lazy, **opts)
    return _cv_part("folder", samples, fold, part, cv)


@DATASETS.register("coco")
def _load_coco(root, *, fold=None, part="all", errors=None, cv=5, lazy=False, **opts):
    _check_opts("coco", load_coco, opts, extra=("cv",))
    if root is None:
        raise FlipsegError("dataset 'coco' needs a root folder (the images, or a CVAT/Label "
                           "Studio COCO export) and --data-opt annotations=FILE")
    return _cv_part("coco", load_coco(_root("coco", root), errors=errors, lazy=lazy, **opts),
                    fold, part, cv)


@DATASETS.register("datalist")
def _load_datalist(root, *, fold=None, part="all", errors=None, cv=5, **opts):
    _check_opts("datalist", load_datalist, opts, extra=("cv",))
    if root is None:
        raise FlipsegError("dataset 'datalist' needs a root folder or datalist file "
                           "(--data-root, --data-opt datalist=FILE)")
    samples = load_datalist(_root("datalist", root), errors=errors, **opts)
    return _cv_part("datalist", samples, fold, part, cv)


@DATASETS.register("stu")
def _load_stu(root, *, fold=None, part="all", errors=None, cv=5, **opts):
    _check_opts("stu", load_stu, opts, extra=("cv",))
    if root is None:
        raise FlipsegError("dataset 'stu' needs a root folder (Test_Image_N.png, mask_N.png)")
    return _cv_part("stu", load_stu(_root("stu", root), errors=errors, **opts), fold, part, cv)


@DATASETS.register("samples")
def _load_samples(root, *, fold=None, part="all", errors=None, **opts):
    _no_folds("samples", fold, part)
    _no_root("samples", root)
    _check_opts("samples", load_embedded, opts)
    return load_embedded(errors=errors, **opts)


@DATASETS.register("phantom2d")
def _load_phantom2d(root, *, fold=None, part="all", errors=None, n=20, seed=0, **opts):
    _no_folds("phantom2d", fold, part)
    _no_root("phantom2d", root)
    _check_opts("phantom2d", make_phantom_2d, opts, extra=("n", "seed"))
    return phantom_dataset_2d(n, seed, **opts)


@DATASETS.register("phantom3d")
def _load_phantom3d(root, *, fold=None, part="all", errors=None, n=12, seed=0, **opts):
    _no_folds("phantom3d", fold, part)
    _no_root("phantom3d", root)
    _check_opts("phantom3d", make_phantom_3d, opts, extra=("n", "seed"))
    return phantom_dataset_3d(n, seed, **opts)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    fold: int | None = None,
    part: str = "all",
    errors: list | None = None,
    lazy: bool = False,
    **opts: Any,
) -> list[dict[str, Any]]:
    """Read a registered dataset as a list of sample dicts.

    Parameters
    ----------
    name : one of ``DATASETS.names()`` (case-insensitive).
    root : dataset folder; None uses :func:`default_data_root` for ``busi``
        and ``bus-bra``; ``folder``, ``coco``, ``datalist`` and ``stu`` need one; ``samples``,
        ``phantom2d`` and ``phantom3d`` take none.
    fold, part : fold and part (``"all"``, ``"train"``, ``"val"``,
        ``"test"``): BUS-BRA's official folds; for ``busi``, ``folder`` and
        ``stu`` a patient-level ``cv``-fold split (option ``cv``, default 5; see
        :func:`_cv_part`); the generated datasets need ``part="all"``.
    errors : if a list, cases that fail to load are appended as
        ``(case_id, message)`` and skipped; if None the first one raises.
    lazy : where the reader can (``bus-bra``, ``folder``, ``coco`` with raster images),
        return an index of :class:`~flipseg.data.sample.LazySample` entries whose images
        are read when used, so memory does not grow with the dataset; the other readers
        load as before.
    opts : passed to the loader (e.g. ``include_normal=True`` for BUSI,
        ``cv="10"`` for BUS-BRA, ``n=``/``seed=`` for phantoms).

    Raises
    ------
    FlipsegError
        Unknown name (the message lists the valid ones), a missing folder
        (``dataset folder not found: PATH``), unknown options, or bad
        fold/part.
    """
    loader = DATASETS.get(str(name).lower())
    if lazy and "lazy" in inspect.signature(loader).parameters:
        opts["lazy"] = True
    return loader(root, fold=fold, part=part, errors=errors, **opts)
