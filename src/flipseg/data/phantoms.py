"""Synthetic ultrasound-like phantoms with exact lesion masks, in 2D and 3D.

How a phantom is made (the same code serves 2D ``(H, W)`` and 3D ``(D, H, W)``;
the depth axis is always the row axis ``y``):

1. Tissue layers along depth: skin, subcutaneous fat, glandular tissue,
   pectoral muscle, separated by wavy smooth boundaries, each with its own
   echo level; fat is lobular, gland is textured, muscle is striated.
2. Lesions: a star-shaped solid whose radius in direction ``u`` is
   ``1 + sum_j a_j exp(kappa_j (u . v_j - 1))`` times an ellipse/ellipsoid,
   rotated at random. ``ellipse`` has no bumps, ``lobulated`` a few broad ones,
   ``irregular`` many narrow spikes (spiculation). The mask is exactly the set of
   pixel centres inside that solid; the image edge is slightly blurred.
   Lesions are hypo-echoic (10-35 % of the surrounding level).
3. Posterior shadowing (darker) or enhancement (brighter) below each lesion,
   fading with depth; then depth attenuation.
4. Multiplicative speckle: the envelope of low-pass filtered complex Gaussian
   noise (Rayleigh distributed, spatially correlated, wider laterally than
   axially) or gamma noise; log compression to a 30-38 dB display range,
   giving float32 intensities 0-255.

Everything random comes from one :class:`numpy.random.Generator`, so the same
seed gives the same arrays.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.data.sample import make_sample
from flipseg.errors import FlipsegError

__all__ = [
    "LESION_SHAPES",
    "make_phantom_2d",
    "make_phantom_3d",
    "phantom_dataset_2d",
    "phantom_dataset_3d",
]

LESION_SHAPES = ("ellipse", "lobulated", "irregular")
POSTERIOR = ("shadow", "enhancement", "none")


def _rng(seed: int | np.random.Generator | np.random.SeedSequence | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _smooth_field(
    rng: np.random.Generator, shape: Sequence[int], cell: Sequence[float]
) -> np.ndarray:
    """Zero-mean, unit-std smooth noise: random values on a coarse grid, interpolated."""
    shape = tuple(int(s) for s in shape)
    coarse = tuple(max(2, int(np.ceil(s / c)) + 1) for s, c in zip(shape, cell, strict=True))
    small = rng.standard_normal(coarse).astype(np.float32)
    if len(shape) == 2:
        field = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    else:
        factors = [s / c for s, c in zip(shape, coarse, strict=True)]
        field = ndimage.zoom(small, factors, order=1, mode="nearest", grid_mode=True)
        field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _random_rotation(rng: np.random.Generator, ndim: int, max_tilt: float) -> np.ndarray:
    """Rotation mostly in the y-x plane (lesions lie roughly parallel to the skin)."""
    def plane(i: int, j: int, angle: float) -> np.ndarray:
        r = np.eye(ndim)
        c, s = np.cos(angle), np.sin(angle)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    rot = plane(ndim - 2, ndim - 1, rng.uniform(-max_tilt, max_tilt))
    if ndim == 3:
        rot = plane(0, 2, rng.uniform(-np.pi, np.pi)) @ plane(0, 1, rng.uniform(-0.3, 0.3)) @ rot
    return rot


def _random_lesion(rng: np.random.Generator, ndim: int, kind: str) -> dict[str, Any]:
    """Bumps (unit direction, amplitude, sharpness) describing the lesion outline."""
    if kind == "ellipse":
        n, amp, kappa = 0, (0.0, 0.0), (1.0, 1.0)
    elif kind == "lobulated":
        n, amp, kappa = int(rng.integers(3, 7)), (0.12, 0.35), (2.5, 6.0)
    else:  # irregular, spiculated
        n, amp, kappa = int(rng.integers(10, 22)), (0.1, 0.5), (25.0, 120.0)
    dirs = rng.standard_normal((n, ndim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True) + 1e-12
    bumps = [(dirs[i], rng.uniform(*amp), rng.uniform(*kappa)) for i in range(n)]
    if kind == "irregular":  # plus a few broad dents and bulges
        for _ in range(int(rng.integers(2, 5))):
            v = rng.standard_normal(ndim)
            bumps.append((v / np.linalg.norm(v), rng.uniform(-0.25, 0.3), rng.uniform(2.0, 5.0)))
    return {"bumps": bumps}


def _outline_radius(u: np.ndarray, bumps: list) -> np.ndarray:
    """Relative radius of the outline in unit directions ``u`` [N, ndim]."""
    radius = np.ones(len(u))
    if bumps:
        dirs = np.stack([v for v, _, _ in bumps])  # [n, ndim]
        amp = np.array([a for _, a, _ in bumps])
        kappa = np.array([k for _, _, k in bumps])
        radius += np.exp(kappa * (u @ dirs.T - 1.0)) @ amp
    return np.maximum(radius, 0.35)


def _lesion_mask(
    shape: Sequence[int],
    spacing: Sequence[float],
    center: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray,
    bumps: list,
) -> np.ndarray:
    """Exact mask of pixel centres inside the star-shaped lesion (physical units)."""
    spacing = np.asarray(spacing, dtype=float)
    ndim = len(shape)
    probe = np.random.default_rng(0).standard_normal((512, ndim))
    probe = np.concatenate([probe / np.linalg.norm(probe, axis=1, keepdims=True)]
                           + [v[None] for v, _, _ in bumps])
    r_max = float(_outline_radius(probe, bumps).max()) * 1.1  # relative to the ellipse
    reach = float(radii.max()) * r_max
    mask = np.zeros(tuple(shape), dtype=bool)
    while True:
        lo = np.maximum(np.floor((center - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((center + reach) / spacing).astype(int) + 1, np.asarray(shape))
        if np.any(hi <= lo):
            return mask
        axes = [np.arange(a, b) * s - c for a, b, s, c in zip(lo, hi, spacing, center, strict=True)]
        grids = np.meshgrid(*axes, indexing="ij")
        pts = np.stack([g.ravel() for g in grids], axis=1)  # [N, ndim], physical offsets
        q = (pts @ rotation) / radii  # lesion frame, unit ellipse
        rho = np.linalg.norm(q, axis=1)
        u = q / np.maximum(rho, 1e-9)[:, None]
        inside = rho < 0.35  # the outline radius is never below 0.35
        near = ~inside & (rho < r_max * 1.5)
        inside[near] = rho[near] < _outline_radius(u[near], bumps)
        inside = inside.reshape(grids[0].shape)
        # grow the window if the outline reaches a window face that is not the image border
        touches = False
        for ax in range(ndim):
            first = np.take(inside, 0, axis=ax).any() and lo[ax] > 0
            last = np.take(inside, -1, axis=ax).any() and hi[ax] < shape[ax]
            touches = touches or first or last
        if not touches:
            break
        reach *= 1.5
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = inside
    return mask


def _tissue(rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray) -> np.ndarray:
    """Layered echo map (relative echogenicity, ~0.3-1.5), depth along axis -2."""
    ndim = len(shape)
    depth_axis = ndim - 2
    n_depth = shape[depth_axis]
    lateral_shape = tuple(s for i, s in enumerate(shape) if i != depth_axis)
    lateral_cell = [max(4.0, s / 3.0) for s in lateral_shape]
    fractions = (rng.uniform(0.03, 0.06), rng.uniform(0.18, 0.32), rng.uniform(0.68, 0.86))
    boundaries = []
    for i, f in enumerate(fractions):
        wobble = _smooth_field(rng, lateral_shape, lateral_cell) * n_depth * (0.01 + 0.025 * i)
        boundaries.append(f * n_depth + wobble)
    depth = np.arange(n_depth, dtype=np.float32).reshape(
        [n_depth if i == depth_axis else 1 for i in range(ndim)]
    )
    layer = np.zeros(shape, dtype=np.int8)
    for b in boundaries:
        layer += depth >= np.expand_dims(b, depth_axis)
    levels = np.array([1.5, rng.uniform(0.35, 0.5), rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.65)],
                      dtype=np.float32)
    echo = levels[layer]
    cell_mm = np.array([4.0] * ndim)  # tissue texture grain in mm, lateral a bit coarser
    cell_mm[-1] = 6.0
    texture = _smooth_field(rng, shape, cell_mm / spacing)
    fine = _smooth_field(rng, shape, np.array([1.0] * (ndim - 1) + [2.0]) / spacing + 1.0)
    fat_lobules = np.where(layer == 1, 0.35 * np.maximum(texture, -0.5), 0.0)
    gland = np.where(layer == 2, 0.25 * texture + 0.15 * fine, 0.0)
    period = rng.uniform(2.0, 3.5) / spacing[depth_axis]
    stripes = np.sin(2 * np.pi * depth / period + 0.8 * texture)
    muscle = np.where(layer == 3, 0.25 * stripes, 0.0)
    echo = echo * np.exp(fat_lobules + gland + muscle).astype(np.float32)
    sigma = [0.6 / s for s in spacing]
    return ndimage.gaussian_filter(echo, sigma).astype(np.float32)


def _posterior(mask: np.ndarray, strength: float, spacing: np.ndarray) -> np.ndarray:
    """Multiplicative shadow/enhancement map below ``mask`` (depth along axis -2)."""
    depth_axis = mask.ndim - 2
    n_depth = mask.shape[depth_axis]
    rows = np.arange(n_depth).reshape([n_depth if i == depth_axis else 1 for i in range(mask.ndim)])
    has = mask.any(axis=depth_axis, keepdims=True)
    bottom = np.where(has, n_depth - 1 - np.argmax(np.flip(mask, depth_axis), axis=depth_axis,
                                                    keepdims=True), n_depth)
    thickness = mask.sum(axis=depth_axis, keepdims=True).astype(np.float32)
    weight = np.clip(thickness / max(float(thickness.max()), 1.0) * 1.5, 0.0, 1.0)
    below = (rows - bottom).astype(np.float32)
    decay_px = 0.8 * n_depth
    profile = np.where(below > 0, (1 - np.exp(-below / 3.0)) * np.exp(-below / decay_px), 0.0)
    effect = strength * weight * profile
    lateral_sigma = [0.0 if i == depth_axis else 1.0 / spacing[i] for i in range(mask.ndim)]
    effect = ndimage.gaussian_filter(effect.astype(np.float32), lateral_sigma)
    return (1.0 + effect).astype(np.float32)


def _speckle(rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray,
             kind: str) -> np.ndarray:
    """Unit-mean multiplicative speckle, spatially correlated (grain ~0.3 mm x 0.6 mm)."""
    if kind == "gamma":
        k = 2.0
        noise = rng.gamma(k, 1.0 / k, size=shape).astype(np.float32)
        sigma = [0.25 / s for s in spacing]
        return ndimage.gaussian_filter(noise, sigma) / np.float32(noise.mean())
    if kind != "rayleigh":
        raise FlipsegError(f"speckle {kind!r} must be 'rayleigh' or 'gamma'")
    sigma = np.full(len(shape), 0.3) / spacing
    sigma[-1] = 0.6 / spacing[-1]
    sigma = np.minimum(sigma, 2.0)
    re = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    im = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    env = np.hypot(re, im)
    return env / np.float32(env.mean())


def _log_compress(intensity: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    db = 20.0 * np.log10(intensity + 1e-6)
    top = float(np.percentile(db, 99.9))
    out = (db - (top - dynamic_range_db)) / dynamic_range_db
    return (255.0 * np.clip(out, 0.0, 1.0)).astype(np.float32)


def _check_choice(name: str, value: str | None, valid: tuple[str, ...]) -> None:
    if value is not None and value not in valid:
        raise FlipsegError(f"{name} {value!r} must be one of {valid}")


def _render(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    lesions: list[dict[str, Any]],
    speckle: str,
) -> np.ndarray:
    echo = _tissue(rng, shape, spacing)
    for les in lesions:
        soft = ndimage.gaussian_filter(les["mask"].astype(np.float32), [0.4 / s for s in spacing])
        level = float(np.median(echo[les["mask"]])) * les["contrast"]
        inner = level * np.exp(0.25 * _smooth_field(rng, shape, 1.5 / spacing + 1.0))
        if les["shape"] == "ellipse" and les["posterior"] == "enhancement":
            inner = inner * 0.4  # cyst-like: nearly anechoic
        echo = echo * (1 - soft) + inner * soft
        if les["posterior"] != "none":
            s = les["strength"]
            echo = echo * _posterior(les["mask"], s if les["posterior"] == "enhancement" else -s,
                                     spacing)
    depth_axis = len(shape) - 2
    n_depth = shape[depth_axis]
    depth = np.arange(n_depth, dtype=np.float32).reshape(
        [n_depth if i == depth_axis else 1 for i in range(len(shape))]
    )
    echo = echo * np.exp(-rng.uniform(0.2, 0.6) * depth / n_depth)
    intensity = echo * _speckle(rng, shape, spacing, speckle)
    return _log_compress(intensity, rng.uniform(30.0, 38.0))


def _draw_lesion(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    lesion_shape: str | None,
    posterior: str | None,
    size_mm: tuple[float, float],
    avoid: np.ndarray | None,
) -> dict[str, Any] | None:
    """Place one lesion fully inside the image (2-pixel margin), not touching ``avoid``."""
    ndim = len(shape)
    extent = np.asarray(shape) * spacing
    kind = lesion_shape or str(rng.choice(LESION_SHAPES, p=[0.35, 0.3, 0.35]))
    for attempt in range(40):
        scale = 1.0 - 0.6 * attempt / 40  # shrink when placement keeps failing
        a = rng.uniform(*size_mm) * scale  # lateral semi-axis
        ratio = rng.uniform(0.45, 0.9) if kind != "irregular" else rng.uniform(0.7, 1.3)
        radii = np.full(ndim, a)
        radii[ndim - 2] = a * ratio
        if ndim == 3:
            radii[0] = a * rng.uniform(0.7, 1.1)
        center = np.array([rng.uniform(0.25, 0.75) * e for e in extent])
        center[ndim - 2] = rng.uniform(0.3, 0.65) * extent[ndim - 2]
        outline = _random_lesion(rng, ndim, kind)
        rotation = _random_rotation(rng, ndim, 0.5 if kind != "irregular" else 1.2)
        mask = _lesion_mask(shape, spacing, center, radii, rotation, outline["bumps"])
        if mask.sum() < 12:
            continue
        box = Box.from_mask(mask)
        if any(lo_ < 2 or hi_ > s - 2 for lo_, hi_, s in zip(box.lo, box.hi, shape, strict=True)):
            continue
        if avoid is not None and (ndimage.binary_dilation(mask, iterations=2) & avoid).any():
            continue
        post = posterior
        if post is None:
            p = {"ellipse": [0.15, 0.65, 0.2], "lobulated": [0.3, 0.35, 0.35],
                 "irregular": [0.7, 0.05, 0.25]}[kind]
            post = str(rng.choice(POSTERIOR, p=p))
        return {
            "mask": mask,
            "shape": kind,
            "posterior": post,
            "strength": float(rng.uniform(0.35, 0.65)),
            "contrast": float(rng.uniform(0.1, 0.35)),
            "label": "malignant" if kind == "irregular" else "benign",
        }
    return None


def make_phantom_2d(
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
    *,
    shape: tuple[int, int] = (192, 192),
    lesion_shape: str | None = None,
    posterior: str | None = None,
    lesion_size: tuple[float, float] = (0.07, 0.2),
    speckle: str = "rayleigh",
    case_id: str | None = None,
) -> dict[str, Any]:
    """One 2D ultrasound-like image with one hypo-echoic lesion.

    Parameters
    ----------
    seed : int, SeedSequence or Generator; same seed, same sample.
    shape : ``(H, W)``, at least 32 x 32.
    lesion_shape : ``"ellipse"``, ``"lobulated"``, ``"irregular"`` or None (random).
    posterior : ``"shadow"``, ``"enhancement"``, ``"none"`` or None (random,
        shadow more likely for irregular lesions, enhancement for ellipses).
    lesion_size : range of the lateral semi-axis as a fraction of ``min(H, W)``.
    speckle : ``"rayleigh"`` (correlated Rayleigh envelope) or ``"gamma"``.
    case_id : defaults to ``"phantom2d-<seed>"``.

    Returns
    -------
    sample dict (:func:`~flipseg.data.sample.make_sample`): ``image`` float32
    (H, W) in 0-255, exact bool ``mask``, tight ``box``, ``label``
    (``"malignant"`` for irregular lesions, else ``"benign"``) and extra keys
    ``lesion_shape`` and ``posterior``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 32:
        raise FlipsegError(f"2D phantom shape {shape} must be (H, W) with both >= 32")
    _check_choice("lesion_shape", lesion_shape, LESION_SHAPES)
    _check_choice("posterior", posterior, POSTERIOR)
    rng = _rng(seed)
    spacing = np.ones(2)
    size = (lesion_size[0] * min(shape), lesion_size[1] * min(shape))
    lesion = _draw_lesion(rng, shape, spacing, lesion_shape, posterior, size, None)
    if lesion is None:
        raise FlipsegError(f"could not place a lesion of size {lesion_size} in shape {shape}")
    image = _render(rng, shape, spacing, [lesion], speckle)
    if case_id is None:
        case_id = f"phantom2d-{seed}" if isinstance(seed, (int, np.integer)) else "phantom2d"
    return make_sample(
        image, mask=lesion["mask"], box=Box.from_mask(lesion["mask"]), label=lesion["label"],
        case_id=case_id, lesion_shape=lesion["shape"], posterior=lesion["posterior"],
    )


def make_phantom_3d(
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
    *,
    shape: tuple[int, int, int] = (48, 96, 96),
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    n_lesions: int | None = None,
    lesion_shape: str | None = None,
    posterior: str | None = None,
    lesion_size_mm: tuple[float, float] = (3.0, 8.0),
    speckle: str = "rayleigh",
    case_id: str | None = None,
) -> dict[str, Any]:
    """One 3D ultrasound-like volume ``(D, H, W)`` with 1-3 separate lesions.

    Parameters
    ----------
    seed : int, SeedSequence or Generator.
    shape : ``(D, H, W)`` voxels (slices, depth rows, lateral columns).
    spacing : ``(z, y, x)`` voxel size in mm (anisotropic by default).
    n_lesions : 1, 2 or 3; None draws one at random.
    lesion_shape, posterior, speckle : as in :func:`make_phantom_2d`.
    lesion_size_mm : range of the lateral semi-axis in mm.

    Returns
    -------
    sample dict with ``image`` float32 (D, H, W) 0-255, ``mask`` (union of all
    lesions), ``box`` (tight box of the union), ``spacing``, and extra keys
    ``lesion_masks`` (one bool array per lesion), ``boxes`` (one 3D
    :class:`~flipseg.boxes.Box` per lesion), ``lesion_labels`` and
    ``lesion_shapes``. ``label`` is ``"malignant"`` if any lesion is.

    Raises
    ------
    FlipsegError
        Bad shape/spacing/options, or lesions that do not fit.
    """
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=float)
    if len(shape) != 3 or min(shape) < 16:
        raise FlipsegError(f"3D phantom shape {shape} must be (D, H, W) with all >= 16")
    if sp.shape != (3,) or (sp <= 0).any():
        raise FlipsegError(f"3D phantom spacing {tuple(spacing)} must be 3 positive numbers")
    _check_choice("lesion_shape", lesion_shape, LESION_SHAPES)
    _check_choice("posterior", posterior, POSTERIOR)
    rng = _rng(seed)
    if n_lesions is None:
        n_lesions = int(rng.integers(1, 4))
    if not 1 <= int(n_lesions) <= 3:
        raise FlipsegError(f"n_lesions {n_lesions} must be 1, 2 or 3")
    lesions: list[dict[str, Any]] = []
    union = np.zeros(shape, dtype=bool)
    for _ in range(int(n_lesions)):
        les = _draw_lesion(rng, shape, sp, lesion_shape, posterior, lesion_size_mm, union)
        if les is None:
            raise FlipsegError(
                f"could not place {n_lesions} lesions of {lesion_size_mm} mm in shape {shape}"
            )
        lesions.append(les)
        union |= les["mask"]
    image = _render(rng, shape, sp, lesions, speckle)
    if case_id is None:
        case_id = f"phantom3d-{seed}" if isinstance(seed, (int, np.integer)) else "phantom3d"
    labels = [les["label"] for les in lesions]
    return make_sample(
        image, mask=union, label="malignant" if "malignant" in labels else "benign",
        spacing=tuple(float(s) for s in sp), case_id=case_id,
        lesion_masks=[les["mask"] for les in lesions],
        boxes=[Box.from_mask(les["mask"]) for les in lesions],
        lesion_labels=labels, lesion_shapes=[les["shape"] for les in lesions],
    )


def phantom_dataset_2d(n: int, seed: int = 0, **opts: Any) -> list[dict[str, Any]]:
    """``n`` independent 2D phantoms; case ids ``phantom2d-<seed>-<i>``.

    Each phantom gets its own child of ``SeedSequence(seed)``, so the first
    ``k`` phantoms are the same whatever ``n`` is. ``opts`` go to
    :func:`make_phantom_2d`.
    """
    if int(n) < 0:
        raise FlipsegError(f"number of phantoms {n} must be >= 0")
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    return [
        make_phantom_2d(np.random.default_rng(child), case_id=f"phantom2d-{seed}-{i}", **opts)
        for i, child in enumerate(children)
    ]


def phantom_dataset_3d(n: int, seed: int = 0, **opts: Any) -> list[dict[str, Any]]:
    """``n`` independent 3D phantom volumes, one sample per lesion.

    Volume ``i`` gets its own child of ``SeedSequence(seed)`` (so the first
    ``k`` volumes are the same whatever ``n`` is). Its lesions become samples
    ``phantom3d-<seed>-<i>#<k>`` (``k`` from 1) that share the volume's
    ``image`` array and ``spacing``; each has its own lesion ``mask``, tight
    3D ``box`` and ``label``, and ``patient_id`` ``phantom3d-<seed>-<i>`` so
    patient-level splits keep a volume's lesions together. ``opts`` go to
    :func:`make_phantom_3d`. A volume too small for its randomly drawn lesion
    count gets one lesion.
    """
    if int(n) < 0:
        raise FlipsegError(f"number of phantoms {n} must be >= 0")
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    out: list[dict[str, Any]] = []
    for i, child in enumerate(children):
        vid = f"phantom3d-{seed}-{i}"
        try:
            vol = make_phantom_3d(np.random.default_rng(child), case_id=vid, **opts)
        except FlipsegError:
            if "n_lesions" in opts:
                raise
            # a small volume with no room for the drawn lesion count: one lesion instead
            vol = make_phantom_3d(np.random.default_rng(child), case_id=vid, n_lesions=1, **opts)
        for k, (m, box, label, kind) in enumerate(zip(
            vol["lesion_masks"], vol["boxes"], vol["lesion_labels"], vol["lesion_shapes"],
            strict=True,
        ), start=1):
            out.append(make_sample(
                vol["image"], mask=m, box=box, label=label, spacing=vol["spacing"],
                case_id=f"{vid}#{k}", patient_id=vid, lesion_index=k, lesion_shape=kind,
            ))
    return out
