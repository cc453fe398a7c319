"""2D-to-3D Flip Learning: a 2D model applied to every axial slice of a 3D box.

The paper's "2D to 3D" comparison (Table 7): each slice ``z0 .. z1-1`` of the
box is segmented with the 2D box ``(x0, y0, x1, y1)`` (the 3D box's x/y
extent) and the slice masks are stacked. All slices of all boxes of a call
run in one batched :meth:`FlipModel.segment_many`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.flip.infer import FlipModel, default_model_path
from flipseg.segmenters import Segmenter

__all__ = ["FlipSlicesSegmenter", "slice_boxes"]


def slice_boxes(box: Box) -> list[tuple[int, Box]]:
    """``(z, 2D box)`` for every axial slice of a 3D box."""
    if box.ndim != 3:
        raise FlipsegError(f"flip2d-slices needs 3D boxes, got ({box})")
    return [(z, Box(box.x0, box.y0, box.x1, box.y1)) for z in range(box.z0, box.z1)]


class FlipSlicesSegmenter(Segmenter):
    """``--method flip2d-slices``: a 2D Flip model slice by slice (``model=`` a 2D run).

    Parameters
    ----------
    model : 2D run folder or model file (default: the shipped 2D model)
    batch_size : slices erased in one vectorised environment
    prior_fusion : the ellipse-prior fusion of each slice's mask (default 0: off). Each
        slice only knows the box's in-plane rectangle, so its ellipse is not the
        ellipsoid's cross-section and the prior would widen the lesion's end slices; the
        paper's 2D-to-3D baseline is the 2D model's own output, slice by slice.
    """

    name = "flip2d-slices"
    dims = (3,)

    def __init__(self, model: str | Path | None = None, batch_size: int = 64,
                 prior_fusion: float = 0.0) -> None:
        path = Path(model) if model else default_model_path(2)
        if model is None and not path.exists():
            raise FlipsegError(
                f"no default 2D Flip model shipped at {path}; give model= a 2D run "
                "(`flipseg train flip --dims 2`)"
            )
        self.model = FlipModel.load(path)
        if self.model.cfg.dims != 2:
            raise FlipsegError(f"flip2d-slices needs a 2D Flip model, {path} is {self.model.cfg.dims}D")
        self.model.cfg = self.model.cfg.with_overrides(prior_fusion=float(prior_fusion))
        self.batch_size = batch_size

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(
        self, images: Sequence[np.ndarray], boxes: Sequence[Box], *, seed: int = 0
    ) -> list[np.ndarray]:
        jobs: list[tuple[int, int]] = []  # (case, z)
        slices: list[np.ndarray] = []
        boxes2d: list[Box] = []
        for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
            image = np.asarray(image)
            if image.ndim != 3:
                raise FlipsegError(f"flip2d-slices segments volumes, got shape {image.shape}")
            for z, b in slice_boxes(box.validate(image.shape)):
                jobs.append((i, z))
                slices.append(image[z])
                boxes2d.append(b)
        res = self.model.segment_many(slices, boxes2d, batch_size=self.batch_size, seed=seed)
        masks = [np.zeros(np.shape(im), bool) for im in images]
        for (i, z), r in zip(jobs, res, strict=True):
            masks[i][z] = r.mask
        return masks

