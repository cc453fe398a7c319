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
    "legend_strip",
    "contact_sheet",
    "case_sheet",
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


#: RGB colours of what :func:`overlay` draws, with the words its legend uses for them.
PREDICTION = ("prediction", (255, 40, 40))
TRUTH = ("truth", (40, 220, 40))
BOX = ("box", (250, 220, 0))
GIVEN_BOX = ("given box", (0, 200, 230))

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.45
_LINE_HEIGHT = 18  # px per text line of legends and titles


def _thickness(shape: Sequence[int]) -> int:
    """Line width (px) of contours and boxes in a picture of ``shape``."""
    return max(1, int(round(max(shape[:2]) / 300)))


def _upscale_factor(shape: Sequence[int], min_side: int) -> int:
    """The whole factor k that makes the shorter side of ``shape`` at least ``min_side``."""
    return max(1, -(-int(min_side) // max(1, min(shape[:2])))) if min_side > 0 else 1


def _blocks(mask: np.ndarray, k: int) -> np.ndarray:
    """Each pixel of a 2D mask as a k x k block (nearest-neighbour enlargement)."""
    m = np.asarray(mask, bool)
    return m if k == 1 else np.repeat(np.repeat(m, k, axis=0), k, axis=1)


def _draw_box(rgb: np.ndarray, box: Box, k: int, colour: tuple[int, int, int], thick: int) -> None:
    """Draw ``box`` (image pixels) into ``rgb`` (enlarged k times) as four bands ``thick``
    px wide, inside the blocks of the box's edge pixels, clipped to the picture."""
    h, w = rgb.shape[:2]
    y0, y1, x0, x1 = box.y0 * k, box.y1 * k, box.x0 * k, box.x1 * k  # half-open, picture px
    t = max(1, min(thick, (y1 - y0) // 2 or 1, (x1 - x0) // 2 or 1))
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if cy0 >= cy1 or cx0 >= cx1:
        return
    c = np.array(colour, np.uint8)
    for r0, r1 in ((y0, y0 + t), (y1 - t, y1)):  # top and bottom
        rgb[max(r0, 0) : max(min(r1, h), 0), cx0:cx1] = c
    for c0, c1 in ((x0, x0 + t), (x1 - t, x1)):  # left and right
        rgb[cy0:cy1, max(c0, 0) : max(min(c1, w), 0)] = c


def legend_strip(width: int, items: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """A dark RGB uint8 strip, ``width`` px wide, with a coloured swatch and the word for
    each ``(word, rgb)`` item, left to right, wrapping onto more lines when needed.

    Returns shape ``(lines * 18 + 6, width, 3)``; ``(0, width, 3)`` without items.
    """
    width = max(1, int(width))
    placed: list[list[tuple[int, str, tuple[int, int, int]]]] = [[]]
    x = 6
    for word, colour in items:
        need = 12 + 4 + _text_width(word)
        if placed[-1] and x + need > width - 4:
            placed.append([])
            x = 6
        placed[-1].append((x, word, colour))
        x += need + 12
    if not items:
        return np.zeros((0, width, 3), np.uint8)
    strip = np.full((len(placed) * _LINE_HEIGHT + 6, width, 3), 32, np.uint8)
    for row, line in enumerate(placed):
        y = 4 + row * _LINE_HEIGHT
        for x0, word, colour in line:
            cv2.rectangle(strip, (x0, y + 2), (x0 + 11, y + 13), tuple(int(c) for c in colour), -1)
            cv2.putText(strip, word, (x0 + 16, y + 12), _FONT, _FONT_SCALE, (235, 235, 235), 1,
                        cv2.LINE_AA)
    return strip


def overlay(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    gt: np.ndarray | None = None,
    box: Box | None = None,
    given_box: Box | None = None,
    alpha: float = 0.25,
    min_side: int = 256,
    legend: bool = True,
) -> np.ndarray:
    """RGB uint8 picture of a 2D image with the predicted mask (red fill + contour),
    the ground truth (green contour) and the box (yellow); ``given_box`` (cyan) is the
    user's box when ``box`` is its refined version (``--refine-box``).

    Parameters
    ----------
    image : array (H, W), any intensity range (see :func:`to_uint8`)
    mask, gt : bool arrays (H, W) or None
    box, given_box : boxes in image pixels, or None
    alpha : weight of the red fill
    min_side : the picture is enlarged by the whole factor ``k = ceil(min_side / min(H, W))``
        (``k = 1`` when the image is large enough, or ``min_side <= 0``): the image
        bilinearly, the masks as k x k blocks, and the contours and boxes are drawn
        after enlarging, so lines stay sharp. Box edges lie on the edge pixels' blocks.
    legend : add a dark strip below the picture with a swatch and a word for each thing
        drawn (prediction, truth, box, given box); none when nothing is drawn.

    Returns
    -------
    ndarray, uint8, shape ``(k * H + legend height, k * W, 3)``
    """
    g = to_uint8(image)
    k = _upscale_factor(g.shape, min_side)
    if k > 1:
        g = cv2.resize(g, (g.shape[1] * k, g.shape[0] * k), interpolation=cv2.INTER_LINEAR)
    rgb = np.stack([g, g, g], -1).astype(np.float32)
    big = None if mask is None else _blocks(mask, k)
    if big is not None and big.any():
        red = np.array(PREDICTION[1], np.float32)
        rgb[big] = (1 - alpha) * rgb[big] + alpha * red
    rgb = rgb.astype(np.uint8)
    thick = _thickness(rgb.shape)
    drawn = []
    for m, (word, colour) in ((big, PREDICTION), (None if gt is None else _blocks(gt, k), TRUTH)):
        if m is None:
            continue
        drawn.append((word, colour))
        if m.any():
            cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, cnts, -1, colour, thick)
    for b, (word, colour) in ((given_box, GIVEN_BOX), (box, BOX)):
        if b is not None:
            drawn.append((word, colour))
            _draw_box(rgb, b, k, colour, thick)
    if legend and drawn:
        order = [PREDICTION[0], TRUTH[0], BOX[0], GIVEN_BOX[0]]
        drawn.sort(key=lambda item: order.index(item[0]))
        rgb = np.vstack([rgb, legend_strip(rgb.shape[1], drawn)])
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
                    gt=None if gt is None else np.asarray(gt, bool)[sl], box=crop_box,
                    min_side=height, legend=False)
        w = max(1, int(round(t.shape[1] * height / t.shape[0])))
        shrink = cv2.INTER_AREA if t.shape[0] > height else cv2.INTER_NEAREST
        t = cv2.resize(t, (w, height), interpolation=shrink)
        title = np.full((24, w, 3), 255, np.uint8)
        cv2.putText(title, name, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles += [np.vstack([title, t]), np.full((height + 24, 4, 3), 255, np.uint8)]
    return np.hstack(tiles[:-1]) if tiles else np.zeros((height, 1, 3), np.uint8)


def _text_width(text: str) -> int:
    return int(cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0])


def _title_bar(title: str, width: int) -> np.ndarray:
    """White bar with ``title`` in black, one text line per line of ``title``; lines too
    long for ``width`` are cut and end in ``...``."""
    lines = str(title).split("\n")
    bar = np.full((len(lines) * _LINE_HEIGHT + 6, width, 3), 255, np.uint8)
    for row, line in enumerate(lines):
        text = line
        if _text_width(text) > width - 8:
            while text and _text_width(text + "...") > width - 8:
                text = text[:-1]
            text += "..."
        cv2.putText(bar, text, (4, 16 + row * _LINE_HEIGHT), _FONT, _FONT_SCALE, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return bar


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    """An RGB tile scaled to fit a ``size`` x ``size`` square (aspect kept: area averaging
    when shrinking, nearest when enlarging), centred on a light grey square."""
    t = np.asarray(tile)
    if t.ndim == 2:
        t = np.stack([to_uint8(t)] * 3, -1)
    scale = size / max(t.shape[:2])
    h = max(1, min(size, int(round(t.shape[0] * scale))))
    w = max(1, min(size, int(round(t.shape[1] * scale))))
    if (h, w) != t.shape[:2]:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        t = cv2.resize(np.ascontiguousarray(t, np.uint8), (w, h), interpolation=interp)
    cell = np.full((size, size, 3), 200, np.uint8)
    y, x = (size - h) // 2, (size - w) // 2
    cell[y : y + h, x : x + w] = t
    return cell


def contact_sheet(
    tiles: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    columns: int = 4,
    tile_size: int = 256,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> np.ndarray:
    """Pictures laid out in a grid, each under its title, e.g. the worst cases of a run.

    Parameters
    ----------
    tiles : RGB uint8 pictures (H_i, W_i, 3) (or greyscale (H_i, W_i)), any sizes
    titles : one per tile; ``"\n"`` starts a new line, lines too long are cut
    columns : tiles per row (fewer when there are fewer tiles)
    tile_size : each tile is scaled to fit a square of this many pixels (aspect kept)
    legend : ``(word, rgb)`` items of a :func:`legend_strip` under the grid (none if empty)

    Returns
    -------
    ndarray, uint8, shape ``(rows * (title + tile_size + 4) - 4 + legend, columns *
    (tile_size + 4) - 4, 3)``; all title bars have the height of the tallest.

    Raises
    ------
    ValueError
        No tiles, or not one title per tile.
    """
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    if len(titles) != len(tiles):
        raise ValueError(f"{len(tiles)} tiles but {len(titles)} titles")
    cols = max(1, min(int(columns), len(tiles)))
    gap = 4
    n_lines = max(str(t).count("\n") + 1 for t in titles)
    cells = []
    for tile, title in zip(tiles, titles):
        bar = _title_bar(str(title) + "\n" * (n_lines - 1 - str(title).count("\n")), tile_size)
        cells.append(np.vstack([bar, _fit(tile, tile_size)]))
    ch, cw = cells[0].shape[:2]
    rows = -(-len(cells) // cols)
    sheet = np.full((rows * (ch + gap) - gap, cols * (cw + gap) - gap, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        sheet[r * (ch + gap) : r * (ch + gap) + ch, c * (cw + gap) : c * (cw + gap) + cw] = cell
    if legend:
        sheet = np.vstack([sheet, legend_strip(sheet.shape[1], legend)])
    return sheet


def _case_view(image: np.ndarray, box: Box | None, masks: Sequence[np.ndarray | None],
               margin: float) -> tuple[tuple[slice, ...], Box]:
    """The region a case tile shows: the box, the predicted and the true mask together,
    grown by ``margin`` of its size on every side and clipped to the image."""
    shape = np.shape(image)
    parts = [box.clip(shape)] if box is not None else []
    parts += [Box.from_mask(m) for m in masks if m is not None and np.any(m)]
    parts = [b for b in parts if b.is_valid()]
    if not parts:
        return tuple(slice(0, n) for n in shape), Box.from_lo_hi([0, 0], shape)
    lo = np.min([b.lo for b in parts], axis=0)
    hi = np.max([b.hi for b in parts], axis=0)
    view = Box.from_lo_hi(lo, hi).expand(margin, relative=True).clip(shape)
    return view.slices(), view


def case_sheet(
    cases: Sequence[tuple[np.ndarray, Box | None, np.ndarray | None, np.ndarray | None, str]],
    *,
    columns: int = 4,
    tile_size: int = 256,
    margin: float = 0.3,
) -> np.ndarray:
    """A :func:`contact_sheet` of cases: each tile an :func:`overlay` of the region around
    its box, prediction and truth (grown by ``margin`` of its size), under its title.

    Parameters
    ----------
    cases : ``(image, box, mask, gt, title)`` per case. ``image`` (H, W) or a (D, H, W)
        volume (then its axial slice through the box centre, else through the middle of
        the masks, is shown); ``box`` a :class:`Box` or None; ``mask`` the prediction and
        ``gt`` the truth, bool arrays of the image's shape or None.
    columns, tile_size : as in :func:`contact_sheet`
    margin : context around the region, as a fraction of its size

    Returns
    -------
    ndarray, uint8 RGB, with a legend of the colours drawn under the grid.

    Raises
    ------
    ValueError
        No cases, or a mask whose shape differs from its image's.
    """
    tiles, titles, seen = [], [], set()
    for image, box, mask, gt, title in cases:
        img = np.asarray(image)
        for name, m in (("prediction", mask), ("truth", gt)):
            if m is not None and np.shape(m) != img.shape:
                raise ValueError(f"case {title!r}: {name} shape {np.shape(m)} differs from image "
                                 f"shape {img.shape}")
        if img.ndim == 3:
            img, box, mask, gt = _axial(img, box, mask, gt)
        sl, view = _case_view(img, box, [mask, gt], margin)
        crop_box = box.clip(img.shape).relative_to(view) if box is not None else None
        tiles.append(overlay(img[sl], None if mask is None else np.asarray(mask, bool)[sl],
                             gt=None if gt is None else np.asarray(gt, bool)[sl], box=crop_box,
                             min_side=tile_size, legend=False))
        titles.append(title)
        seen.update(n for n, v in (("p", mask), ("t", gt), ("b", box)) if v is not None)
    items = [it for key, it in (("p", PREDICTION), ("t", TRUTH), ("b", BOX)) if key in seen]
    return contact_sheet(tiles, titles, columns=columns, tile_size=tile_size, legend=items)


def _axial(volume: np.ndarray, box: Box | None, mask: np.ndarray | None,
           gt: np.ndarray | None) -> tuple[np.ndarray, Box | None, np.ndarray | None,
                                           np.ndarray | None]:
    """The axial slice of a case through its box centre (else the middle of its masks,
    else of the volume), with the 2D box and mask slices."""
    if box is not None:
        z = int((box.z0 + box.z1 - 1) // 2) if box.ndim == 3 else volume.shape[0] // 2
    else:
        zs = np.nonzero(np.any([np.asarray(m, bool) for m in (mask, gt) if m is not None], axis=0)
                        .any(axis=(1, 2)))[0] if (mask is not None or gt is not None) else []
        z = int((zs[0] + zs[-1]) // 2) if len(zs) else volume.shape[0] // 2
    z = min(max(z, 0), volume.shape[0] - 1)
    box2 = _plane_box(box, 0) if box is not None else None
    return (volume[z], box2, None if mask is None else np.asarray(mask)[z],
            None if gt is None else np.asarray(gt)[z])


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
