"""Pictures: mask overlays, erase curves and small report figures (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from flipseg.boxes import Box
from flipseg.io_utils import atomic_save

__all__ = [
    "to_uint8",
    "overlay",
    "heat_overlay",
    "mask_panels",
    "save_png",
    "plot_erase_curve",
    "mid_slices",
    "PLANES",
    "plane_overlays",
]

#: Names of the three planes of :func:`mid_slices`, in its order.
PLANES = ("axial", "coronal", "sagittal")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities to uint8 (values already in 0-255 are kept, others are stretched)."""
    img = np.asarray(image, np.float32)
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0 and hi <= 255:
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    gt: np.ndarray | None = None,
    box: Box | None = None,
    given_box: Box | None = None,
    alpha: float = 0.25,
) -> np.ndarray:
    """RGB uint8 picture of a 2D image with the predicted mask (red fill + contour),
    the ground truth (green contour) and the box (yellow); ``given_box`` (cyan) is the
    user's box when ``box`` is its refined version (``--refine-box``)."""
    g = to_uint8(image)
    rgb = np.stack([g, g, g], -1).astype(np.float32)
    if mask is not None and mask.any():
        red = np.array([255, 40, 40], np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * red
    rgb = rgb.astype(np.uint8)
    thick = max(1, int(round(max(image.shape) / 300)))
    for m, color in ((mask, (255, 40, 40)), (gt, (40, 220, 40))):
        if m is not None and m.any():
            cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, cnts, -1, color, thick)
    for b, color in ((given_box, (0, 200, 230)), (box, (250, 220, 0))):
        if b is not None:
            cv2.rectangle(rgb, (b.x0, b.y0), (b.x1 - 1, b.y1 - 1), color, thick)
    return rgb


def heat_overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 picture of a 2D image under a heat map in [0, 1] (JET colours,
    blended with weight ``alpha``), e.g. a Grad-CAM or a lesion probability map."""
    g = to_uint8(image)
    h = np.asarray(heat, np.float32)
    if h.shape != g.shape:
        raise ValueError(f"heat map {h.shape} does not match image {g.shape}")
    h8 = np.clip(np.nan_to_num(h) * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(h8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).astype(np.float32)
    grey = np.stack([g, g, g], -1).astype(np.float32)
    return np.clip((1 - alpha) * grey + alpha * colour, 0, 255).astype(np.uint8)


def mask_panels(image: np.ndarray, box: Box, masks: dict[str, np.ndarray], *,
                gt: np.ndarray | None = None, margin: float = 0.3, height: int = 200) -> np.ndarray:
    """One RGB picture: a tile per named mask, side by side, each an :func:`overlay` of
    the region around ``box`` (``margin`` of the box on every side) with the name above
    it (e.g. the voters of ``flip-vote`` and their vote)."""
    view = box.expand(margin, relative=True).clip(np.shape(image))
    sl = view.slices()
    crop_box = box.relative_to(view)
    tiles = []
    for name, m in masks.items():
        t = overlay(np.asarray(image)[sl], np.asarray(m, bool)[sl],
                    gt=None if gt is None else np.asarray(gt, bool)[sl], box=crop_box)
        w = max(1, int(round(t.shape[1] * height / t.shape[0])))
        t = cv2.resize(t, (w, height), interpolation=cv2.INTER_NEAREST)
        title = np.full((24, w, 3), 255, np.uint8)
        cv2.putText(title, name, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles += [np.vstack([title, t]), np.full((height + 24, 4, 3), 255, np.uint8)]
    return np.hstack(tiles[:-1]) if tiles else np.zeros((height, 1, 3), np.uint8)


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 greyscale/RGB (or bool) array as PNG, atomically."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = to_uint8(arr)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)

    def write(tmp: str) -> None:
        ok, buf = cv2.imencode(".png", arr)
        if not ok:
            raise OSError(f"could not encode PNG for {path}")
        Path(tmp).write_bytes(buf.tobytes())

    return atomic_save(path, write)


def plot_erase_curve(path: str | Path, curves: dict[str, np.ndarray], title: str = "") -> Path:
    """Erased area, normal score and (when known) Dice against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    step = curves["step"]
    ax.plot(step, curves["erased_area"], label="erased area (fraction of box)")
    ax.plot(step, curves["normal_score"], label="normal score")
    dice = np.asarray(curves.get("dice", []), float)
    if dice.size and np.isfinite(dice).any():
        ax.plot(step, dice, label="Dice")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    try:
        return atomic_save(path, write)
    finally:
        plt.close(fig)


def mid_slices(volume: np.ndarray, center: Sequence[int] | None = None) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices of a (D, H, W) volume through ``center``."""
    c = [s // 2 for s in volume.shape] if center is None else [int(v) for v in center]
    return [volume[c[0]], volume[:, c[1]], volume[:, :, c[2]]]


def _plane_box(box: Box, plane: int) -> Box:
    """The 2D box a 3D box leaves in plane 0 (y, x), 1 (z, x) or 2 (z, y)."""
    if plane == 0:
        return Box(box.x0, box.y0, box.x1, box.y1)
    if plane == 1:
        return Box(box.x0, box.z0, box.x1, box.z1)
    return Box(box.y0, box.z0, box.y1, box.z1)


def _stretch_rows(array: np.ndarray, factor: float) -> np.ndarray:
    """Repeat rows (nearest) so that a slab of anisotropic voxels looks right."""
    if factor <= 1.0:
        return array
    idx = np.minimum((np.arange(int(round(array.shape[0] * factor))) / factor).astype(int),
                     array.shape[0] - 1)
    return array[idx]


def plane_overlays(
    volume: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    gt: np.ndarray | None = None,
    box: Box | None = None,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Overlays (:func:`overlay`) of the axial, coronal and sagittal slices of a
    (D, H, W) volume through the box centre (the volume centre without a box).

    With ``spacing`` (z, y, x) the coronal and sagittal pictures repeat slices
    so that thick slices are not squashed. Returns ``{plane name: RGB uint8}``.
    """
    center = None if box is None else [int((lo + hi - 1) // 2) for lo, hi in zip(box.lo, box.hi)]
    vols = [mid_slices(np.asarray(volume), center)]
    for m in (mask, gt):
        vols.append(mid_slices(np.asarray(m, bool), center) if m is not None else [None] * 3)
    zf = 1.0
    if spacing is not None:
        zf = float(spacing[0]) / float(min(spacing[1:]))
    out = {}
    for p, name in enumerate(PLANES):
        img, m, g = vols[0][p], vols[1][p], vols[2][p]
        b = _plane_box(box, p) if box is not None else None
        if p > 0 and zf > 1.0:
            img = _stretch_rows(img, zf)
            m = _stretch_rows(m, zf) if m is not None else None
            g = _stretch_rows(g, zf) if g is not None else None
            if b is not None:
                b = Box(b.x0, int(round(b.y0 * zf)), b.x1, int(round(b.y1 * zf)))
        out[name] = overlay(img, m, gt=g, box=b)
    return out
