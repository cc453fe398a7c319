"""Configuration of Flip Learning (one dataclass, saved with every run)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from flipseg.errors import FlipsegError

__all__ = [
    "FlipConfig",
    "PAPER_2D_LEVELS",
    "PAPER_3D_LEVELS",
    "CPU_3D_PRESET",
    "PAPER_2D_PRESET",
    "PRESETS",
    "default_config",
]

#: The paper's curricula (number of superpixels/supervoxels per level).
PAPER_2D_LEVELS = (100, 1000, 2000)
PAPER_3D_LEVELS = (100, 1000, 2000, 5000, 10000)


#: What ``flipseg train flip --dims 3`` changes from the (2D) defaults: the CPU preset
#: for volumes. Supervoxels in a box standardised to a 24-voxel shortest side (64 at
#: most), 50, 100, 200 of them whatever the box size (scaling the count to the box,
#: ``scale_levels_to_box``, left the small phantom boxes with 8-50 supervoxels, whose
#: best labelling scores no better than the inscribed ellipsoid; the paper's five-level
#: curriculum is ``levels=PAPER_3D_LEVELS`` with the count scaled to the box and
#: ``level_reference_edge=64``), 4 agents, 16^3 state crops, a 32^3 classifier input,
#: a 2000-transition replay (paper). The classification-score reward (CSR, eq. (1)) is on
#: in 3D with a 0.01 tolerance: the phantom classifier separates the classes cleanly and
#: erasing one lesion supervoxel moves its normal score 0.077 on average against 0.001
#: for a background one; on 78 held-out phantom lesions CSR raised Dice from 82.95 to
#: 84.63.
CPU_3D_PRESET: dict[str, Any] = {
    "dims": 3,
    "standard_short_side": 24,
    "max_long_side": 64,
    "agents": 4,
    "state_size": 16,
    "classifier_size": 32,
    "levels": (50, 100, 200),
    "scale_levels_to_box": False,
    "level_reference_edge": 24,
    "use_csr": True,
    "csr_tolerance": 0.01,
    "replay_size": 2000,
    "num_envs": 16,
}


@dataclass
class FlipConfig:
    """Every knob of Flip Learning; the defaults are the CPU preset.

    The paper's full-size settings are reachable through options
    (``levels=PAPER_2D_LEVELS``, ``q_network="resnet18"``, ...).
    """

    # ---- environment
    dims: int = 2
    """Spatial dimensions (2 for BUS images, 3 for ABUS volumes)."""
    standard_short_side: int = 100
    """Box resized so its shortest side is this many pixels (paper: 100). 0 = no resizing
    (the ``-E`` ablation switched off)."""
    max_long_side: int = 300
    """Cap on the standardised box's longest side (very elongated boxes)."""
    margin: float = 0.25
    """Context around the box seen by the classifier, as a fraction of the box extent."""
    superpixel_method: str = "slic"
    """Superpixel algorithm: slic, seeds or lsc (2D); slic in 3D."""
    order: str = "inner"
    """Traversal order: ``inner`` (inner-to-outer by distance to the box centre) or ``index``."""
    agents: int = 2
    """Number of agents K; each gets a sector of ~N/K superpixels."""
    traversals: int = 2
    """T: maximum number of traversals of each agent's superpixels."""
    pass_restores: bool = False
    """False (the paper): *pass* leaves a superpixel as it is, so the erased region only
    grows. True: an action sets the state, so *pass* in a later traversal restores an
    erased superpixel."""
    stop_margin: float = 0.01
    """S: an episode ends when the normal score exceeds 1 - S."""
    inference_terminal: bool = False
    """Apply that terminal at inference too (and in validation). False (CPU preset): the
    greedy agents run their T traversals and the terminal acts in training only. On
    BUS-BRA fold 5 with the shipped model, the terminal stopped 11% of the episodes with
    a median 83% of the lesion erased (those boxes: Dice 0.84 against 0.90 for the
    ellipse); all 383 boxes: Dice 0.904 with it, 0.911 without (docs/flip.md)."""
    state_size: int = 32
    """Side of the square state crop fed to the Q-network."""
    state_scale: float = 0.5
    """Resolution of the state canvas relative to the standardised box (0.5: a 32 px crop
    covers 64 standardised pixels, the paper's 64x64 state)."""
    frames: int = 3
    """Frames stacked per agent (current + previous)."""
    position_channel: bool = True
    """Add a channel marking the current superpixel inside the crop (our addition)."""
    global_view: bool = True
    """Add three channels showing the whole standardised box with its margin, resized to
    the state size: the partly erased image, the erased region and the current
    superpixel (our addition: the crop alone does not show the lesion's overall shape)."""
    aux_features: bool = True
    """Feed scalar context (distance to the centre, elliptical radius in the box, intensity
    relative to the box and to the margin around it, normal score, erased flag, traversal)
    to the heads (our addition; switch off for the paper's state)."""
    classifier_size: int = 64
    """Input side of the classifier (must match the trained classifier)."""

    # ---- rewards
    use_csr: bool = False
    """Classification-score reward, eq. (1). Off in the CPU preset: on BUS-BRA the sign of
    the score change agrees with the ground truth for about 55-75% of superpixels (the
    classifier is trained from boxes only) and it lowered validation Dice (docs/flip.md);
    the classifier still picks the eraser source and gives the terminal signal."""
    use_idr1: bool = False
    """Foreground intensity-distribution reward, eq. (2). Off in the CPU preset (it lowered
    validation Dice, docs/flip.md); on in ``--preset paper``."""
    use_idr2: bool = True
    """Foreground/background separation reward, eqs. (3)-(5)."""
    use_prior: bool = True
    """Box-prior reward (our addition): +1 for erasing a superpixel whose centroid lies
    inside the inscribed ellipse (scaled by ``prior_radius``), -1 outside."""
    prior_radius: float = 1.0
    """Scale of the inscribed ellipse used by the box-prior reward."""
    prior_core: float = 0.7
    """Box-prior reward: +2 (instead of +1) inside the inscribed ellipse scaled by this
    (0 = no core), so that heterogeneous lesion centres are erased whatever IDR2 says."""
    erase_cost: float = 0.5
    """Subtracted from the reward of every erase (our addition; breaks ties between
    disagreeing reward terms towards *pass*). 0 = the paper."""
    idr1_reference: str = "step"
    """IDR1 compares FG_{t-1} with ``cumulative``: FG_t (eq. (2) as printed) or ``step``:
    the region erased at this step alone (penalises a superpixel unlike the foreground
    however large the foreground already is)."""
    csr_tolerance: float = 0.0
    """CSR counts a change of the normal score of at most this much as no change (eq. (1)'s
    zero case for a continuous score); 0 = the sign of any change, as printed."""
    theta: float = 25.0
    """IDR1 threshold on the Wasserstein-1 distance (0-255 intensity scale)."""
    train_box_shift: int = 0
    """Box jitter in training (our addition; 0 = off): with probability
    ``train_box_shift_prob`` an episode's box has every edge moved 0 to this many pixels
    (voxels), inwards or outwards, as the box-shift protocol does (:func:`flipseg.boxes.
    shift_box`). The agents see the jittered box; the box-prior reward keeps the annotated
    tight box, so they learn to find the lesion in a loose box rather than to erase in
    proportion to it. One jittered box per training box and level (drawn from ``seed``),
    so the superpixel cache still holds."""
    train_box_shift_prob: float = 0.5
    """Fraction of training episodes whose box is jittered (``train_box_shift``)."""
    reward_attribution: str = "per_agent"
    """``per_agent``: each agent's reward measures its own action applied alone to the
    previous state (one extra classifier call per agent); ``joint``: all agents share the
    reward of the joint step."""

    # ---- curriculum
    levels: tuple[int, ...] = (50, 100)
    """Superpixel counts of the curriculum levels (paper 2D: 100, 1000, 2000)."""
    curriculum: str = "progressive"
    """``progressive`` (PCL), ``mixed`` (MCL: random level per episode), ``fixed`` (last
    level only) or ``c2f`` (coarse-to-fine, the MICCAI version: levels are trained in
    turn as in PCL, and every finer level sees the greedy mask of the first (coarse)
    level as one more state channel; inference runs the coarse level, then the fine one.
    One network serves both stages, the coarse stage seeing a flat 0.5 "no prior")."""
    epochs_per_level: int = 0
    """Epochs spent on each level under PCL (0: split ``epochs`` evenly)."""
    inference_level: int = -1
    """Index into ``levels`` used at inference (default: the last)."""
    inference_segments: int = 0
    """Superpixel (supervoxel) count at inference, overriding ``inference_level`` (0: off).
    The agents judge each superpixel from crops around it, so a model trained at 50-100
    can erase finer ones: the shipped 2D model uses 400 (docs/flip.md)."""
    scale_levels_to_box: bool = False
    """Scale the superpixel count with the box size (pixels/voxels of the original box
    relative to a box of edge ``level_reference_edge``; at least 8)."""
    level_reference_edge: int = 64
    """Edge of the reference box at which ``levels`` apply unchanged when
    ``scale_levels_to_box`` is on (64: a 64^3-voxel box gets exactly ``levels``)."""

    # ---- learning
    q_network: str = "compact"
    """Q-network trunk: ``compact`` (width 16) or ``resnet18`` (the paper's)."""
    epochs: int = 8
    """Training epochs (one epoch = every training box erased once)."""
    num_envs: int = 64
    """Environments (boxes) erased in parallel during training."""
    batch_size: int = 128
    """Replay batch size per learning step."""
    learn_every: int = 1
    """Environment steps between learning steps."""
    replay_size: int = 8000
    """Replay capacity (transitions of all agents of one environment step)."""
    warmup: int = 500
    """Transitions collected before learning starts."""
    gamma: float = 0.9
    """Discount factor."""
    lr: float = 5e-4
    """AdamW learning rate (paper: 5e-5 with ResNet18 and 100 epochs)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    target_sync: int = 1200
    """Learning steps between target-network copies (paper: 1200)."""
    eps_start: float = 1.0
    """Initial epsilon of the epsilon-greedy policy."""
    eps_end: float = 0.05
    """Final epsilon."""
    eps_decay_fraction: float = 0.5
    """Fraction of all training steps over which epsilon decays linearly."""
    per_alpha: float = 0.6
    """Prioritized replay exponent alpha (0 = uniform)."""
    per_beta: float = 0.4
    """Initial importance-sampling exponent beta, annealed to 1."""
    per_eps: float = 1e-3
    """Added to |TD error| to keep priorities positive."""
    prioritized: bool = True
    """Use prioritized replay (False: uniform sampling, unit weights)."""
    huber: bool = True
    """Huber instead of squared TD loss."""
    grad_clip: float = 10.0
    """Gradient-norm clip."""
    seed: int = 0
    """Seed of every random choice."""
    device: str = "cpu"
    """Torch device."""
    num_threads: int = 1
    """Torch CPU threads. The networks are small, so one thread per process is fastest on
    a busy 2-core machine (several threads spin against each other there); raise it on an
    idle many-core machine."""

    # ---- eraser source
    eraser: str = "classifier"
    """``classifier`` (best of the 6/9 neighbour candidates by normal score), ``mixup``
    (the MICCAI paper's copy-paste fill), or a fixed candidate name (``up``, ...)."""

    # ---- post-processing
    fill_holes: bool = True
    """Fill holes of the erased region."""
    largest_component: bool = True
    """Keep the largest connected component of the erased region."""
    mask_work_side: int = 256
    """The mask's post-processing (smoothing, prior fusion) runs where the box's shortest
    side is at most this many pixels (voxels), then the mask is resized to the image: its
    cost stops growing with the box. Smaller boxes are processed as they are; 0: always at
    full resolution."""
    smooth: float = 0.1
    """Morphological opening + closing of the mask with a disk (ball) whose radius is this
    fraction of the box's shortest side (0 = off); the papers post-process their masks."""
    prior_fusion: float = 0.4
    """Weight ``w`` of the box's inscribed ellipse (ellipsoid) in a soft vote with the Flip
    mask: the final mask is ``(1 - w) G(flip) + w G(ellipse) > 0.5`` inside the box, ``G`` a
    Gaussian blur (:attr:`prior_fusion_sigma`). 0 = off (the papers). An addition of ours:
    where the agents and the shape prior disagree, the boundary settles between them, which
    trims the supervoxel spurs that set the Hausdorff distance."""
    prior_fusion_sigma: float = 0.06
    """Blur of :attr:`prior_fusion`, per axis a fraction of the box's extent along that axis."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept with the run (not used by the code)."""

    def __post_init__(self) -> None:
        self.levels = tuple(int(v) for v in self.levels)
        checks = {
            "dims": self.dims in (2, 3),
            "agents": 1 <= self.agents <= 16,
            "traversals": self.traversals >= 1,
            "order": self.order in ("inner", "index"),
            "curriculum": self.curriculum in ("progressive", "mixed", "fixed", "c2f"),
            "reward_attribution": self.reward_attribution in ("per_agent", "joint"),
            "idr1_reference": self.idr1_reference in ("cumulative", "step"),
            "inference_segments": self.inference_segments == 0 or self.inference_segments >= 2,
            "levels": len(self.levels) >= 1 + (self.curriculum == "c2f")
            and all(v >= 2 for v in self.levels),
            "frames": self.frames >= 1,
            "level_reference_edge": self.level_reference_edge >= 1,
            "csr_tolerance": 0.0 <= self.csr_tolerance < 1.0,
            "prior_radius": self.prior_radius > 0,
            "prior_core": 0 <= self.prior_core <= self.prior_radius,
            "erase_cost": self.erase_cost >= 0,
            "train_box_shift": self.train_box_shift >= 0,
            "train_box_shift_prob": 0.0 <= self.train_box_shift_prob <= 1.0,
            "smooth": 0.0 <= self.smooth < 0.5,
            "mask_work_side": self.mask_work_side >= 0,
            "prior_fusion": 0.0 <= self.prior_fusion < 1.0,
            "prior_fusion_sigma": 0.0 < self.prior_fusion_sigma <= 0.5,
        }
        for name, ok in checks.items():
            if not ok:
                raise FlipsegError(f"invalid flip option {name}={getattr(self, name)!r}")

    # ------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FlipConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlipsegError(f"unknown flip option(s): {', '.join(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` with the configuration's version (:func:`flipseg.runs.write_config`)."""
        from flipseg.runs import write_config

        write_config(path, self)

    #: Version of the saved form; :meth:`migrate` brings older ones up to it.
    config_version: ClassVar[int] = 1

    @classmethod
    def migrate(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        """A configuration saved at ``version`` as one of ``version + 1``.

        0 -> 1: configurations saved before versions existed lack the options added
        since; each missing one takes the value that reproduces the old behaviour
        (:data:`LEGACY_VALUES`), not today's default, so old runs and model files keep
        working unchanged.
        """
        if version == 0:
            return {**{k: v for k, v in LEGACY_VALUES.items() if k not in d}, **d}
        raise FlipsegError(f"no migration of flip configurations from version {version}")

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> "FlipConfig":
        """A saved configuration (a run's ``config.json`` or a model file's), migrated to this
        version by :meth:`migrate` (:func:`flipseg.runs.read_config`)."""
        from flipseg.runs import read_config

        return read_config(cls, d)

    @classmethod
    def load(cls, path: str | Path) -> "FlipConfig":
        """Read a configuration written by :meth:`save` (see :meth:`from_saved`)."""
        return cls.from_saved(json.loads(Path(path).read_text()))

    def with_overrides(self, **kw: Any) -> "FlipConfig":
        d = self.to_dict()
        d.update(kw)
        return FlipConfig.from_dict(d)


#: Options added after the first release, with the value that reproduces the behaviour
#: of configurations saved before they existed.
LEGACY_VALUES: dict[str, Any] = {
    "inference_terminal": True,
    "global_view": False,
    "use_prior": False,
    "prior_core": 0.0,
    "erase_cost": 0.0,
    "csr_tolerance": 0.0,
    "smooth": 0.0,
    "prior_fusion": 0.0,
}


#: The journal paper's 2D settings (``flipseg train flip --preset paper``): rewards
#: CSR + IDR1 + IDR2 as printed, none of our additions, 100/1000/2000 superpixels (20
#: epochs each, then the last level), ResNet18 Q-network, 100 epochs at lr 5e-5, a batch
#: of 64 and an 8000-transition replay. Days of CPU time: for a GPU.
PAPER_2D_PRESET: dict[str, Any] = {
    "use_csr": True,
    "use_idr1": True,
    "use_idr2": True,
    "use_prior": False,
    "csr_tolerance": 0.0,
    "erase_cost": 0.0,
    "global_view": False,
    "position_channel": False,
    "aux_features": False,
    "smooth": 0.0,
    "prior_fusion": 0.0,
    "inference_terminal": True,
    "levels": PAPER_2D_LEVELS,
    "epochs_per_level": 20,
    "epochs": 100,
    "q_network": "resnet18",
    "lr": 5e-5,
    "batch_size": 64,
    "learn_every": 1,
    "replay_size": 8000,
}

#: Preset name -> dims -> overrides of the dataclass defaults.
PRESETS: dict[str, dict[int, dict[str, Any]]] = {
    "cpu": {2: {}, 3: CPU_3D_PRESET},
    "paper": {2: PAPER_2D_PRESET, 3: {**CPU_3D_PRESET, **{
        k: v for k, v in PAPER_2D_PRESET.items() if k not in ("levels", "epochs_per_level")
    }, "levels": PAPER_3D_LEVELS, "scale_levels_to_box": True, "level_reference_edge": 64,
        "epochs": 150,
        "epochs_per_level": 20}},
}


def default_config(dims: int = 2, preset: str = "cpu") -> FlipConfig:
    """The configuration of a preset for ``dims``.

    ``cpu`` (default): 2D = the dataclass defaults, 3D = :data:`CPU_3D_PRESET`;
    ``paper``: the journal paper's settings (:data:`PAPER_2D_PRESET`; in 3D its
    five-level curriculum on 64-voxel reference boxes).
    """
    if preset not in PRESETS:
        raise FlipsegError(f"unknown flip preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if dims not in (2, 3):
        raise FlipsegError(f"Flip Learning works on 2D or 3D images, got dims={dims!r}")
    return FlipConfig(**PRESETS[preset][dims])
