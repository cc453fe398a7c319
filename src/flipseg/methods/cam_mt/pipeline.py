"""End-to-end run of paper 002 and its ablation rows (Table II).

:func:`run_cam_mt` takes training images with image-level labels (tumor or
normal) and goes through the paper's four steps:

1. train the CAM classifier on all training images (``classifier/``);
2. compute the tumor CAM of every training tumor image (the set V) and keep
   the images whose two ROIs agree (the subset L; the rest is U),
   ``selection.csv``;
3. prompt the box -> mask engine with each kept image's broader ROI,
   ``pseudo_masks.npz`` (saved after every engine call; each mask is reused
   while its ROI and the engine stay the same);
4. train the Mean Teacher U-Net on L (pseudo masks) and U (``mean_teacher/``)
   and, when test images are given, score its tumor images
   (``metrics.json``).

Ground-truth masks of training images are never used for training; when
present they only give a diagnostic, the IoU of the pseudo masks.

:func:`run_table_ii` trains the six rows of the paper's Table II from the same
classifier, selection and engine (``rows/<name>/``, ``table_ii.json``).
Every stage resumes from what a previous run left in the folder.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save, atomic_write_text
from flipseg.methods.cam_mt.cams import (
    RoiSelection,
    compute_cams,
    is_tumor,
    load_cam_classifier_model,
    select_image,
    train_cam_classifier,
)
from flipseg.methods.cam_mt.config import CamMTConfig
from flipseg.methods.cam_mt.engines import make_engine, segment_boxes
from flipseg.methods.cam_mt.mean_teacher import CamMTModel, train_mean_teacher
from flipseg.metrics import compute_background_iou, compute_iou, compute_mean_iou, summarize
from flipseg.segmenters import Segmenter

__all__ = [
    "TABLE_II_ROWS",
    "PseudoLabels",
    "evaluate_segmentations",
    "prepare_pseudo_labels",
    "run_cam_mt",
    "run_table_ii",
]

PSEUDO_FILE = "pseudo_masks.npz"
_META = "__meta__"

#: Table II: row -> (labels: "gt" | "pseudo", images: "whole" | "subset" | "mean_teacher").
TABLE_II_ROWS: dict[str, tuple[str, str]] = {
    "GT-Whole": ("gt", "whole"),
    "GT-Subset": ("gt", "subset"),
    "GT-MeanTeacher": ("gt", "mean_teacher"),
    "Pseudo-Whole": ("pseudo", "whole"),
    "Pseudo-Subset": ("pseudo", "subset"),
    "Pseudo-MeanTeacher": ("pseudo", "mean_teacher"),
}


@dataclass
class PseudoLabels:
    """Steps 1-3 for the training tumor images V."""

    tumor: list[dict[str, Any]]
    """The training tumor images V, in input order."""
    selections: list[RoiSelection]
    """One selection outcome per image of V."""
    masks: dict[str, np.ndarray]
    """Pseudo masks by case id (the selected images, or every image with an ROI)."""

    @property
    def selected(self) -> list[dict[str, Any]]:
        """The subset L."""
        return [s for s, sel in zip(self.tumor, self.selections) if sel.selected]

    @property
    def unselected(self) -> list[dict[str, Any]]:
        """The subset U = V - L."""
        return [s for s, sel in zip(self.tumor, self.selections) if not sel.selected]


def evaluate_segmentations(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-image tumor IoU, background IoU and their mean (mIoU), averaged over images.

    Returns ``{"tumor_iou", "background_iou", "miou", "n"}`` (means; NaN when empty).
    """
    if len(preds) != len(gts):
        raise FlipsegError(f"{len(preds)} predictions for {len(gts)} reference masks")
    out: dict[str, float] = {}
    for key, fn in (("tumor_iou", compute_iou), ("background_iou", compute_background_iou),
                    ("miou", compute_mean_iou)):
        out[key] = summarize([fn(p, g) for p, g in zip(preds, gts)])["mean"]
    out["n"] = len(preds)
    return out


# -------------------------------------------------------------- stages 1-3
def _engine_signature(cfg: CamMTConfig) -> str:
    return json.dumps({"engine": cfg.engine, "model": cfg.engine_model, "sam": cfg.sam_checkpoint,
                       "sam_type": cfg.sam_model_type}, sort_keys=True)


def _read_cache(path: Path, signature: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Cached masks and the ROI each was made from; nothing when the engine differs."""
    if not path.exists():
        return {}, {}
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z[_META])) if _META in z.files else {}
        if meta.get("engine") != signature:
            return {}, {}
        boxes = dict(meta.get("boxes", {}))
        return {k: z[k].astype(bool) for k in z.files if k in boxes}, boxes


def _write_cache(path: Path, signature: str, masks: dict[str, np.ndarray], boxes: dict[str, str]) -> None:
    meta = np.array(json.dumps({"engine": signature, "boxes": boxes}))

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{_META: meta}, **masks)
        Path(tmp).write_bytes(buf.getvalue())

    atomic_save(path, write)


def _write_selection(path: Path, tumor: Sequence[dict], selections: Sequence[RoiSelection]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_id", "label", "threshold1", "threshold2", "roi1", "roi2", "roi_iou", "selected"])
    for s, sel in zip(tumor, selections):
        w.writerow([s["case_id"], s.get("label"), sel.threshold1, sel.threshold2, sel.roi1 or "",
                    sel.roi2 or "", f"{sel.iou:.4f}", int(sel.selected)])
    atomic_write_text(path, buf.getvalue())


def prepare_pseudo_labels(
    train_samples: Sequence[dict[str, Any]],
    cfg: CamMTConfig,
    run_dir: str | Path,
    *,
    engine: Segmenter | None = None,
    which: str = "selected",
    progress: bool = True,
    device: str | None = "cpu",
) -> PseudoLabels:
    """Steps 1-3: classifier, CAMs and selection of V, pseudo masks from the broader ROIs.

    Parameters
    ----------
    train_samples : sample dicts with ``image`` and ``label`` (or a mask) - tumor and normal
    cfg : the recipe's configuration
    run_dir : run folder (``classifier/``, ``selection.csv``, ``pseudo_masks.npz``)
    engine : a box -> mask segmenter; default :func:`make_engine` from ``cfg`` (built only
        when a mask is missing)
    which : pseudo masks for the ``selected`` images (the method) or for ``all`` images
        with an ROI (the Pseudo-Whole row)
    device : where the classifier trains (``cpu``, ``cuda``, ``auto``)
    """
    if which not in ("selected", "all"):
        raise FlipsegError(f"which={which!r} must be 'selected' or 'all'")
    run = Path(run_dir)
    clf_path = train_cam_classifier(train_samples, cfg.classifier, run / "classifier", progress=progress,
                                    device=device)
    model = load_cam_classifier_model(clf_path)
    tumor = [s for s in train_samples if is_tumor(s)]
    cams = compute_cams(model, [s["image"] for s in tumor])
    selections = [select_image(c, cfg.selection) for c in cams]
    _write_selection(run / "selection.csv", tumor, selections)
    if tumor and all(sel.roi1 is None for sel in selections):
        raise FlipsegError(
            f"the CAM classifier's tumor maps are empty on all {len(tumor)} training tumor images "
            f"(it has not learnt yet): train it longer, e.g. --set classifier.epochs=15 (the run resumes)"
        )
    wanted = [(s, sel.roi1) for s, sel in zip(tumor, selections)
              if sel.roi1 is not None and (sel.selected or which == "all")]
    signature = _engine_signature(cfg)
    cached, boxes = _read_cache(run / PSEUDO_FILE, signature)
    masks = {s["case_id"]: cached[s["case_id"]] for s, roi in wanted
             if boxes.get(s["case_id"]) == str(roi) and s["case_id"] in cached}
    todo = [(s, roi) for s, roi in wanted if s["case_id"] not in masks]
    if todo:
        if engine is None:
            engine = make_engine(cfg.engine, model=cfg.engine_model, sam_checkpoint=cfg.sam_checkpoint,
                                 sam_model_type=cfg.sam_model_type)
        keep = {s["case_id"]: str(roi) for s, roi in wanted if s["case_id"] in masks}
        bar = tqdm(total=len(todo), desc=f"pseudo masks ({cfg.engine})", disable=not progress, leave=False)
        for start in range(0, len(todo), cfg.engine_batch_size):
            chunk = todo[start : start + cfg.engine_batch_size]
            new = segment_boxes(engine, [s["image"] for s, _ in chunk], [roi for _, roi in chunk])
            for (s, roi), m in zip(chunk, new):
                masks[s["case_id"]] = m
                keep[s["case_id"]] = str(roi)
            _write_cache(run / PSEUDO_FILE, signature, masks, keep)
            bar.update(len(chunk))
        bar.close()
    return PseudoLabels(tumor=tumor, selections=selections, masks=masks)


def _pseudo_quality(pl: PseudoLabels, samples: Sequence[dict[str, Any]]) -> float | None:
    """Mean IoU of the pseudo masks of ``samples`` against their reference masks, if known."""
    pairs = [(pl.masks[s["case_id"]], s["mask"]) for s in samples
             if s["case_id"] in pl.masks and s.get("mask") is not None]
    return float(np.mean([compute_iou(p, g) for p, g in pairs])) if pairs else None


def _test_tumors(test_samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    tests = [s for s in test_samples if is_tumor(s)]
    if any(s.get("mask") is None for s in tests):
        raise FlipsegError("every test tumor image needs a reference mask")
    return tests


# ------------------------------------------------------------------- runs
def run_cam_mt(
    train_samples: Sequence[dict[str, Any]],
    cfg: CamMTConfig,
    run_dir: str | Path,
    *,
    test_samples: Sequence[dict[str, Any]] = (),
    engine: Segmenter | None = None,
    progress: bool = True,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """The whole method: steps 1-4, then the test scores (when test images are given).

    Returns (and writes to ``summary.json``) the counts of V, L and U, the engine, the
    pseudo-mask IoU on L when reference masks are known, and ``test`` scores
    (:func:`evaluate_segmentations`) of the predicting network on the test tumor images.
    The trained model loads with ``CamMTModel.load(run_dir)``.

    ``device``: ``cpu``, ``cuda`` or ``auto``. Under ``torchrun --nproc_per_node N`` rank 0
    runs steps 1-3 (the others then read its files), the N processes train the Mean
    Teacher U-Net together and rank 0 scores and writes the summary.
    """
    from flipseg.methods.training import placement

    place = placement(device)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if place.main:
        atomic_write_text(run / "config.json", json.dumps(cfg.to_dict(), indent=2))
    pl = place.main_first(lambda: prepare_pseudo_labels(
        train_samples, cfg, run, engine=engine, progress=progress and place.main, device=device))
    labeled = [s for s in pl.selected if s["case_id"] in pl.masks]
    unlabeled = pl.unselected
    train_mean_teacher([s["image"] for s in labeled], [pl.masks[s["case_id"]] for s in labeled],
                       [s["image"] for s in unlabeled], cfg.mean_teacher, run / "mean_teacher",
                       progress=progress, device=device)
    if not place.main:
        return {"n_train": len(train_samples), "n_tumor": len(pl.tumor), "n_selected": len(labeled)}
    summary: dict[str, Any] = {
        "n_train": len(train_samples), "n_tumor": len(pl.tumor), "n_selected": len(labeled),
        "n_unselected": len(unlabeled), "engine": cfg.engine,
        "pseudo_iou_selected": _pseudo_quality(pl, labeled),
    }
    tests = _test_tumors(test_samples)
    if tests:
        preds = CamMTModel.load(run / "mean_teacher").predict([s["image"] for s in tests])
        summary["test"] = evaluate_segmentations(preds, [s["mask"] for s in tests])
        atomic_write_text(run / "metrics.json", json.dumps(summary["test"], indent=2))
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2))
    return summary


def run_table_ii(
    train_samples: Sequence[dict[str, Any]],
    test_samples: Sequence[dict[str, Any]],
    cfg: CamMTConfig,
    run_dir: str | Path,
    *,
    rows: Sequence[str] = tuple(TABLE_II_ROWS),
    engine: Segmenter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The paper's Table II: six U-Nets from the same selection, scored on the test tumors.

    ``GT-*`` rows use the training images' reference masks, ``Pseudo-*`` rows the engine's
    masks; ``*-Whole`` trains on all of V, ``*-Subset`` on L, ``*-MeanTeacher`` on L with U
    unlabelled (the last row is the method). Returns and writes ``table_ii.json``:
    ``{"selection": counts and pseudo-mask IoUs, "rows": {name: scores}}``.
    """
    unknown = [r for r in rows if r not in TABLE_II_ROWS]
    if unknown:
        raise FlipsegError(f"unknown Table II row {unknown[0]!r}; choose from {', '.join(TABLE_II_ROWS)}")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "config.json", json.dumps(cfg.to_dict(), indent=2))
    tests = _test_tumors(test_samples)
    if not tests:
        raise FlipsegError("Table II needs test tumor images with reference masks")
    need_all = any(TABLE_II_ROWS[r] == ("pseudo", "whole") for r in rows)
    pl = prepare_pseudo_labels(train_samples, cfg, run, engine=engine,
                               which="all" if need_all else "selected", progress=progress)
    if any(TABLE_II_ROWS[r][0] == "gt" for r in rows) and any(s.get("mask") is None for s in pl.tumor):
        raise FlipsegError("the GT-* rows need reference masks for every training tumor image")
    result: dict[str, Any] = {"selection": {
        "n_tumor": len(pl.tumor), "n_selected": len(pl.selected), "n_unselected": len(pl.unselected),
        "engine": cfg.engine, "pseudo_iou_selected": _pseudo_quality(pl, pl.selected),
        "pseudo_iou_unselected": _pseudo_quality(pl, pl.unselected),
    }, "rows": {}}
    for name in rows:
        labels, images = TABLE_II_ROWS[name]
        pool = pl.tumor if images == "whole" else pl.selected
        if labels == "pseudo":
            pool = [s for s in pool if s["case_id"] in pl.masks]
        masks = [s["mask"] if labels == "gt" else pl.masks[s["case_id"]] for s in pool]
        unlabeled = pl.unselected if images == "mean_teacher" else []
        mt_cfg = replace(cfg.mean_teacher, supervised=images != "mean_teacher")
        path = train_mean_teacher([s["image"] for s in pool], masks, [s["image"] for s in unlabeled],
                                  mt_cfg, run / "rows" / name, progress=progress)
        preds = CamMTModel.load(path).predict([s["image"] for s in tests])
        scores = evaluate_segmentations(preds, [s["mask"] for s in tests])
        result["rows"][name] = dict(scores, n_labeled=len(pool), n_unlabeled=len(unlabeled))
        atomic_write_text(run / "table_ii.json", json.dumps(result, indent=2))
        if progress:
            tqdm.write(f"{name}: tumor IoU {scores['tumor_iou']:.3f}, mIoU {scores['miou']:.3f}")
    return result

