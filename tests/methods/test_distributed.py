"""``torchrun --nproc_per_node 2 -m flipseg.cli train boxinst``: two CPU processes (gloo) train
one model that loads and segments, matches the one-process run (the same global batches:
each process takes half of every batch), resumes, and only rank 0 writes the run folder."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import flipseg
from flipseg.bundles import read_bundle
from flipseg.data import phantom_dataset_2d

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available()
                                     and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

TINY = ["train", "boxinst", "--dataset", "phantom2d", "--data-opt", "n=17", "--data-opt",
        "shape=40,48", "--set", "batch_size=8", "--set", "crop_size=32", "--set", "channels=8,16",
        "--set", "supervision=mask", "--no-progress"]


def _train(out, epochs: int, processes: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flipseg.cli"]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "flipseg.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([*cmd, *TINY, "--set", f"epochs={epochs}", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def _log(run):
    return list(csv.DictReader(open(run / "train_log.csv")))


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    done = _train(two, 1, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("model written to") == 1  # rank 0 alone prints
    assert _train(one, 1, 1).returncode == 0
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    (a,), (b,) = _log(two), _log(one)
    assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
    assert float(a["val_dice"]) == pytest.approx(float(b["val_dice"]), abs=1e-3)
    wa = read_bundle(two, "boxinst_model.safetensors", "flipseg-boxinst-1", "boxinst model")["state_dict"]
    wb = read_bundle(one, "boxinst_model.safetensors", "flipseg-boxinst-1", "boxinst model")["state_dict"]
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wb) < 5e-3  # Adam, float sums
    # the model loads and segments
    case = phantom_dataset_2d(1, seed=9, shape=(40, 48))[0]
    mask = flipseg.load_model(two).segment(case["image"], case["box"])[0]
    assert mask.shape == case["mask"].shape and mask.any()
    # a second run with more epochs resumes after the first
    done = _train(two, 2, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _log(two)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0] == a
    assert np.isfinite(float(rows[1]["loss"]))


def test_flip_refuses_torchrun_in_one_line(tmp_path, monkeypatch, capsys):
    from flipseg.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "flip", "--dataset", "phantom2d", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs in one process, not under torchrun" in err[0]
