"""Masks as DICOM Segmentation objects (highdicom) referencing their source DICOM images.

One SEG file per source image (a single-frame file, one frame of a multi-frame file, or a
series): BINARY segmentation, one segment per box ("lesion 1", "lesion 2" ...; segmented
property Morphologically abnormal structure / Lesion, algorithm type AUTOMATIC, the
algorithm named ``flipseg <method>``), in the study and frame of reference of the source.

Limits (highdicom's): a source without a Frame of Reference UID (most 2D ultrasound) must
be single-frame; a series needs its Frame of Reference, positions and orientation. A source
lacking SliceThickness gets the slice spacing read with it, in memory only, for the SEG's
pixel measures.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save

__all__ = ["write_dicom_seg"]


def _source_datasets(files: Sequence[str | Path], slice_thickness: float) -> list[Any]:
    import pydicom

    out = []
    for f in files:
        ds = pydicom.dcmread(str(f))
        if "FrameOfReferenceUID" in ds and "SliceThickness" not in ds:
            ds.SliceThickness = float(slice_thickness)
        out.append(ds)
    return out


def write_dicom_seg(
    path: str | Path,
    source_files: Sequence[str | Path],
    masks: Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    frame: int | None = None,
    slice_thickness: float = 1.0,
    algorithm: str = "flipseg",
    version: str = "",
    series_number: int = 100,
) -> Path:
    """Write the masks of one source image as a DICOM-SEG file.

    Parameters
    ----------
    path : the SEG file to write.
    source_files : the source: one file, or the slices of a series in array order.
    masks : one bool array per segment, each the shape of the image as read: ``(H, W)``
        for a single-frame file or one frame, ``(F, H, W)`` for all frames, ``(D, H, W)``
        for a series.
    labels : segment labels (default ``lesion 1``, ``lesion 2`` ...).
    frame : the frame (from 0) of a multi-frame source the 2D masks lie on.
    slice_thickness : slice spacing in mm, used when a source with a frame of reference
        lacks SliceThickness.

    Raises
    ------
    FlipsegError
        No mask, masks of another shape than the source, or a source highdicom cannot
        build a SEG for (the message says why).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not masks:
        raise FlipsegError(f"{Path(path).name}: no mask to write")
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks], axis=-1)  # [..., H, W, S]
    sources = _source_datasets(source_files, slice_thickness)
    first = sources[0]
    n_frames = int(getattr(first, "NumberOfFrames", 1) or 1)
    rows, cols = int(first.Rows), int(first.Columns)
    if stack.ndim == 3:  # one 2D image: [H, W, S]
        if frame is not None and n_frames > 1:
            full = np.zeros((n_frames, rows, cols, stack.shape[-1]), bool)
            full[frame] = stack
            stack = full
        else:
            stack = stack[None]
    if stack.shape[1:3] != (rows, cols) or stack.shape[0] != max(len(sources), 1) * (
            n_frames if len(sources) == 1 else 1):
        raise FlipsegError(f"{Path(path).name}: masks of shape {stack.shape[:3]} do not fit "
                           f"the source ({len(sources)} file(s), {n_frames} frame(s), "
                           f"{rows}x{cols})")
    labels = list(labels or [f"lesion {k}" for k in range(1, stack.shape[-1] + 1)])
    family = codes.cid7162.ArtificialIntelligence
    algo = hd.AlgorithmIdentificationSequence(name=algorithm, version=version or "0",
                                              family=family)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=str(label)[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo)
        for k, label in enumerate(labels, start=1)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # highdicom's person-name advice
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=stack.astype(np.uint8),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                series_number=int(series_number), sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="flipseg", manufacturer_model_name=algorithm,
                software_versions=version or "0", device_serial_number="0",
                series_description=f"{algorithm} masks from boxes"[:64],
                omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise FlipsegError(f"DICOM-SEG for {Path(source_files[0]).name}: {reason}") from None
    return atomic_save(path, lambda tmp: seg.save_as(tmp))
