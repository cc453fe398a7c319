"""Configuration of the image-selection + Mean Teacher recipe (paper 002).

One dataclass per stage, all nested in :class:`CamMTConfig` and saved as
``config.json`` in every run folder. The defaults are a CPU preset (compact
networks, 128 px inputs, a few epochs); :func:`paper_config` gives the paper's
sizes (ResNet50 classifier at 224 px, 60 epochs, batch 32, full-size U-Net).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

from flipseg.errors import FlipsegError
from flipseg.methods.common import RecipeConfig

__all__ = [
    "CamClassifierConfig",
    "CamMTConfig",
    "MeanTeacherConfig",
    "SelectionConfig",
    "apply_overrides",
    "paper_config",
]


class _Config(RecipeConfig):
    strict_keys = False  # saved configs load across versions: unknown keys are dropped


@dataclass
class CamClassifierConfig(_Config):
    """The tumor-vs-normal classifier whose class activation maps drive the selection."""

    variant: str = "amr"
    """``cam``: one branch, CAM of Zhou et al. (the ResNet50-CAM baseline); ``amr``: a
    spotlight branch plus a compensation branch with an attention-modulation module, their
    CAMs added (in the spirit of AMR, Qin et al. 2022, which the paper uses)."""
    backbone: str = "compact"
    """Feature extractor of each branch: ``compact`` (small conv net, CPU default),
    ``encoder`` (flipseg's ResNet-style encoder of layout ``encoder``, the one the pretrained
    backbone has), ``resnet18`` or ``resnet50`` (MONAI ResNets). Nothing is downloaded."""
    encoder: str = "compact"
    """``backbone=encoder``: its layout (``compact``, ``resnet18``, ``resnet34``, ``resnet50``)."""
    output_stride: int = 16
    """``backbone=encoder``: input side / CAM grid side (8, 16 or 32); the deepest stages run
    at stride 1 to reach it (weights unchanged)."""
    backbone_weights: str = "none"
    """Initialisation of each branch's backbone before training starts: ``none`` (random),
    ``auto`` (flipseg's shipped pretrained backbone when ``backbone=encoder`` of a shipped
    layout, else random), ``shipped``, a flipseg backbone (``backbone.safetensors`` or its
    ``flipseg train backbone`` run folder; for ``encoder`` or ``resnet18``), or any other
    path: a torch state dict (or a dict holding one under ``state_dict``) of a torchvision-
    or MONAI-style ResNet of the same depth (``conv1``, ``bn1``, ``layer1``-``layer4``; an
    RGB ``conv1`` is summed to one channel; ``fc`` is ignored), or of this backbone itself."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Channels of the ``compact`` backbone's blocks; all but the last halve the resolution."""
    convs_per_block: int = 1
    """``compact`` only: 3x3 convolutions per block (the first one strides); 2 doubles the
    depth and more than doubles the receptive field of each CAM cell."""
    pooling: str = "max"
    """How each branch pools its per-location class scores into logits: ``avg`` (global
    average pooling, the CAM of Zhou et al. and the paper's preset), ``lse`` (log-sum-exp
    with sharpness ``lse_r``: between average and max) or ``max`` (the CPU default: a tumor
    logit needs one location that looks like tumor, so the map peaks on it; on BUSI it
    raised Pseudo-MeanTeacher tumor IoU from 4.8 to 19.0 %, docs/cam_mt.md). The CAM is
    the tumor score map in every case."""
    lse_r: float = 5.0
    """``pooling=lse``: ``(1/r) log(mean(exp(r * s)))``; large r tends to max, small to average."""
    augment: bool = False
    """Random resized crops (75-100 % of each side), rotations (+-10 degrees) and gamma
    (0.7-1.4) during training, on top of ``hflip``."""
    shared_backbone: bool = False
    """``amr`` only: both branches share one backbone (half the weights) instead of two."""
    input_size: int = 128
    """Side of the square network input (the whole image, resized); the paper's ResNet50: 224."""
    epochs: int = 15
    """Passes over the training images (paper: 60)."""
    batch_size: int = 16
    """Images per optimiser step (paper: 32)."""
    lr: float = 1e-3
    """Adam learning rate (paper: 0.001, betas 0.9/0.999)."""
    weight_decay: float = 1e-4
    """Adam weight decay."""
    cam_loss_weight: float = 0.1
    """``amr`` only: weight of the L1 distance between the two branches' normalised tumor CAMs."""
    balance_classes: bool = True
    """Weight the cross-entropy by inverse class frequency (BUSI: ~5 tumor images per normal one)."""
    hflip: bool = True
    """Random horizontal flips during training."""
    cam_method: str = "cam"
    """How maps are computed at inference: ``cam`` (class weights times features, in the
    network) or any name of :data:`flipseg.baselines.cam.CAM_METHODS` (``gradcam``,
    ``layercam``, ...), applied to each branch."""
    seed: int = 0
    """Seed of initialisation, batch order and flips."""
    num_threads: int = 1
    """torch CPU threads."""

    option_word = "classifier"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.check_options({
            "variant": self.variant in ("cam", "amr"),
            "backbone": self.backbone in ("compact", "encoder", "resnet18", "resnet50"),
            "encoder": self.encoder in ("compact", "resnet18", "resnet34", "resnet50"),
            "output_stride": self.output_stride in (8, 16, 32),
            "widths": len(self.widths) >= 2 and min(self.widths) >= 1,
            "input_size": self.input_size >= 16,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "cam_loss_weight": self.cam_loss_weight >= 0,
            "convs_per_block": self.convs_per_block >= 1,
            "pooling": self.pooling in ("avg", "lse", "max"),
            "lse_r": self.lse_r > 0,
        })


@dataclass
class SelectionConfig(_Config):
    """Algorithm 1 and the selection rule (paper section II-B)."""

    alpha1: float = 2.5
    """Percent of CAM pixels in the broader ROI; that ROI also prompts the box -> mask engine."""
    alpha2: float = 1.0
    """Percent of CAM pixels in the narrower ROI (a little smaller than ``alpha1``)."""
    iou_threshold: float = 0.7
    """An image is kept when the IoU of its two ROIs is strictly greater than this."""
    upper_intensity: int = 255
    """Pixels of the 0-255 CAM in ``[T, upper_intensity]`` form the ROI. The paper's text
    says 250, which would drop the peak of every map; 255 keeps it."""
    roi_mode: str = "largest"
    """``largest``: the ROI is the bounding box of the largest 8-connected region of the
    selected pixels; ``all``: the bounding box of all of them (the paper's wording)."""

    option_word = "selection"

    def __post_init__(self) -> None:
        self.check_options({
            "alpha1": 0 < self.alpha1 <= 100,
            "alpha2": 0 < self.alpha2 <= 100,
            "iou_threshold": 0 <= self.iou_threshold < 1,
            "upper_intensity": 0 <= self.upper_intensity <= 255,
            "roi_mode": self.roi_mode in ("largest", "all"),
        })


@dataclass
class MeanTeacherConfig(_Config):
    """The segmentation U-Net, trained by Mean Teacher or plainly supervised."""

    image_size: int = 128
    """Side of the square network input (the whole image, resized)."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """U-Net widths per level (full size: 32,64,128,256,512)."""
    encoder: str = "none"
    """``none``: the MONAI U-Net of ``channels``; ``compact``, ``resnet18``, ``resnet34`` or
    ``resnet50``: a U-Net on flipseg's ResNet-style encoder
    (:class:`flipseg.networks.unet.ResUNet`; ``image_size`` a multiple of 32)."""
    backbone_weights: str = "none"
    """Initial weights of that encoder (student and teacher): ``none``, ``auto``/``shipped``
    (flipseg's own pretrained encoder) or a backbone file (:mod:`flipseg.networks.backbone`)."""
    epochs: int = 20
    """Passes over all training images, labelled and unlabelled (paper: 60)."""
    batch_size: int = 8
    """Images per optimiser step, labelled and unlabelled together (paper: 32)."""
    labeled_batch_size: int = 4
    """Mean Teacher: how many of each batch come from the pseudo-labelled set (at most
    ``batch_size``; all of it when there are no unlabelled images)."""
    lr: float = 1e-3
    """Adam learning rate (paper: 0.001)."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    ema_decay: float = 0.99
    """Teacher = ``decay`` * teacher + (1 - decay) * student after each step; early steps use
    ``min(decay, 1 - 1 / (step + 1))`` (Tarvainen & Valpola) so the teacher is not stuck at
    its random start."""
    consistency_weight: float = 0.1
    """Largest beta: weight of the student-teacher MSE of softmax outputs."""
    rampup_epochs: float = 8.0
    """beta rises as ``exp(-5 (1 - t / rampup_epochs)^2)`` over these epochs, then stays."""
    teacher_noise: float = 0.1
    """Standard deviation of Gaussian noise added to the teacher's input (0-1 intensity
    scale, clipped at 2 standard deviations); the student sees the clean image."""
    hflip: bool = True
    """Random horizontal flips (the same for student and teacher)."""
    vflip: bool = True
    """Random vertical flips (the paper uses them)."""
    rotate_degrees: float = 15.0
    """Random rotations within +- this many degrees (0: none)."""
    supervised: bool = False
    """Plain supervised U-Net (the paper's Whole / Subset rows): CE + Dice on labelled images
    only, no consistency, unlabelled images ignored, predictions by the student."""
    predict_with: str = "teacher"
    """Mean Teacher runs: which network segments new images (``teacher`` or ``student``)."""
    threshold: float = 0.5
    """Tumor probability above which a pixel is tumor."""
    largest_component: bool = False
    """Keep only the largest connected tumor region of each prediction."""
    seed: int = 0
    """Seed of initialisation, batch order, augmentation and noise."""
    num_threads: int = 1
    """torch CPU threads."""

    option_word = "mean_teacher"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.check_options({
            "image_size": self.image_size >= 16
            and self.image_size % 2 ** (len(self.channels) - 1) == 0,
            "channels": len(self.channels) >= 2,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "labeled_batch_size": self.labeled_batch_size >= 1,
            "lr": self.lr > 0,
            "ema_decay": 0 <= self.ema_decay < 1,
            "consistency_weight": self.consistency_weight >= 0,
            "rampup_epochs": self.rampup_epochs >= 0,
            "teacher_noise": self.teacher_noise >= 0,
            "predict_with": self.predict_with in ("teacher", "student"),
            "threshold": 0 < self.threshold < 1,
            "encoder": (self.encoder in ("none", "compact", "resnet18", "resnet34", "resnet50")
                        and (self.encoder == "none" or self.image_size % 32 == 0),
                        "none, compact, resnet18, resnet34 or resnet50; image_size a multiple "
                        "of 32 with a ResNet encoder"),
            "backbone_weights": (self.encoder != "none"
                                 or self.backbone_weights.lower() in ("none", "auto"),
                                 "none while encoder=none: the MONAI U-Net has no such encoder"),
        })


@dataclass
class CamMTConfig(_Config):
    """Every knob of the recipe; ``section.field`` names a nested one in ``--set``."""

    classifier: CamClassifierConfig = field(default_factory=CamClassifierConfig)
    """The CAM classifier."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """Algorithm 1 and the ROI-stability rule."""
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    """The segmentation network and its training."""
    engine: str = "flip"
    """Box -> mask engine for the pseudo labels: ``sam`` (needs ``sam_checkpoint``), ``flip``
    (Flip Learning, the shipped model) or any registered segmenter (``ellipse``, ``grabcut``...)."""
    engine_model: str | None = None
    """Model file or run folder for engines that take one (``flip``, ``boxinst``, CAM baselines)."""
    sam_checkpoint: str | None = None
    """Segment Anything checkpoint (``sam_vit_b_01ec64.pth`` ...) for ``engine=sam``."""
    sam_model_type: str = "vit_b"
    """Segment Anything architecture of the checkpoint: ``vit_b``, ``vit_l`` or ``vit_h``."""
    engine_batch_size: int = 32
    """Boxes per engine call; the pseudo masks are saved after each call (resume)."""
    test_fraction: float = 0.2
    """CLI and benchmark: patient-level share of images held out for testing (paper: 20%)."""
    split_seed: int = 0
    """CLI and benchmark: seed of the patient-level split."""

    option_word = "cam-mt"

    def __post_init__(self) -> None:
        if isinstance(self.classifier, dict):
            self.classifier = CamClassifierConfig.from_dict(self.classifier)
        if isinstance(self.selection, dict):
            self.selection = SelectionConfig.from_dict(self.selection)
        if isinstance(self.mean_teacher, dict):
            self.mean_teacher = MeanTeacherConfig.from_dict(self.mean_teacher)
        self.check_options({
            "engine_batch_size": self.engine_batch_size >= 1,
            "test_fraction": 0 < self.test_fraction < 1,
            "sam_model_type": self.sam_model_type in ("vit_b", "vit_l", "vit_h", "default"),
        })


_SECTIONS = {"classifier": CamClassifierConfig, "selection": SelectionConfig,
             "mean_teacher": MeanTeacherConfig}


def apply_overrides(cfg: CamMTConfig, items: Sequence[str]) -> CamMTConfig:
    """A copy of ``cfg`` with ``["classifier.epochs=3", "engine=grabcut", ...]`` applied.

    Values are converted to each field's type (tuples as ``16,32,64``; ``none`` clears an
    optional path). Raises FlipsegError for an unknown key or a bad value.
    """
    from flipseg.runs import parse_overrides

    d = cfg.to_dict()
    top = {f.name for f in fields(CamMTConfig)} - set(_SECTIONS)
    for item in items:
        if "=" not in item:
            raise FlipsegError(f"--set {item!r} must look like KEY=VALUE")
        key, value = (part.strip() for part in item.split("=", 1))
        key = key.replace("-", "_")
        section, _, name = key.rpartition(".")
        if section:
            if section not in _SECTIONS:
                raise FlipsegError(
                    f"--set {item!r}: unknown section {section!r}; known: {', '.join(_SECTIONS)}"
                )
            d[section].update(parse_overrides([f"{name}={value}"], _SECTIONS[section], f"cam-mt {section}"))
        elif key in top:
            if key in ("engine_model", "sam_checkpoint"):
                d[key] = None if value.lower() in ("", "none") else value
            else:
                d.update(parse_overrides([f"{key}={value}"], CamMTConfig, "cam-mt"))
        else:
            raise FlipsegError(
                f"unknown cam-mt option {key!r}; top-level: {', '.join(sorted(top))}; or "
                f"SECTION.FIELD with SECTION in {', '.join(_SECTIONS)}"
            )
    return CamMTConfig.from_dict(d)


def paper_config() -> CamMTConfig:
    """The paper's sizes: ResNet50 two-branch classifier at 224 px, a full-size U-Net,
    60 epochs, batch 32 (days of CPU time)."""
    return CamMTConfig(
        classifier=CamClassifierConfig(backbone="resnet50", input_size=224, epochs=60, batch_size=32,
                                       pooling="avg"),
        mean_teacher=MeanTeacherConfig(image_size=224, channels=(32, 64, 128, 256, 512), epochs=60,
                                       batch_size=32, labeled_batch_size=16, rampup_epochs=24.0),
    )
