"""One box type for 2D and 3D, and the papers' box-shift protocol.

Coordinates are integer pixels (voxels), half-open: a 2D box ``(x0, y0, x1, y1)``
covers columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``. A 3D box adds
``z0, z1`` (slices). Arrays are indexed ``[y, x]`` in 2D and ``[z, y, x]`` in 3D;
:meth:`Box.slices` gives the matching tuple of slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flipseg.errors import FlipsegError

__all__ = ["Box", "SHIFT_LEVELS", "parse_shift_level", "shift_box", "shifted_boxes"]

#: The papers' shift levels in pixels (voxels): each box edge moves by a random
#: amount drawn from the range.
SHIFT_LEVELS: dict[str, tuple[int, int]] = {
    "0-10": (0, 10),
    "10-20": (10, 20),
    "20-30": (20, 30),
}


@dataclass(frozen=True)
class Box:
    """Axis-aligned half-open box.

    Parameters
    ----------
    x0, y0, x1, y1 : int
        Column/row bounds, ``x0 < x1`` and ``y0 < y1``.
    z0, z1 : int or None
        Slice bounds for a 3D box; both None for 2D.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    z0: int | None = None
    z1: int | None = None

    def __post_init__(self) -> None:
        if (self.z0 is None) != (self.z1 is None):
            raise FlipsegError(f"3D box needs both z0 and z1, got z0={self.z0}, z1={self.z1}")
        for name in ("x0", "y0", "x1", "y1", "z0", "z1"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, int(v))

    # ---------------------------------------------------------------- basics
    @property
    def ndim(self) -> int:
        return 2 if self.z0 is None else 3

    @property
    def lo(self) -> tuple[int, ...]:
        """Lower corner in array axis order ((z,) y, x)."""
        return (self.y0, self.x0) if self.ndim == 2 else (self.z0, self.y0, self.x0)

    @property
    def hi(self) -> tuple[int, ...]:
        """Upper (exclusive) corner in array axis order ((z,) y, x)."""
        return (self.y1, self.x1) if self.ndim == 2 else (self.z1, self.y1, self.x1)

    @property
    def shape(self) -> tuple[int, ...]:
        """Extent in array axis order."""
        return tuple(h - l for l, h in zip(self.lo, self.hi))

    @property
    def size(self) -> int:
        """Number of pixels (voxels) inside."""
        return int(np.prod(self.shape)) if self.is_valid() else 0

    @property
    def center(self) -> tuple[float, ...]:
        """Centre in array axis order (continuous coordinates)."""
        return tuple((l + h) / 2.0 for l, h in zip(self.lo, self.hi))

    def is_valid(self) -> bool:
        return all(h > l for l, h in zip(self.lo, self.hi))

    def slices(self) -> tuple[slice, ...]:
        """Slices selecting the box from an array (clip first if it may leave it)."""
        return tuple(slice(l, h) for l, h in zip(self.lo, self.hi))

    def as_tuple(self) -> tuple[int, ...]:
        """``(x0, y0, x1, y1)`` or ``(x0, y0, x1, y1, z0, z1)``."""
        t = (self.x0, self.y0, self.x1, self.y1)
        return t if self.ndim == 2 else t + (self.z0, self.z1)

    def __str__(self) -> str:
        return ",".join(str(v) for v in self.as_tuple())

    # ---------------------------------------------------------- construction
    @classmethod
    def from_lo_hi(cls, lo: Sequence[int], hi: Sequence[int]) -> "Box":
        """Build from corners in array axis order ((z,) y, x)."""
        if len(lo) == 2:
            return cls(x0=lo[1], y0=lo[0], x1=hi[1], y1=hi[0])
        if len(lo) == 3:
            return cls(x0=lo[2], y0=lo[1], x1=hi[2], y1=hi[1], z0=lo[0], z1=hi[0])
        raise FlipsegError(f"box corners must have 2 or 3 coordinates, got {tuple(lo)}")

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box":
        """Tight box around the non-zero pixels of a 2D/3D mask.

        Raises
        ------
        FlipsegError
            If the mask is empty or not 2D/3D.
        """
        mask = np.asarray(mask)
        if mask.ndim not in (2, 3):
            raise FlipsegError(f"mask must be 2D or 3D, got shape {mask.shape}")
        idx = np.nonzero(mask)
        if idx[0].size == 0:
            raise FlipsegError("cannot make a box from an empty mask")
        lo = [int(i.min()) for i in idx]
        hi = [int(i.max()) + 1 for i in idx]
        return cls.from_lo_hi(lo, hi)

    @classmethod
    def parse(cls, text: str) -> "Box":
        """Parse ``"x0,y0,x1,y1"`` or ``"x0,y0,x1,y1,z0,z1"``."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            vals = [int(round(float(p))) for p in parts]
        except ValueError:
            raise FlipsegError(f"box {text!r} is not a list of numbers like x0,y0,x1,y1") from None
        if len(vals) == 4:
            box = cls(*vals)
        elif len(vals) == 6:
            box = cls(*vals)
        else:
            raise FlipsegError(f"box {text!r} needs 4 (2D) or 6 (3D) numbers, got {len(vals)}")
        if not box.is_valid():
            raise FlipsegError(f"box {text!r} is empty (need x0<x1, y0<y1[, z0<z1])")
        return box

    # --------------------------------------------------------------- geometry
    def clip(self, shape: Sequence[int]) -> "Box":
        """Intersect with an image of ``shape`` (array order)."""
        self._check_dims(shape)
        lo = [min(max(l, 0), s) for l, s in zip(self.lo, shape)]
        hi = [min(max(h, 0), s) for h, s in zip(self.hi, shape)]
        return Box.from_lo_hi(lo, hi)

    def validate(self, shape: Sequence[int]) -> "Box":
        """Check the box against an image and return it clipped.

        Raises
        ------
        FlipsegError
            Wrong dimensionality, an empty box, or a box with no overlap with
            the image.
        """
        self._check_dims(shape)
        if not self.is_valid():
            raise FlipsegError(f"box ({self}) is empty")
        clipped = self.clip(shape)
        if not clipped.is_valid():
            raise FlipsegError(f"box ({self}) lies outside the image of shape {tuple(shape)}")
        return clipped

    def relative_to(self, view: "Box") -> "Box":
        """This box in the coordinates of a crop that starts at ``view``'s lower corner."""
        return Box.from_lo_hi([lo - v for lo, v in zip(self.lo, view.lo)],
                              [hi - v for hi, v in zip(self.hi, view.lo)])

    def expand(self, margin: float | Sequence[float], *, relative: bool = False) -> "Box":
        """Grow each side by ``margin`` pixels (or by ``margin * extent`` if relative)."""
        m = np.broadcast_to(np.asarray(margin, dtype=float), (self.ndim,))
        ext = np.asarray(self.shape, dtype=float)
        d = m * ext if relative else m
        lo = [int(np.floor(l - di)) for l, di in zip(self.lo, d)]
        hi = [int(np.ceil(h + di)) for h, di in zip(self.hi, d)]
        return Box.from_lo_hi(lo, hi)

    def to_mask(self, shape: Sequence[int]) -> np.ndarray:
        """Filled box as a bool mask of ``shape``."""
        m = np.zeros(tuple(shape), dtype=bool)
        m[self.clip(shape).slices()] = True
        return m

    def iou(self, other: "Box") -> float:
        """Intersection over union of two boxes of the same dimensionality."""
        lo = np.maximum(self.lo, other.lo)
        hi = np.minimum(self.hi, other.hi)
        inter = float(np.prod(np.clip(hi - lo, 0, None)))
        union = self.size + other.size - inter
        return inter / union if union > 0 else 0.0

    def _check_dims(self, shape: Sequence[int]) -> None:
        if len(shape) != self.ndim:
            raise FlipsegError(
                f"{self.ndim}D box ({self}) does not fit a {len(shape)}D image of shape {tuple(shape)}"
            )


def parse_shift_level(level: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"0-10"`` -> ``(0, 10)``; None or ``"0"``/``"tight"`` -> ``(0, 0)``."""
    if level is None or level in ("0", "tight", "none"):
        return (0, 0)
    if isinstance(level, tuple):
        lo, hi = level
    else:
        try:
            lo, hi = (int(v) for v in str(level).split("-"))
        except ValueError:
            raise FlipsegError(f"box shift {level!r} must look like 0-10") from None
    if lo < 0 or hi < lo:
        raise FlipsegError(f"box shift {level!r} must satisfy 0 <= lo <= hi")
    return (int(lo), int(hi))


def shift_box(
    box: Box, shape: Sequence[int], level: tuple[int, int], rng: np.random.Generator
) -> Box:
    """Randomly perturb a box, as the papers' robustness protocol does.

    Every edge (two per axis) moves independently by an integer amount drawn
    uniformly from ``[lo, hi]`` pixels, inwards or outwards with equal
    probability. The result is clipped to the image and kept at least 2 pixels
    wide on every axis (an edge that would cross its partner is moved outwards
    instead).
    """
    lo_m, hi_m = level
    if hi_m == 0:
        return box.clip(shape)
    lo = list(box.lo)
    hi = list(box.hi)
    for ax in range(box.ndim):
        for end in (0, 1):
            mag = int(rng.integers(lo_m, hi_m + 1))
            sign = 1 if rng.random() < 0.5 else -1  # +1 = outwards
            if end == 0:
                new = lo[ax] - sign * mag
                if new > hi[ax] - 2:
                    new = lo[ax] - mag
                lo[ax] = new
            else:
                new = hi[ax] + sign * mag
                if new < lo[ax] + 2:
                    new = hi[ax] + mag
                hi[ax] = new
    for ax in range(box.ndim):
        lo[ax] = max(lo[ax], 0)
        hi[ax] = min(hi[ax], int(shape[ax]))
        if hi[ax] - lo[ax] < 2:  # squeezed against the border: restore the original extent
            lo[ax], hi[ax] = box.lo[ax], box.hi[ax]
    return Box.from_lo_hi(lo, hi)


def shifted_boxes(
    box: Box, shape: Sequence[int], level: str | tuple[int, int], *, repeats: int = 3, seed: int = 0
) -> list[Box]:
    """The protocol's ``repeats`` shifted copies of one box, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    lv = parse_shift_level(level)
    return [shift_box(box, shape, lv, rng) for _ in range(repeats)]
