"""The erasing environment of Flip Learning, vectorised over many boxes.

One *episode* is one box. :func:`prepare_episode` standardises the box (shortest
side -> ``standard_short_side``), computes superpixels inside it, orders them
inner-to-outer and splits them into K agent sectors. :class:`VecErasingEnv`
then runs many episodes side by side: each step every active agent of every
environment decides *pass* (0) or *erase* (1) for its current superpixel, the
erased superpixels are filled from the eraser source, and all classifier and
Q-network inputs are built for all environments at once.

The code is written for any number of spatial dimensions (2D images, 3D
volumes); arrays are indexed ``[(z,) y, x]``.

Action semantics (paper): *erase* erases the current superpixel, *pass* leaves it
as it is, so the erased region only grows and the second traversal can add
superpixels passed the first time. With ``pass_restores`` an action instead
*sets* the state, so *pass* on an erased superpixel restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from flipseg.boxes import Box
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.rewards import prior_reward, superpixel_histograms, total_reward
from flipseg.resize import resize
from flipseg.superpixels import superpixels

__all__ = [
    "Episode",
    "N_AUX",
    "VecErasingEnv",
    "coarse_priors",
    "greedy_rollout",
    "postprocess_mask",
    "prepare_episode",
]

#: Number of scalar features per agent when ``aux_features`` is on.
N_AUX = 7

Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Episode:
    """Everything one box needs, prepared once per curriculum level."""

    case_id: str
    box: Box  # original-image box (clipped)
    view: Box  # box + margin, clipped: the region the canvas covers
    image_shape: tuple[int, ...]
    canvas_shape: tuple[int, ...]
    box_lo: tuple[int, ...]  # box inside the canvas
    box_hi: tuple[int, ...]
    labels: np.ndarray  # canvas int32, -1 outside the box
    n_labels: int
    hists: np.ndarray  # (N, 256) original-intensity histograms per superpixel
    areas: np.ndarray  # (N,) pixels per superpixel (canvas)
    dist: np.ndarray  # (N,) centroid distance to box centre / box half-diagonal
    mean_rel: np.ndarray  # (N,) (superpixel mean - box mean) / 64
    radius: np.ndarray  # (N,) centroid's normalised elliptical radius (1 = inscribed ellipse)
    ring_rel: np.ndarray  # (N,) (superpixel mean - mean of the margin around the box) / 64
    agent_lists: list[np.ndarray]  # K arrays of superpixel ids in visiting order
    state_orig: np.ndarray  # state canvas (uint8-range float32)
    state_filled: np.ndarray
    state_labels: np.ndarray
    state_centroids: np.ndarray  # (N, ndim) int, in state-canvas pixels
    cls_orig: np.ndarray  # classifier-size view, unerased
    cls_filled: np.ndarray  # classifier-size view, box filled by the eraser source
    cls_labels: np.ndarray
    view_filled: np.ndarray  # original-resolution view with the box filled (flipped image)
    gt_overlap: np.ndarray | None = None  # (N,) gt pixels per superpixel (canvas)
    gt_total: float = 0.0  # gt pixels in the canvas
    level: int = 0
    extra: dict = field(default_factory=dict)
    #: (N,) elliptical radius of each centroid in the *annotated* box, for the box-prior
    #: reward, when training on a jittered box (``train_box_shift``); None: ``radius``
    reward_radius: np.ndarray | None = None


def _ellipse_radius(points: np.ndarray, lo: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Elliptical radius of pixel positions ``points`` (N, nd) in the box of corner ``lo``
    and ``shape``: 0 at its centre, 1 on its inscribed ellipse (ellipsoid)."""
    ext = np.asarray(shape, float)
    center = np.asarray(lo, float) + (ext - 1) / 2.0
    return np.sqrt((((points - center) / np.maximum(ext / 2.0, 0.5)) ** 2).sum(1))


def _standard_scale(box: Box, cfg: FlipConfig) -> float:
    if cfg.standard_short_side <= 0:
        return 1.0
    s = cfg.standard_short_side / max(min(box.shape), 1)
    if max(box.shape) * s > cfg.max_long_side:
        s = cfg.max_long_side / max(box.shape)
    return s


def _sectors(centroids: np.ndarray, center: np.ndarray, k: int) -> np.ndarray:
    """Split superpixels into k sectors of ~equal count around the centre."""
    n = len(centroids)
    if k == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    d = centroids - center
    # 2D: angle in the (y, x) plane; 3D: angle in the (y, x) plane too (sectors are wedges
    # around the z axis), which splits a volume into k columns of equal count.
    ang = np.arctan2(d[:, -2], d[:, -1]) % (2 * np.pi)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), ang))] = np.arange(n)
    return (rank * k) // n


def prepare_episode(
    image: np.ndarray,
    box: Box,
    source_patch: np.ndarray,
    cfg: FlipConfig,
    n_segments: int,
    *,
    case_id: str = "",
    gt_mask: np.ndarray | None = None,
    seed: int = 0,
    reward_box: Box | None = None,
) -> Episode:
    """Standardise a box, compute its superpixels and agent sectors.

    Parameters
    ----------
    image : (H, W) or (D, H, W) intensities 0-255
    box : lesion box (validated against the image by the caller)
    source_patch : array of ``box.shape``, the eraser source
    n_segments : superpixel count of the current curriculum level
    gt_mask : optional ground-truth mask of ``image.shape`` for the Dice curve
    reward_box : training on a jittered ``box``: the annotated box, whose inscribed
        ellipse the box-prior reward keeps using
    """
    nd = image.ndim
    box = box.clip(image.shape)
    view = box.expand(cfg.margin, relative=True).clip(image.shape)
    s = _standard_scale(box, cfg)
    canvas_shape = tuple(max(2, int(round(e * s))) for e in view.shape)
    scale = np.array(canvas_shape, float) / np.array(view.shape, float)
    view_img = image[view.slices()].astype(np.float32)
    view_filled = view_img.copy()
    rel = tuple(slice(bl - vl, bh - vl) for bl, bh, vl in zip(box.lo, box.hi, view.lo))
    view_filled[rel] = source_patch.astype(np.float32)
    orig = resize(view_img, canvas_shape)
    box_lo = tuple(int(np.floor((bl - vl) * sc)) for bl, vl, sc in zip(box.lo, view.lo, scale))
    box_hi = tuple(
        max(lo + 1, min(int(np.ceil((bh - vl) * sc)), cs))
        for bh, vl, sc, lo, cs in zip(box.hi, view.lo, scale, box_lo, canvas_shape)
    )
    bsl = tuple(slice(l, h) for l, h in zip(box_lo, box_hi))
    inner = superpixels(orig[bsl], n_segments, method=cfg.superpixel_method, seed=seed)
    n = int(inner.max()) + 1
    labels = np.full(canvas_shape, -1, dtype=np.int32)
    labels[bsl] = inner
    hists = superpixel_histograms(orig, labels, n).astype(np.float32)
    areas = np.bincount(inner.ravel(), minlength=n).astype(np.float64)
    coords = np.indices(inner.shape).reshape(nd, -1).astype(np.float64)
    cent = np.stack(
        [np.bincount(inner.ravel(), weights=c, minlength=n) / areas for c in coords], 1
    )  # (N, nd), box-local
    center = (np.array(inner.shape, float) - 1) / 2.0
    half_diag = np.linalg.norm(np.array(inner.shape, float) / 2.0)
    dist = np.linalg.norm(cent - center, axis=1) / half_diag
    means = np.bincount(inner.ravel(), weights=orig[bsl].ravel(), minlength=n) / areas
    mean_rel = (means - orig[bsl].mean()) / 64.0
    radius = _ellipse_radius(cent, np.zeros(nd), inner.shape)
    reward_radius = None
    if reward_box is not None:
        # centroids in image pixels, then their elliptical radius in the annotated box
        cent_img = np.array(view.lo, float) + (cent + np.array(box_lo, float) + 0.5) / scale - 0.5
        reward_radius = _ellipse_radius(cent_img, reward_box.lo, reward_box.shape)
    ring = labels < 0
    ring_mean = orig[ring].mean() if ring.any() else orig[bsl].mean()
    ring_rel = (means - ring_mean) / 64.0
    sector = _sectors(cent, center, cfg.agents)
    lists = []
    for k in range(cfg.agents):
        ids = np.nonzero(sector == k)[0]
        if cfg.order == "inner":
            ids = ids[np.lexsort((ids, dist[ids]))]
        lists.append(ids.astype(np.int64))
    # state canvas
    st_shape = tuple(max(2, int(round(c * cfg.state_scale))) for c in canvas_shape)
    state_orig = resize(orig, st_shape)
    filled_canvas = resize(view_filled, canvas_shape)
    state_filled = resize(filled_canvas, st_shape)
    state_labels = resize(labels, st_shape, order=0)
    st_scale = np.array(st_shape, float) / np.array(canvas_shape, float)
    state_cent = np.rint((cent + np.array(box_lo, float) + 0.5) * st_scale - 0.5).astype(np.int64)
    cls_shape = (cfg.classifier_size,) * nd
    gt_overlap = None
    gt_total = 0.0
    if gt_mask is not None:
        gt_canvas = resize(gt_mask[view.slices()].astype(np.float32), canvas_shape) > 0.5
        gt_overlap = np.bincount(
            inner.ravel(), weights=gt_canvas[bsl].ravel().astype(float), minlength=n
        )
        gt_total = float(gt_canvas.sum())
    return Episode(
        case_id=case_id,
        box=box,
        view=view,
        image_shape=tuple(image.shape),
        canvas_shape=canvas_shape,
        box_lo=box_lo,
        box_hi=box_hi,
        labels=labels,
        n_labels=n,
        hists=hists,
        areas=areas,
        dist=dist,
        mean_rel=mean_rel,
        radius=radius,
        ring_rel=ring_rel,
        agent_lists=lists,
        state_orig=state_orig,
        state_filled=state_filled,
        state_labels=state_labels,
        state_centroids=state_cent,
        cls_orig=resize(view_img, cls_shape),
        cls_filled=resize(view_filled, cls_shape),
        cls_labels=resize(labels, cls_shape, order=0),
        view_filled=view_filled,
        gt_overlap=gt_overlap,
        gt_total=gt_total,
        level=n_segments,
        reward_radius=reward_radius,
    )


def _flat_u8(a: np.ndarray) -> np.ndarray:
    """[E, *S] grey levels -> [E, prod(S)] uint8, rounded and clipped to 0-255."""
    return np.clip(np.rint(a), 0, 255).astype(np.uint8).reshape(len(a), -1)


def _pad_stack(arrays: Sequence[np.ndarray], fill: float, pad: int, dtype) -> np.ndarray:
    nd = arrays[0].ndim
    shape = tuple(max(a.shape[d] for a in arrays) + 2 * pad for d in range(nd))
    out = np.full((len(arrays),) + shape, fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[(i,) + tuple(slice(pad, pad + s) for s in a.shape)] = a
    return out


def _ball(radius: int, ndim: int) -> np.ndarray:
    grid = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(ndim))]
    return sum(g.astype(float) ** 2 for g in grid) <= radius**2


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by the disk (ball) ``x^2 + y^2 <= radius^2``, outside the array
    counting as background: the pixels farther than ``radius`` from every background pixel.
    Equal to ``ndimage.binary_erosion(mask, _ball(radius, ndim))``, in time independent of
    the radius (a Euclidean distance transform)."""
    pad = radius + 1
    dist = ndimage.distance_transform_edt(np.pad(mask, pad))
    return (dist > radius)[tuple(slice(pad, -pad) for _ in range(mask.ndim))]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the same disk (ball): the pixels within ``radius`` of the mask.
    Equal to ``ndimage.binary_dilation(mask, _ball(radius, ndim))``."""
    pad = radius + 1
    dist = ndimage.distance_transform_edt(~np.pad(mask, pad))
    return (dist <= radius)[tuple(slice(pad, -pad) for _ in range(mask.ndim))]


def fuse_with_box_prior(mask: np.ndarray, box: Box, weight: float, sigma: float) -> np.ndarray:
    """Soft vote of a mask with the ellipse (ellipsoid) inscribed in ``box``.

    Both are blurred with a Gaussian whose sigma along each axis is ``sigma`` times the
    box's extent on that axis; the result is ``(1 - weight) * mask + weight * ellipse``
    above 0.5, kept inside the box. An empty result returns ``mask`` unchanged.
    """
    from flipseg.baselines.shapes import inscribed_ellipse

    box = box.clip(mask.shape)
    if weight <= 0 or not box.is_valid() or not mask.any():
        return mask
    sig = [sigma * e for e in box.shape]
    region = box.expand([int(np.ceil(3 * s)) + 1 for s in sig]).clip(mask.shape)
    sl = region.slices()
    local_box = box.relative_to(region)
    ell = inscribed_ellipse(np.zeros(region.shape, np.float32), local_box)
    vote = (1.0 - weight) * ndimage.gaussian_filter(mask[sl].astype(np.float32), sig) \
        + weight * ndimage.gaussian_filter(ell.astype(np.float32), sig)
    fused = (vote > 0.5) & local_box.to_mask(region.shape)
    if not fused.any():
        return mask
    out = np.zeros_like(mask, dtype=bool)
    out[sl] = fused
    return out


def postprocess_mask(
    mask: np.ndarray, *, fill_holes: bool, largest: bool, smooth_radius: int = 0
) -> np.ndarray:
    """Smoothing, largest-component selection and hole filling of a predicted mask.

    ``smooth_radius`` (pixels/voxels): morphological opening then closing with a
    disk/ball of that radius, which removes the superpixel staircase and thin spurs;
    skipped when it would erase the whole mask.
    """
    if smooth_radius > 0 and mask.any():
        r = int(smooth_radius)
        smoothed = _erode(_dilate(_dilate(_erode(mask, r), r), r), r)  # opening, then closing
        if smoothed.any():
            mask = smoothed
    if largest and mask.any():
        lab, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            mask = lab == int(np.argmax(sizes))
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


class VecErasingEnv:
    """Runs E episodes in lock-step; every network call is batched over all of them.

    Parameters
    ----------
    episodes : prepared episodes (any mix of levels and sizes)
    cfg : the run's configuration (agents, traversals, rewards, state layout)
    scorer : callable mapping a float tensor [B, 1, *cls] (intensities / 255) to the
        classifier's normal-tissue probability [B]
    compute_rewards : False at inference (skips the per-agent counterfactual scores)
    terminal : end an episode when the normal score passes ``1 - cfg.stop_margin`` (the
        paper's flip terminal); False: every episode runs its ``cfg.traversals``
    priors : coarse-to-fine only (``cfg.curriculum == "c2f"``): per episode, the coarse
        stage's mask in the state canvas (values 0-1, see :meth:`state_masks`), shown to
        the agents as one more state channel; None (or a None entry) shows 0.5
        everywhere, "no prior", as the coarse stage itself sees it
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        cfg: FlipConfig,
        scorer: Scorer,
        *,
        compute_rewards: bool = True,
        priors: Sequence[np.ndarray | None] | None = None,
        terminal: bool = True,
    ) -> None:
        self.cfg = cfg
        self.terminal = terminal
        self.episodes = list(episodes)
        self.scorer = scorer
        self.compute_rewards = compute_rewards
        E = len(self.episodes)
        K = cfg.agents
        self.E, self.K = E, K
        self.nd = self.episodes[0].labels.ndim
        self.S = cfg.state_size
        self.pad = self.S // 2 + 1
        nmax = max(ep.n_labels for ep in self.episodes)
        self.nmax = nmax
        self.dummy = nmax  # label of pixels outside the box: never erased
        # padded per-environment tensors
        self.st_orig = _pad_stack([ep.state_orig for ep in self.episodes], 0.0, self.pad, np.float32)
        self.st_filled = _pad_stack(
            [ep.state_filled for ep in self.episodes], 0.0, self.pad, np.float32
        )
        st_labels = [np.where(ep.state_labels < 0, nmax, ep.state_labels) for ep in self.episodes]
        self.st_labels = _pad_stack(st_labels, nmax, self.pad, np.int64)
        self.st_prior: np.ndarray | None = None
        if cfg.curriculum == "c2f":
            pri = list(priors) if priors is not None else [None] * E
            if len(pri) != E:
                raise ValueError(f"{len(pri)} priors for {E} episodes")
            layers = []
            for ep, p in zip(self.episodes, pri):
                if p is None:
                    p = np.full(ep.state_labels.shape, 0.5, np.float32)
                elif p.shape != ep.state_labels.shape:
                    raise ValueError(f"prior shape {p.shape} != state shape {ep.state_labels.shape}")
                layers.append(np.asarray(p, np.float32))
            self.st_prior = _pad_stack(layers, 0.5, self.pad, np.float32)
        if cfg.global_view:
            # the whole state canvas (box + margin) resized to the crop size
            gshape = (self.S,) * self.nd
            self.g_orig = np.stack([resize(ep.state_orig, gshape) for ep in self.episodes])
            self.g_filled = np.stack([resize(ep.state_filled, gshape) for ep in self.episodes])
            self.g_labels = np.stack([
                np.where(g < 0, nmax, g)
                for g in (resize(ep.state_labels, gshape, order=0) for ep in self.episodes)
            ]).astype(np.int64)  # [E, *S]
        cls_labels = [np.where(ep.cls_labels < 0, nmax, ep.cls_labels) for ep in self.episodes]
        self.cls_labels = np.stack(cls_labels).astype(np.int64)  # [E, *cls]
        self.cls_orig = np.stack([ep.cls_orig for ep in self.episodes]).astype(np.float32)
        self.cls_filled = np.stack([ep.cls_filled for ep in self.episodes]).astype(np.float32)
        self.hists = np.zeros((E, nmax + 1, 256), np.float32)
        self.dist = np.zeros((E, nmax + 1), np.float32)
        self.mean_rel = np.zeros((E, nmax + 1), np.float32)
        self.radius = np.zeros((E, nmax + 1), np.float32)
        self.reward_radius = np.zeros((E, nmax + 1), np.float32)
        self.ring_rel = np.zeros((E, nmax + 1), np.float32)
        self.areas = np.zeros((E, nmax + 1), np.float64)
        self.cent = np.zeros((E, nmax + 1, self.nd), np.int64)
        lmax = max(len(lst) for ep in self.episodes for lst in ep.agent_lists)
        lmax = max(lmax, 1)
        self.agent_sp = np.full((E, K, lmax), nmax, np.int64)
        self.agent_len = np.zeros((E, K), np.int64)
        for e, ep in enumerate(self.episodes):
            n = ep.n_labels
            self.hists[e, :n] = ep.hists
            self.dist[e, :n] = ep.dist
            self.mean_rel[e, :n] = ep.mean_rel
            self.radius[e, :n] = ep.radius
            self.reward_radius[e, :n] = ep.radius if ep.reward_radius is None else ep.reward_radius
            self.ring_rel[e, :n] = ep.ring_rel
            self.areas[e, :n] = ep.areas
            self.cent[e, :n] = ep.state_centroids + self.pad
            for k, lst in enumerate(ep.agent_lists):
                self.agent_sp[e, k, : len(lst)] = lst
                self.agent_len[e, k] = len(lst)
        self.gt_overlap = np.zeros((E, nmax + 1), np.float64)
        self.gt_total = np.zeros(E, np.float64)
        self.has_gt = np.zeros(E, bool)
        for e, ep in enumerate(self.episodes):
            if ep.gt_overlap is not None:
                self.gt_overlap[e, : ep.n_labels] = ep.gt_overlap
                self.gt_total[e] = ep.gt_total
                self.has_gt[e] = True
        self.box_hist = self.hists.sum(1)  # [E, 256]
        self.box_area = self.areas.sum(1)
        self.max_steps = cfg.traversals * self.agent_len.max(1)  # [E]
        self._prepare_lookups()
        self.reset()

    def _prepare_lookups(self) -> None:
        """Flat, pre-rounded copies of the canvases that every step reads.

        A crop is a gather from these by flat index; rounding and clipping to uint8 (and
        the classifier's division by 255) commute with choosing the erased or the original
        value, so doing them once here gives the same crops and views as doing them at
        every step."""
        E = self.E
        self.st_shape = self.st_labels.shape[1:]
        self.st_lab_flat = self.st_labels.reshape(E, -1)
        self.st_orig_u8 = _flat_u8(self.st_orig)
        self.st_filled_u8 = _flat_u8(self.st_filled)
        self.st_prior_u8 = (None if self.st_prior is None
                            else np.rint(self.st_prior * 255).astype(np.uint8).reshape(E, -1))
        self.cls_shape = self.cls_labels.shape[1:]
        self.cls_lab_flat = self.cls_labels.reshape(E, -1)
        self.cls_orig_n = (self.cls_orig / 255.0).astype(np.float32).reshape(E, -1)
        self.cls_filled_n = (self.cls_filled / 255.0).astype(np.float32).reshape(E, -1)
        if self.cfg.global_view:
            self.g_lab_flat = self.g_labels.reshape(E, -1)
            self.g_orig_u8 = _flat_u8(self.g_orig)
            self.g_filled_u8 = _flat_u8(self.g_filled)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        E = self.E
        self.erased = np.zeros((E, self.nmax + 1), dtype=bool)
        self.t = np.zeros(E, np.int64)
        self.done = self.max_steps <= 0
        self._advance()
        self.score = self._scores(self.erased)
        self.initial_score = self.score.copy()
        first = self._crops(self._sp, self.erased)
        self.frames = np.repeat(first[:, :, None], self.cfg.frames, axis=2)  # [E,K,F,*S]
        self.curve_area: list[np.ndarray] = [self._erased_area_fraction()]
        self.curve_score: list[np.ndarray] = [self.score.copy()]
        self.curve_dice: list[np.ndarray] = [self._dice()]

    def _advance(self) -> None:
        """Recompute the per-step caches after ``t`` or ``done`` changed: who acts, on
        which superpixel, and (filled in by :meth:`_crops`) the crop's flat index."""
        L = np.maximum(self.agent_len, 1)
        self._active = (~self.done[:, None]) & (self.t[:, None] < self.cfg.traversals * self.agent_len)
        sp = np.take_along_axis(self.agent_sp, (self.t[:, None] % L)[..., None], 2)[..., 0]
        self._sp = np.where(self._active, sp, self.dummy)
        self._flat_for: tuple[np.ndarray, np.ndarray] | None = None

    def active(self) -> np.ndarray:
        """[E, K] agents acting at the current step."""
        return self._active.copy()

    def _current_sp(self) -> np.ndarray:
        return self._sp.copy()

    # ------------------------------------------------------------- rendering
    def _crop_flat(self, sp: np.ndarray) -> np.ndarray:
        """Indices [E, K * S^nd] into the raveled [E, P] state canvases of the crop around
        each agent's superpixel centroid (each axis clipped to the canvas, as the pad
        allows)."""
        if self._flat_for is not None and self._flat_for[0] is sp:
            return self._flat_for[1]
        E, K, S, nd = self.E, self.K, self.S, self.nd
        c = np.take_along_axis(self.cent, sp[..., None].repeat(nd, -1), 1)  # [E, K, nd]
        off = np.arange(S) - S // 2
        P = int(np.prod(self.st_shape))
        flat = (np.arange(E) * P).reshape((E, 1) + (1,) * nd)
        stride = 1
        for d in reversed(range(nd)):
            n = self.st_shape[d]
            ax = np.clip(c[:, :, d, None] + off, 0, n - 1)  # [E, K, S]
            shape = [E, K] + [1] * nd
            shape[2 + d] = S
            flat = flat + ax.reshape(shape) * stride
            stride *= n
        flat = flat.reshape(E, K * S**nd)
        self._flat_for = (sp, flat)
        return flat

    def _flags(self, erased: np.ndarray, lab: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """erased[e, lab[i, ...]] for the i-th environment e of ``rows`` (all if None)."""
        n1 = erased.shape[1]
        e = np.arange(len(lab)) if rows is None else np.asarray(rows)
        return erased.ravel().take(lab + (e * n1).reshape((-1,) + (1,) * (lab.ndim - 1)))

    def _crops(self, sp: np.ndarray, erased: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """State crops [E, K, *S] (uint8) around each agent's superpixel centroid; with
        ``rows``, only those environments' crops ([len(rows), K, *S])."""
        flat = self._crop_flat(sp)
        if rows is not None:
            flat = flat[rows]
        lab = self.st_lab_flat.ravel().take(flat)
        flag = self._flags(erased, lab, rows)
        img = np.where(flag, self.st_filled_u8.ravel().take(flat), self.st_orig_u8.ravel().take(flat))
        return img.reshape((len(img), self.K) + (self.S,) * self.nd)

    def _views(self, erased: np.ndarray, env_idx: np.ndarray) -> torch.Tensor:
        """Classifier inputs [B, 1, *cls] for the given flag sets of environments."""
        if len(env_idx) == self.E and np.array_equal(env_idx, np.arange(self.E)):
            lab, orig, filled = self.cls_lab_flat, self.cls_orig_n, self.cls_filled_n
        else:
            lab, orig, filled = (self.cls_lab_flat[env_idx], self.cls_orig_n[env_idx],
                                 self.cls_filled_n[env_idx])
        img = np.where(self._flags(erased, lab, None), filled, orig)
        return torch.from_numpy(img.reshape((len(env_idx), 1) + self.cls_shape))

    def _scores(self, erased: np.ndarray, env_idx: np.ndarray | None = None) -> np.ndarray:
        if env_idx is None:
            env_idx = np.arange(self.E)
        if len(env_idx) == 0:
            return np.zeros(0, np.float64)
        with torch.no_grad():
            s = self.scorer(self._views(erased, env_idx))
        return s.detach().cpu().numpy().astype(np.float64)

    # ----------------------------------------------------------- observation
    def observe(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (states [E,K,C,*S] uint8, aux [E,K,N_AUX] float32, active [E,K]); with
        ``rows``, those environments only."""
        sp = self._sp
        sel = slice(None) if rows is None else rows
        chans = [self.frames[sel]]
        needs_flat = self.cfg.position_channel or self.st_prior_u8 is not None
        flat = self._crop_flat(sp)[sel] if needs_flat else None
        if self.cfg.position_channel:
            crop_lab = self.st_lab_flat.ravel().take(flat)
            cur = crop_lab.reshape(-1, self.K, self.S**self.nd) == sp[sel][..., None]
            chans.append((cur.view(np.uint8) * 255).reshape((-1, self.K, 1) + (self.S,) * self.nd))
        if self.st_prior_u8 is not None:
            pri = self.st_prior_u8.ravel().take(flat)
            chans.append(pri.reshape((-1, self.K, 1) + (self.S,) * self.nd))
        if self.cfg.global_view:
            chans.append(self._global_channels(sp, sel))
        states = np.concatenate(chans, axis=2)
        aux = self._aux(sp)
        if rows is not None:
            aux = aux[rows]
        return states, aux, self._active[sel].copy()

    def _global_channels(self, sp: np.ndarray, sel=slice(None)) -> np.ndarray:
        """[E, K, 3, *S] uint8: whole-box view (partly erased), erased region, current superpixel."""
        lab = self.g_lab_flat[sel]
        flag = self._flags(self.erased, lab, None if isinstance(sel, slice) else sel)  # [E, P]
        img = np.where(flag, self.g_filled_u8[sel], self.g_orig_u8[sel])
        cur = lab[:, None] == sp[sel][..., None]  # [E, K, P]
        n, K = len(lab), self.K
        out = np.empty((n, K, 3, lab.shape[1]), np.uint8)
        out[:, :, 0] = img[:, None]
        out[:, :, 1] = flag[:, None].view(np.uint8) * 255
        out[:, :, 2] = cur.view(np.uint8) * 255
        return out.reshape((n, K, 3) + (self.S,) * self.nd)

    def _aux(self, sp: np.ndarray) -> np.ndarray:
        rows = np.arange(self.E)[:, None]
        trav = self.t[:, None] // np.maximum(self.agent_len, 1)
        aux = np.stack(
            [
                self.dist[rows, sp],
                self.radius[rows, sp],
                self.mean_rel[rows, sp],
                self.ring_rel[rows, sp],
                np.repeat(self.score[:, None], self.K, 1),
                self.erased[rows, sp].astype(np.float32),
                trav.astype(np.float32),
            ],
            -1,
        ).astype(np.float32)
        if not self.cfg.aux_features:
            aux = np.zeros_like(aux)
        return aux

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply actions [E, K] (0 pass, 1 erase); return (rewards [E,K], done [E])."""
        E, K = self.E, self.K
        self._advance()  # cheap, and right even if the visiting order was edited in between
        active = self._active
        sp = self._sp
        rows = np.arange(E)[:, None]
        old_val = self.erased[rows, sp]
        new_val = np.asarray(actions).astype(bool)
        if not self.cfg.pass_restores:
            new_val = new_val | old_val
        changed = active & (new_val != old_val)
        prev = self.erased
        joint = prev.copy()
        er, ek = np.nonzero(active)
        joint[er, sp[er, ek]] = new_val[er, ek]
        joint[:, self.dummy] = False
        live = np.nonzero(~self.done)[0]
        new_score = self.score.copy()
        new_score[live] = self._scores(joint[live], live)
        rewards = np.zeros((E, K), np.float32)
        if self.compute_rewards:
            rewards = self._rewards(prev, joint, sp, new_val, changed, new_score)
        self.erased = joint
        self.score = new_score
        self.t = np.where(self.done, self.t, self.t + 1)
        finished = self.t >= self.max_steps
        if self.terminal:
            finished |= self.score > 1.0 - self.cfg.stop_margin
        self.done = self.done | finished
        self._advance()
        # frames: shift and add the crop at the new position (at inference, only for the
        # environments still running: a finished one's frames are never looked at again)
        if self.compute_rewards:
            crop = self._crops(self._sp, self.erased)
            self.frames = np.concatenate([crop[:, :, None], self.frames[:, :, :-1]], axis=2)
        else:
            run = np.nonzero(~self.done)[0]
            if len(run):
                self.frames[run, :, 1:] = self.frames[run, :, :-1].copy()
                self.frames[run, :, 0] = self._crops(self._sp, self.erased, run)
        self.curve_area.append(self._erased_area_fraction())
        self.curve_score.append(self.score.copy())
        self.curve_dice.append(self._dice())
        return rewards, self.done.copy()

    def _rewards(self, prev, joint, sp, new_val, changed, new_score) -> np.ndarray:
        cfg = self.cfg
        E, K = self.E, self.K
        rows = np.arange(E)[:, None]
        fg_prev = np.einsum("en,enb->eb", prev.astype(np.float32), self.hists)  # [E, 256]
        bg_prev = self.box_hist - fg_prev
        if cfg.reward_attribution == "joint":
            fg_now = np.einsum("en,enb->eb", joint.astype(np.float32), self.hists)
            step_region = None
            if cfg.idr1_reference == "step":
                diff = (joint != prev).astype(np.float32)
                step_region = np.einsum("en,enb->eb", diff, self.hists)
            r = total_reward(
                self.score, new_score, fg_prev, bg_prev, fg_now, self.box_hist - fg_now,
                theta=cfg.theta, use_csr=cfg.use_csr, use_idr1=cfg.use_idr1,
                use_idr2=cfg.use_idr2, step_region=step_region, csr_tolerance=cfg.csr_tolerance,
            )
            if cfg.use_prior:
                step_sign = np.where(new_val, 1.0, -1.0) * changed  # [E, K]
                pr = prior_reward(self.reward_radius[rows, sp], step_sign, cfg.prior_radius, cfg.prior_core)
                r = r + np.sign(pr.sum(1))
            r = r - cfg.erase_cost * (np.where(new_val, 1.0, -1.0) * changed).sum(1)
            any_change = changed.any(1)
            r = np.where(any_change, r, 0.0)
            return np.where(self.active(), r[:, None], 0.0).astype(np.float32) * np.ones((E, K))
        # per agent: the agent's own action applied alone to the previous state
        sign = np.where(new_val, 1.0, -1.0) * changed  # +1 erased now, -1 restored, 0 same
        sp_hist = self.hists[rows, sp]  # [E, K, 256]
        fg_k = fg_prev[:, None] + sign[..., None] * sp_hist
        bg_k = self.box_hist[:, None] - fg_k
        score_k = np.repeat(self.score[:, None], K, 1)
        ce, ck = np.nonzero(changed)
        if len(ce):
            if K == 1:
                score_k[ce, ck] = new_score[ce]
            else:
                variants = prev[ce].copy()
                variants[np.arange(len(ce)), sp[ce, ck]] = new_val[ce, ck]
                score_k[ce, ck] = self._scores(variants, ce)
        r = total_reward(
            self.score[:, None], score_k, fg_prev[:, None], bg_prev[:, None], fg_k, bg_k,
            theta=cfg.theta, use_csr=cfg.use_csr, use_idr1=cfg.use_idr1, use_idr2=cfg.use_idr2,
            step_region=sp_hist if cfg.idr1_reference == "step" else None,
            csr_tolerance=cfg.csr_tolerance,
        )
        if cfg.use_prior:
            r = r + prior_reward(self.reward_radius[rows, sp], sign, cfg.prior_radius, cfg.prior_core)
        r = r - cfg.erase_cost * sign
        return np.where(changed, r, 0.0).astype(np.float32)

    # --------------------------------------------------------------- outputs
    def _erased_area_fraction(self) -> np.ndarray:
        return (self.erased * self.areas).sum(1) / np.maximum(self.box_area, 1)

    def _dice(self) -> np.ndarray:
        inter = (self.erased * self.gt_overlap).sum(1)
        denom = (self.erased * self.areas).sum(1) + self.gt_total
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(denom > 0, 2 * inter / denom, 1.0)
        return np.where(self.has_gt, dice, np.nan)

    def all_done(self) -> bool:
        return bool(self.done.all())

    def masks(self) -> list[np.ndarray]:
        """Erased regions mapped back to full-resolution boolean masks.

        The post-processing (smoothing, prior fusion) runs where the box's shortest side is
        at most ``cfg.mask_work_side`` pixels and the result is resized to the image, so its
        cost does not grow with the box (a box under that size is processed as it is)."""
        out = []
        for e, ep in enumerate(self.episodes):
            flags = self.erased[e, : ep.n_labels]
            canvas = np.zeros(ep.canvas_shape, np.float32)
            inside = ep.labels >= 0
            canvas[inside] = flags[ep.labels[inside]]
            side = self.cfg.mask_work_side
            scale = min(1.0, side / min(ep.box.shape)) if side > 0 else 1.0
            if scale >= 1.0:
                work_shape, work_box = ep.view.shape, ep.box.relative_to(ep.view)
            else:
                work_shape = tuple(max(1, int(round(n * scale))) for n in ep.view.shape)
                rel = ep.box.relative_to(ep.view)
                work_box = Box.from_lo_hi(
                    [int(np.floor(lo * w / n)) for lo, w, n in zip(rel.lo, work_shape, ep.view.shape)],
                    [int(np.ceil(hi * w / n)) for hi, w, n in zip(rel.hi, work_shape, ep.view.shape)])
            m_work = resize(canvas, work_shape) > 0.5
            radius = int(round(self.cfg.smooth * min(work_box.shape)))
            m_work = postprocess_mask(
                m_work, fill_holes=self.cfg.fill_holes, largest=self.cfg.largest_component,
                smooth_radius=radius,
            )
            m_work &= work_box.to_mask(work_shape)
            if self.cfg.prior_fusion > 0:
                m_work = fuse_with_box_prior(m_work, work_box, self.cfg.prior_fusion,
                                             self.cfg.prior_fusion_sigma)
                m_work = postprocess_mask(m_work, fill_holes=self.cfg.fill_holes,
                                          largest=self.cfg.largest_component)
            m_view = m_work if scale >= 1.0 else resize(m_work.astype(np.float32), ep.view.shape) > 0.5
            full = np.zeros(ep.image_shape, bool)
            full[ep.view.slices()] = m_view
            full &= ep.box.to_mask(ep.image_shape)
            out.append(full)
        return out

    def state_masks(self) -> list[np.ndarray]:
        """Erased regions in each episode's state canvas (float 0/1): the coarse-to-fine
        prior that a finer level of the same box takes (same canvas at every level)."""
        out = []
        for e, ep in enumerate(self.episodes):
            lab = ep.state_labels
            m = np.zeros(lab.shape, np.float32)
            inside = lab >= 0
            m[inside] = self.erased[e, lab[inside]]
            out.append(m)
        return out

    def curves(self, e: int) -> dict[str, np.ndarray]:
        """Per-step erase curve of environment ``e`` (until its episode ended)."""
        n = int(self.t[e]) + 1
        return {
            "step": np.arange(n),
            "erased_area": np.array([c[e] for c in self.curve_area[:n]]),
            "normal_score": np.array([c[e] for c in self.curve_score[:n]]),
            "dice": np.array([c[e] for c in self.curve_dice[:n]]),
        }


QValues = Callable[[np.ndarray, np.ndarray], np.ndarray]


def greedy_rollout(
    episodes: Sequence[Episode],
    cfg: FlipConfig,
    scorer: Scorer,
    q_values: QValues,
    *,
    priors: Sequence[np.ndarray | None] | None = None,
) -> VecErasingEnv:
    """Erase every episode to its end with the greedy policy (no rewards computed; the
    flip terminal applies when ``cfg.inference_terminal`` is on)."""
    env = VecErasingEnv(episodes, cfg, scorer, compute_rewards=False, priors=priors,
                        terminal=cfg.inference_terminal)
    actions = np.zeros((env.E, env.K), np.int64)
    while not env.all_done():
        run = np.nonzero(~env.done)[0]
        states, aux, _ = env.observe(run)
        actions[:] = 0
        actions[run] = q_values(states, aux).argmax(-1)
        env.step(actions)
    return env


def coarse_priors(
    coarse: Sequence[Episode], cfg: FlipConfig, scorer: Scorer, q_values: QValues
) -> list[np.ndarray]:
    """Coarse-to-fine: the greedy coarse-level masks of the same boxes, in the state
    canvas, to pass as ``priors`` to the finer level's environment."""
    if not coarse:
        return []
    return greedy_rollout(coarse, cfg, scorer, q_values).state_masks()
