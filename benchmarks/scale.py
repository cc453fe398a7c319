"""Scale-out: ``flipseg label`` with 2 worker processes and on a local 2-worker Ray cluster,
against 1 worker; ``torchrun`` training with 2 processes against 1 (docs/scale.md).

    python benchmarks/scale.py                                   # BUS-BRA if found, else phantoms
    python benchmarks/scale.py --boxes 96 --method flip-vote --epochs 3 --out runs/bench_scale

Every run is a fresh ``flipseg`` command (``python -m flipseg.cli``), timed wall-clock from
start to exit: model loading, worker start-up and Ray's start are included, as a user sees
them. The labelling rows check that the masks equal the 1-worker run's; the training rows
give each run's final validation Dice (``train_log.csv``). Run it on a quiet machine: on a
shared one the ratios mean little.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BUSBRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "BUS-BRA"


def _run(argv: list[str], *, torchrun: int = 0) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "flipseg.cli", *argv]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={torchrun}", "-m", "flipseg.cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, done


def _masks(folder: Path) -> dict[str, np.ndarray]:
    from flipseg.data.io import read_image

    return {p.name: read_image(p) > 0 for p in sorted((folder / "png").glob("*.png"))}


def _data(a: argparse.Namespace) -> list[str]:
    if a.data_root or BUSBRA.is_dir():
        root = a.data_root or str(BUSBRA)
        return ["--dataset", "bus-bra", "--data-root", root, "--fold", "5", "--limit", str(a.boxes)]
    return ["--dataset", "phantom2d", "--data-opt", f"n={a.boxes}", "--data-opt", "shape=128,160"]


def bench_label(a: argparse.Namespace, out: Path) -> list[str]:
    data = _data(a)
    base = ["label", *data, "--method", a.method, "--no-progress", "--format", "png"]
    runs = {"1 worker": [], "2 workers": ["--workers", "2"]}
    if importlib.util.find_spec("ray") is not None:
        runs["Ray, 2 workers (local cluster)"] = ["--engine", "ray", "--workers", "2"]
    rows, first, t1, n = [], None, None, 0
    for name, extra in runs.items():
        folder = out / "label" / name.split(",")[0].replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        seconds, _ = _run([*base, *extra, "--out", str(folder)])
        masks = _masks(folder)
        n = len(masks)
        if first is None:
            first, t1 = masks, seconds
            same = "(reference)"
        else:
            same = "yes" if masks.keys() == first.keys() and all(
                np.array_equal(m, first[k]) for k, m in masks.items()) else "**NO**"
        rows.append(f"| label: {name} | {n} | {seconds:.1f} | {n / seconds:.2f} | "
                    f"{t1 / seconds:.2f} | {same} |")
    head = [f"`flipseg label --method {a.method}` on {n} boxes ({' '.join(data[:2])})", "",
            "| run | boxes | seconds | boxes/s | throughput vs 1 worker | same masks |",
            "|---|---|---|---|---|---|"]
    return head + rows


def bench_train(a: argparse.Namespace, out: Path) -> list[str]:
    data = ["--dataset", "phantom2d", "--data-opt", f"n={a.train_boxes}", "--data-opt", "shape=96,112"]
    if a.data_root or BUSBRA.is_dir():
        data = ["--dataset", "bus-bra", "--data-root", a.data_root or str(BUSBRA), "--fold", "5",
                "--limit", str(a.train_boxes)]
    argv = ["train", "boxinst", *data, "--set", f"epochs={a.epochs}", "--no-progress"]
    rows, t1 = [], None
    for procs in (1, 2):
        run = out / "train" / f"procs{procs}"
        shutil.rmtree(run, ignore_errors=True)
        seconds, _ = _run([*argv, "--out", str(run)], torchrun=procs if procs > 1 else 0)
        log = list(csv.DictReader(open(run / "train_log.csv")))
        dice = float(log[-1].get("val_dice") or "nan")
        t1 = t1 or seconds
        rows.append(f"| boxinst, {procs} process{'es' if procs > 1 else ''} | {a.epochs} | "
                    f"{seconds:.1f} | {seconds / t1:.2f} | {dice:.3f} |")
    head = [f"`flipseg train boxinst` ({' '.join(data[:2])}, {a.train_boxes} boxes)", "",
            "| run | epochs | seconds | time vs 1 process | final val Dice |", "|---|---|---|---|---|"]
    return head + rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=64, help="boxes to label")
    ap.add_argument("--method", default="flip-vote")
    ap.add_argument("--train-boxes", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data-root", default=None, help="BUS-BRA folder (default: shared/data/BUS-BRA)")
    ap.add_argument("--out", default="runs/bench_scale")
    ap.add_argument("--skip", choices=("label", "train"), default=None)
    a = ap.parse_args()
    out = Path(a.out)
    print(f"cores: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}"
          " (timings are only meaningful on a quiet machine)\n")
    if a.skip != "label":
        print("\n".join(bench_label(a, out)) + "\n")
    if a.skip != "train":
        print("\n".join(bench_train(a, out)))


if __name__ == "__main__":
    main()
