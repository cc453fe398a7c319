"""Masks as COCO annotations with compressed RLE segmentations (pycocotools).

A written file loads with ``pycocotools.coco.COCO`` and ``COCO.annToMask`` gives back the
masks exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text

__all__ = ["coco_annotation", "encode_rle", "write_coco"]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A 2D bool mask as COCO compressed RLE: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise FlipsegError(f"COCO RLE holds 2D masks, got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_annotation(mask: np.ndarray, *, ann_id: int, image_id: Any, category_id: int,
                    **extra: Any) -> dict[str, Any]:
    """One COCO annotation: ``segmentation`` (RLE), ``area`` (mask pixels), ``bbox`` (the
    mask's tight ``[x, y, w, h]``, all zeros for an empty mask), ``iscrowd`` 0, plus
    ``extra`` keys (e.g. ``attributes``)."""
    m = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(m)
    bbox = [0.0, 0.0, 0.0, 0.0]
    if xs.size:
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
    return {"id": int(ann_id), "image_id": image_id, "category_id": int(category_id),
            "segmentation": encode_rle(m), "area": float(m.sum()), "bbox": bbox,
            "iscrowd": 0, **extra}


def write_coco(path: str | Path, images: Sequence[dict[str, Any]],
               annotations: Sequence[dict[str, Any]],
               categories: Sequence[dict[str, Any]], *, description: str = "") -> Path:
    """Write a COCO document (``info``, ``images``, ``annotations``, ``categories``)."""
    doc = {"info": {"description": description, "version": "1.0"}, "licenses": [],
           "images": list(images), "annotations": list(annotations),
           "categories": list(categories)}
    return atomic_write_text(path, json.dumps(doc, indent=1))
