"""Hybrid supervision (paper 004, Tables 1-2) on BUS-BRA with BUSI as the external test set.

    python benchmarks/hybrid.py --out runs/bench_hybrid                                   # full run
    python benchmarks/hybrid.py --limit 40 --epochs 1 --runs ours_10,strong_only_10 \\
        --out /tmp/hybrid_smoke                                                            # smoke

Training: the BUS-BRA official fold-5 split, its training part (the validation
part is not used: as in the paper every model is its last epoch). The strong
subset (images that keep their mask) is drawn by patient with the config's seed;
the rest keep only their box. Test: the BUS-BRA fold-5 test images (intra-domain)
and every BUSI benign/malignant image (external; masks OR-ed per image). Every
model segments the whole image, without a box.

Runs (``--runs`` picks some; all by default):

====================  ================================================================
``strong_only_100``   Strong-Only, every training mask (S 100%, W 0%)
``strong_only_10``    Strong-Only, the 10% strong subset only (S 10%, W 0%)
``weak_only``         Weak-Only: one decoder, every training box as a filled rectangle
``vanilla_hybrid_10`` Vanilla-Hybrid: one decoder, 10% masks + 90% box rectangles alike
``ours_10``           ours (dual decoder, FD, SPM, PL), 10% strong
``ours_10_no_fd``     ours without feature disentanglement
``ours_10_no_spm``    ours without the spatial prompting module
``ours_10_no_pl``     ours without the perception loss
``ours_7.5/20/50``    ours with 7.5%, 20%, 50% strong
====================  ================================================================

Printed and saved under ``--out`` (``report.md``, ``results.json``): Dice and
S-measure (of the binary mask, at each image's own resolution) as mean ± sd, in
percent like the paper. Finished parts are kept (each run's checkpoint and
``metrics.json``): re-running resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flipseg.data import load_dataset
from flipseg.io_utils import atomic_write_text
from flipseg.methods.hybrid import HybridConfig, HybridModel, evaluate_model, train_hybrid
from flipseg.methods.hybrid.train import lesion_samples
from flipseg.metrics import summarize
from flipseg.runs import parse_overrides

#: run name -> (table label, HybridConfig overrides)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "strong_only_100": ("Strong-Only", {"mode": "strong-only", "strong_fraction": 1.0}),
    "strong_only_10": ("Strong-Only", {"mode": "strong-only", "strong_fraction": 0.1}),
    "weak_only": ("Weak-Only", {"mode": "weak-only"}),
    "vanilla_hybrid_10": ("Vanilla-Hybrid", {"mode": "vanilla-hybrid", "strong_fraction": 0.1}),
    "ours_10": ("Ours", {"strong_fraction": 0.1}),
    "ours_10_no_fd": ("Ours (w/o FD)", {"strong_fraction": 0.1, "disentangle": False}),
    "ours_10_no_spm": ("Ours (w/o SPM)", {"strong_fraction": 0.1, "spatial_prompt": False}),
    "ours_10_no_pl": ("Ours (w/o PL)", {"strong_fraction": 0.1, "perception_loss": False}),
    "ours_7.5": ("Ours", {"strong_fraction": 0.075}),
    "ours_20": ("Ours", {"strong_fraction": 0.2}),
    "ours_50": ("Ours", {"strong_fraction": 0.5}),
}
TABLE1 = ("strong_only_100", "strong_only_10", "weak_only", "vanilla_hybrid_10", "ours_10")
TABLE2 = ("ours_7.5", "ours_10", "ours_20", "ours_50", "ours_10_no_fd", "ours_10_no_spm", "ours_10_no_pl")
TESTS = ("bus-bra", "busi")


def load_data(args: argparse.Namespace) -> tuple[list[dict], dict[str, list[dict]]]:
    """(training samples, {test set name: samples}), each limited to a seeded subset by ``--limit``."""
    train = lesion_samples(load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="train"))
    tests = {
        "bus-bra": load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="test"),
        "busi": load_dataset("busi", args.busi_root),  # benign + malignant, normal left out
    }
    tests = {k: [s for s in v if s.get("mask") is not None and s.get("box") is not None]
             for k, v in tests.items()}

    def limit(samples: list[dict], salt: int) -> list[dict]:
        if not args.limit or args.limit >= len(samples):
            return samples
        keep = np.sort(np.random.default_rng([args.seed, salt]).permutation(len(samples))[: args.limit])
        return [samples[i] for i in keep]

    return limit(train, 1), {k: limit(v, 2 + i) for i, (k, v) in enumerate(tests.items())}


def strong_share(cfg: HybridConfig) -> tuple[str, str]:
    """The S and W columns of the paper's tables."""
    if cfg.mode == "weak-only":
        return "0%", "100%"
    s = f"{100 * cfg.strong_fraction:g}%"
    return (s, "0%") if cfg.mode == "strong-only" else (s, f"{100 * (1 - cfg.strong_fraction):g}%")


def run_one(name: str, base: HybridConfig, train: list[dict], tests: dict[str, list[dict]],
            args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) one run and score it on every test set; cached in ``metrics.json``."""
    run = Path(args.out) / name
    cached = run / "metrics.json"
    if cached.exists():
        return json.loads(cached.read_text())
    cfg = replace(base, **RUNS[name][1])
    t0 = time.time()
    model = HybridModel.load(train_hybrid(train, [], cfg, run, progress=not args.no_progress))
    seconds = time.time() - t0
    res: dict[str, Any] = {"label": RUNS[name][0], "config": cfg.to_dict(),
                           "n_strong": model.meta["n_strong"], "n_train": len(train),
                           "train_seconds": round(seconds, 1), "tests": {}}
    for ds, samples in tests.items():
        ev = evaluate_model(model, samples)
        res["tests"][ds] = {k: summarize([c[k] for c in ev["cases"]]) for k in ("dice", "s_measure")}
        res["tests"][ds]["cases"] = ev["cases"]
    atomic_write_text(cached, json.dumps(res, indent=1, default=float))
    return res


def fmt(s: dict[str, float]) -> str:
    if not np.isfinite(s["mean"]):
        return "n/a"
    sd = f" ± {100 * s['std']:.2f}" if np.isfinite(s["std"]) else ""
    return f"{100 * s['mean']:.2f}{sd}"


def table(title: str, names: list[str], results: dict[str, dict[str, Any]], tests: dict) -> list[str]:
    names = [n for n in names if n in results]
    if not names:
        return []
    head = " | ".join(f"{ds} Dice | {ds} S_m" for ds in tests)
    lines = [f"## {title}", "", f"| method | run | S | W | strong images | {head} |",
             "|---" * (5 + 2 * len(tests)) + "|"]
    for n in names:
        r = results[n]
        s, w = strong_share(HybridConfig.from_dict(r["config"]))
        cells = " | ".join(f"{fmt(r['tests'][ds]['dice'])} | {fmt(r['tests'][ds]['s_measure'])}"
                           for ds in tests)
        lines.append(f"| {r['label']} | {n} | {s} | {w} | {r['n_strong']} | {cells} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from: {', '.join(RUNS)}")
    ap.add_argument("--busbra-root", default=None)
    ap.add_argument("--busi-root", default=None)
    ap.add_argument("--fold", type=int, default=5, help="BUS-BRA test fold")
    ap.add_argument("--limit", type=int, default=None,
                    help="seeded random subset of N training images and of N images per test set")
    ap.add_argument("--epochs", type=int, default=None, help="HybridConfig.epochs (default 30)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="HybridConfig field")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="runs/bench_hybrid")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run {unknown[0]!r}; choose from: {', '.join(RUNS)}")
    overrides = parse_overrides(args.set, HybridConfig, "hybrid")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    base = HybridConfig(**{"seed": args.seed, "num_threads": args.threads, **overrides})
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_key = {"fold": args.fold, "limit": args.limit, "seed": args.seed}
    saved = out / "bench_config.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        if old.get("data") != data_key:
            raise SystemExit(f"{out} holds a benchmark on other data ({old.get('data')} vs {data_key}); "
                             "use a new --out")
    atomic_write_text(saved, json.dumps({"data": data_key, "base": base.to_dict(), "runs": names}, indent=2))
    t0 = time.time()
    train, tests = load_data(args)
    print(f"{len(train)} training images; test: " + ", ".join(f"{k} {len(v)}" for k, v in tests.items())
          + f" ({time.time() - t0:.0f} s to load)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        results[name] = run_one(name, base, train, tests, args)
        r = results[name]
        print(f"{name}: " + ", ".join(f"{ds} Dice {fmt(r['tests'][ds]['dice'])} S_m "
                                      f"{fmt(r['tests'][ds]['s_measure'])}" for ds in tests)
              + f" ({time.time() - t0:.0f} s)", flush=True)
    text = ["# Hybrid supervision benchmark (paper 004)", "",
            f"encoder {base.encoder}, input {base.input_size} px, {base.epochs} epochs, batch "
            f"{base.batch_size}, lr {base.lr} (poly {base.poly_power}), seed {base.seed}; train: BUS-BRA "
            f"fold {args.fold} training part ({len(train)} images); test: "
            + ", ".join(f"{k} ({len(v)} images)" for k, v in tests.items())
            + "; Dice and S-measure in %, mean ± sd over images", ""]
    text += table("Comparison (Table 1)", [n for n in TABLE1 if n in names], results, tests)
    text += table("Strong fractions and ablations (Table 2)", [n for n in TABLE2 if n in names],
                  results, tests)
    report = "\n".join(text)
    print(report)
    atomic_write_text(out / "report.md", report)
    slim = {n: {k: v for k, v in r.items() if k != "tests"} | {
        "tests": {ds: {m: s for m, s in t.items() if m != "cases"} for ds, t in r["tests"].items()}}
        for n, r in results.items()}
    atomic_write_text(out / "results.json", json.dumps(slim, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
