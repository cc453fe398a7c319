"""The sample dict every reader returns (see DESIGN.md, "Data contract")."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError, MaskShapeError

__all__ = ["LABELS", "make_sample", "try_case"]

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
