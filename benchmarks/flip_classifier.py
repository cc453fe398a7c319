"""Flip Learning's nodule-vs-normal classifier: the shipped network against others.

    python benchmarks/flip_classifier.py
    python benchmarks/flip_classifier.py --variants compact,encoder-backbone

Flip's agents are rewarded by this classifier, so it is trained first, on pseudo samples of
the training boxes (a view of the box, partly filled, labelled nodule or normal). This
trains one classifier per variant exactly as ``flipseg train flip --dataset bus-bra --fold 5``
does (the same 64 boxes held out by patient, the same seed and schedule) and scores it on
pseudo samples of the held-out boxes and of BUS-BRA fold 5's 383 boxes (fixed seed, no
augmentation): accuracy, AUC and the box-view checks of the report. Variants:

- ``compact``: the shipped classifier's network (random init);
- ``encoder``: flipseg's compact ResNet-style encoder, random init;
- ``encoder-backbone``: the same, started from the shipped pretrained backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from flipseg.data import load_dataset
from flipseg.data.splits import split_by_patient
from flipseg.methods.flip.classifier import ClassifierConfig, evaluate_classifier, train_classifier
from flipseg.methods.flip.pseudo import PseudoSampleDataset

VARIANTS = {
    "compact": {"network": "compact"},
    "encoder": {"network": "encoder"},
    "encoder-backbone": {"network": "encoder", "backbone_weights": "shipped"},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--fold", type=int, default=5)
    ap.add_argument("--val-cases", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_flip_classifier")
    a = ap.parse_args(argv)
    train_all = [s for s in load_dataset("bus-bra", None, part="train", fold=a.fold) if s.get("box")]
    test = [s for s in load_dataset("bus-bra", None, part="test", fold=a.fold) if s.get("box")]
    n_val = min(a.val_cases, max(1, len(train_all) // 10))
    frac = n_val / len(train_all)
    train, val = split_by_patient(train_all, (1 - frac, frac), seed=0)  # as `train flip` (seed 0)
    print(f"{len(train)} training boxes, {len(val)} held out, {len(test)} of fold {a.fold}\n")
    print("| variant | val acc | val AUC | fold-5 acc | fold-5 AUC | lesion views called nodule | "
          "best source called normal | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for name in a.variants.split(","):
        opts = dict(VARIANTS[name])
        if a.epochs is not None:
            opts["epochs"] = a.epochs
        cfg = ClassifierConfig(**opts)
        t0 = time.time()
        model, report = train_classifier(train, val, cfg, Path(a.out) / name, progress=False)
        t = evaluate_classifier(model, PseudoSampleDataset(test, model.config, cfg.seed + 1,
                                                            augment=False, progress=False))
        v = report["validation"]
        views = report.get("box_views") or {}
        rows[name] = {"val": v, "test": t, "box_views": views, "minutes": (time.time() - t0) / 60}
        print(f"| {name} | {v['accuracy']:.3f} | {v['auc']:.3f} | {t['accuracy']:.3f} | "
              f"{t['auc']:.3f} | {views.get('lesion_views_called_nodule', float('nan')):.3f} | "
              f"{views.get('best_source_views_called_normal', float('nan')):.3f} | "
              f"{report['seconds_per_epoch']:.0f} |", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "report.json").write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
