"""nnU-Net v2 raw datasets (``nnUNet_raw/DatasetXXX_Name``), as its documentation lays
them out::

    DatasetXXX_Name/
      dataset.json          channel_names, labels, numTraining, file_ending
      imagesTr/<case>_0000.png | .nii.gz
      labelsTr/<case>.png | .nii.gz

2D images are written as 8-bit grey PNGs (the 0-255 intensities, rounded), volumes as
NIfTI with their geometry. Labels are 0 background, 1 lesion and, with ``ignore``, 2
``ignore`` (nnU-Net's ignore label: the highest label, excluded from the loss).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.data.io import write_png
from flipseg.errors import FlipsegError
from flipseg.export.masks import write_mask_nifti
from flipseg.io_utils import atomic_write_text

__all__ = ["LESION", "IGNORE", "case_name", "dataset_folder", "write_case", "write_dataset_json"]

LESION = 1
IGNORE = 2
_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def case_name(name: str) -> str:
    """A case identifier nnU-Net takes: runs of other characters than letters, digits,
    ``_``, ``.`` and ``-`` become ``_``."""
    return _BAD.sub("_", name).strip("_") or "case"


def dataset_folder(root: str | Path, dataset_id: int, name: str) -> Path:
    """``root/Dataset<ID>_<Name>`` (ID on three digits, as nnU-Net names them)."""
    if not 1 <= int(dataset_id) <= 999:
        raise FlipsegError(f"nnU-Net dataset id {dataset_id} must be 1-999")
    return Path(root) / f"Dataset{int(dataset_id):03d}_{case_name(name)}"


def write_case(folder: str | Path, case: str, image: np.ndarray, labels: np.ndarray, *,
               spacing: Sequence[float] | None = None, meta: dict[str, Any] | None = None) -> None:
    """One training case: ``imagesTr/<case>_0000`` and ``labelsTr/<case>`` (``.png`` in 2D,
    ``.nii.gz`` in 3D). ``image`` is on the 0-255 scale; ``labels`` uint8 0/1[/2]."""
    folder = Path(folder)
    image = np.asarray(image)
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape != image.shape:
        raise FlipsegError(f"nnU-Net case {case}: labels {labels.shape} != image {image.shape}")
    if image.ndim == 2:
        write_png(folder / "imagesTr" / f"{case}_0000.png",
                  np.clip(np.rint(image), 0, 255).astype(np.uint8))
        write_png(folder / "labelsTr" / f"{case}.png", labels)
    else:
        write_mask_nifti(folder / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.float32),
                         spacing=spacing, meta=meta)
        write_mask_nifti(folder / "labelsTr" / f"{case}.nii.gz", labels, spacing=spacing, meta=meta)


def write_dataset_json(folder: str | Path, *, num_training: int, file_ending: str,
                       ignore: bool = False, channel: str = "US") -> Path:
    """``dataset.json``: one input channel, labels background/lesion[/ignore]."""
    labels = {"background": 0, "lesion": LESION}
    if ignore:
        labels["ignore"] = IGNORE
    doc = {"channel_names": {"0": channel}, "labels": labels, "numTraining": int(num_training),
           "file_ending": file_ending, "name": Path(folder).name,
           "description": "masks made from boxes by flipseg label"}
    return atomic_write_text(Path(folder) / "dataset.json", json.dumps(doc, indent=2))
