"""Today's rows against the same rows trained from flipseg's pretrained backbone.

    python benchmarks/backbone.py hybrid runs/bench_hybrid_scratch runs/bench_hybrid_backbone
    python benchmarks/backbone.py lanet runs/bench_lanet_busi runs/bench_lanet_busi_backbone
    python benchmarks/backbone.py cam-mt runs/bench_cam_mt_before runs/bench_cam_mt_mtbb
    python benchmarks/backbone.py flip runs/bench_flipbb/before_busi_tight runs/bench_flipbb/after_busi_tight

Reads two output folders of the same benchmark (``benchmarks/hybrid.py``,
``benchmarks/lanet.py`` or ``benchmarks/cam_mt.py``) run with and without the backbone and
prints, per run found in both: the metric before and after and, where per-case values are
kept or can be recomputed (hybrid: Dice per test image; cam-mt: each row's U-Net is run
again on the test tumor images for their tumor IoU; flip: ``flipseg evaluate`` folders of
BUS-BRA fold 5 or BUSI lesions, Dice and HD per case and label), a paired t-test. Runs in
only one folder are listed with the folder they are in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flipseg.metrics import paired_ttest


def _load(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the benchmark into {folder} first")
    return json.loads(path.read_text())


def hybrid(before: Path, after: Path) -> None:
    print("| run | test | Dice before | Dice after | diff | paired t | p |")
    print("|---|---|---|---|---|---|---|")
    for run in sorted(set(_load(before)) | set(_load(after))):
        fa, fb = before / run / "metrics.json", after / run / "metrics.json"
        if not (fa.is_file() and fb.is_file()):
            print(f"| {run} | | {'yes' if fa.is_file() else '-'} | {'yes' if fb.is_file() else '-'} | | | |")
            continue
        a, b = json.loads(fa.read_text())["tests"], json.loads(fb.read_text())["tests"]
        for test in a:
            ca = {c["case_id"]: c["dice"] for c in a[test]["cases"]}
            cb = {c["case_id"]: c["dice"] for c in b[test]["cases"]}
            ids = sorted(set(ca) & set(cb))
            t = paired_ttest([cb[i] for i in ids], [ca[i] for i in ids])
            ma, mb = 100 * np.mean([ca[i] for i in ids]), 100 * np.mean([cb[i] for i in ids])
            print(f"| {run} | {test} | {ma:.2f} | {mb:.2f} | {mb - ma:+.2f} | {t['t']:.2f} "
                  f"| {t['p']:.2g} |")


def lanet(before: Path, after: Path) -> None:
    ra, rb = _load(before), _load(after)
    print("| dataset | model | metric | before | after | diff |")
    print("|---|---|---|---|---|---|")
    for ds in sorted(set(ra) & set(rb)):
        for model in sorted(set(ra[ds]) & set(rb[ds])):
            ma, mb = ra[ds][model], rb[ds][model]
            if not isinstance(ma, dict):
                continue
            for key in ("accuracy", "f1", "auc", "dice"):
                va, vb = ma.get(key), mb.get(key)
                if isinstance(va, dict):
                    va, vb = va.get("mean"), (vb or {}).get("mean")
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                    print(f"| {ds} | {model} | {key} | {va:.3f} | {vb:.3f} | {vb - va:+.3f} |")


def cam_mt(before: Path, after: Path) -> None:
    """Per-image tumor IoU of every Table II row in both folders, on the test split both used."""
    from flipseg.data import load_dataset
    from flipseg.data.splits import split_by_patient
    from flipseg.methods.cam_mt import CamMTConfig
    from flipseg.methods.cam_mt.cams import is_tumor
    from flipseg.methods.cam_mt.mean_teacher import CamMTModel
    from flipseg.metrics import compute_iou

    cfgs = [CamMTConfig.from_dict(json.loads((f / "config.json").read_text())) for f in (before, after)]
    if (cfgs[0].split_seed, cfgs[0].test_fraction) != (cfgs[1].split_seed, cfgs[1].test_fraction):
        raise SystemExit("the two runs used different splits")
    samples = load_dataset("busi", None, include_normal=True)
    _, test = split_by_patient(samples, (1 - cfgs[0].test_fraction, cfgs[0].test_fraction),
                               seed=cfgs[0].split_seed)
    tests = [s for s in test if is_tumor(s)]
    print(f"{len(tests)} test tumor images\n")
    print("| Table II row | tumor IoU before | after | diff | paired t | p |")
    print("|---|---|---|---|---|---|")
    rows = sorted({p.name for f in (before, after) for p in (f / "rows").glob("*")})
    for row in rows:
        paths = [f / "rows" / row for f in (before, after)]
        if not all((p / "cam_mt_model.safetensors").is_file() for p in paths):
            there = ["yes" if p.is_dir() else "-" for p in paths]
            print(f"| {row} | {there[0]} | {there[1]} | | | |")
            continue
        ious = [[compute_iou(m, s["mask"]) for m, s in zip(CamMTModel.load(p).predict(
            [s["image"] for s in tests]), tests)] for p in paths]
        t = paired_ttest(ious[1], ious[0])
        ma, mb = 100 * np.mean(ious[0]), 100 * np.mean(ious[1])
        print(f"| {row} | {ma:.1f} | {mb:.1f} | {mb - ma:+.1f} | {t['t']:.2f} | {t['p']:.2g} |", flush=True)


def _cases(folder: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> case id -> (Dice, HD), the shifted copies of a box averaged."""
    import csv

    out: dict[str, dict[str, tuple[float, float]]] = {}
    for d in sorted(p for p in folder.iterdir() if (p / "cases.csv").is_file()):
        per: dict[str, list[tuple[float, float]]] = {}
        with open(d / "cases.csv") as f:
            for r in csv.DictReader(f):
                per.setdefault(r["case_id"], []).append((float(r["dice"]), float(r["hd"])))
        out[d.name] = {k: tuple(np.mean(v, 0)) for k, v in per.items()}
    return out


def flip(before: Path, after: Path) -> None:
    """Each method evaluated in both folders, by benign/malignant label: Dice and HD."""
    from flipseg.data import load_dataset

    a, b = _cases(before), _cases(after)
    some = next(iter(next(iter(a.values()))))
    labels: dict[str, str] = {}
    for name, kw in (("bus-bra", {}), ("busi", {"per_lesion": True})):
        if name == "bus-bra" and not some.startswith("bus_"):
            continue
        if name == "busi" and some.startswith("bus_"):
            continue
        labels = {c["case_id"]: c.get("label") for c in load_dataset(name, None, lazy=True, **kw)}
    print("| method | label | n | Dice before | after | p | HD before | after | p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in sorted(set(a) & set(b)):
        for label in ("benign", "malignant", "all"):
            ids = sorted(i for i in set(a[method]) & set(b[method])
                         if label == "all" or labels.get(i) == label)
            if len(ids) < 2:
                continue
            x, y = np.array([a[method][i] for i in ids]), np.array([b[method][i] for i in ids])
            td = paired_ttest(list(y[:, 0]), list(x[:, 0]))
            th = paired_ttest(list(y[:, 1]), list(x[:, 1]))
            print(f"| {method} | {label} | {len(ids)} | {100 * x[:, 0].mean():.2f} | "
                  f"{100 * y[:, 0].mean():.2f} | {td['p']:.2g} | {x[:, 1].mean():.1f} | "
                  f"{y[:, 1].mean():.1f} | {th['p']:.2g} |", flush=True)
    for name, d in (("before", a), ("after", b)):
        only = sorted(set(d) - (set(a) & set(b)))
        if only:
            print(f"\nonly {name}: {', '.join(only)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmark", choices=("hybrid", "lanet", "cam-mt", "flip"))
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args()
    {"hybrid": hybrid, "lanet": lanet, "cam-mt": cam_mt, "flip": flip}[a.benchmark](a.before, a.after)


if __name__ == "__main__":
    main()
