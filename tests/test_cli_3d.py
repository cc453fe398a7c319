"""End-to-end CLI runs on tiny 3D phantom volumes: NIfTI in, NIfTI mask out."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from flipseg.bundles import save_bundle
from flipseg.cli import main
from flipseg.data import load_dataset, read_volume
from flipseg.methods.flip.agent import DQNAgent
from flipseg.methods.flip.config import FlipConfig
from flipseg.networks.classifier import build_classifier

SHAPE = "20,40,40"
AFFINE = np.array([[-0.5, 0, 0, 10.0], [0, 0.5, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])


@pytest.fixture()
def volume(tmp_path):
    """A phantom written as NIfTI with an oblique-free, flipped-x affine, and its box."""
    s = load_dataset("phantom3d", n=1, seed=7, shape=(20, 40, 40))[0]
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(s["image"].transpose(2, 1, 0), AFFINE), path)
    mask = tmp_path / "vol_gt.nii.gz"
    nib.save(nib.Nifti1Image(s["mask"].transpose(2, 1, 0).astype(np.uint8), AFFINE), mask)
    return path, mask, s


def _check_geometry(written, source, box):
    a, b = nib.load(source), nib.load(written)
    np.testing.assert_allclose(b.affine, a.affine)
    assert b.header.get_zooms()[:3] == a.header.get_zooms()[:3]
    assert b.shape == a.shape
    mask, spacing, _ = read_volume(written)
    assert spacing == (2.0, 0.5, 0.5)
    assert mask.any() and not mask[~box.to_mask(mask.shape)].any()


def test_segment_nifti_round_trip(volume, tmp_path):
    path, gt, s = volume
    out = tmp_path / "seg"
    rc = main(["segment", "--method", "ellipse", "--image", str(path), "--mask", str(gt),
               "--box", str(s["box"]), "--out", str(out)])
    assert rc == 0
    _check_geometry(out / "vol_mask.nii.gz", path, s["box"])
    for plane in ("axial", "coronal", "sagittal"):
        assert (out / f"vol_overlay_{plane}.png").exists()


def test_segment_2d_box_on_a_volume_is_one_line(volume, tmp_path, capsys):
    path, _, _ = volume
    rc = main(["segment", "--method", "ellipse", "--image", str(path), "--box", "1,1,5,5",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flipseg: error:")


def test_train_segment_evaluate_flip3d_tiny(volume, tmp_path):
    run = tmp_path / "run"
    tiny = ["--set", "epochs=1", "--set", "levels=16", "--set", "num_envs=4", "--set", "warmup=8",
            "--set", "replay_size=64", "--set", "batch_size=8", "--set", "state_size=8",
            "--set", "classifier_size=16", "--set", "standard_short_side=12",
            "--set", "max_long_side=32"]
    rc = main(["train", "flip", "--dims", "3", "--dataset", "phantom3d", "--data-opt", "n=3",
               "--data-opt", f"shape={SHAPE}", "--out", str(run), "--classifier-epochs", "1",
               "--no-progress", *tiny])
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())
    # the 3D preset reaches the run (agents, fixed supervoxel counts, CSR), --set on top of it
    assert cfg["dims"] == 3 and cfg["agents"] == 4 and cfg["use_csr"] and not cfg["scale_levels_to_box"]
    assert cfg["classifier_size"] == 16
    assert json.loads((run / "classifier" / "classifier_config.json").read_text())["dims"] == 3
    path, gt, s = volume
    seg = tmp_path / "seg"
    rc = main(["segment", "--model", str(run), "--image", str(path), "--mask", str(gt),
               "--box", str(s["box"]), "--out", str(seg)])
    assert rc == 0
    _check_geometry(seg / "vol_mask.nii.gz", path, s["box"])
    assert (seg / "vol_flipped.nii.gz").exists() and (seg / "vol_curve.png").exists()
    curve = (seg / "vol_curve.csv").read_text().splitlines()
    assert curve[0] == "step,erased_area,normal_score,dice" and len(curve) > 2
    out = tmp_path / "ev"
    rc = main(["evaluate", "--dataset", "phantom3d", "--data-opt", "n=1", "--data-opt",
               f"shape={SHAPE}", "--data-opt", "seed=3", "--method", "flip", "--method", "ellipse",
               "--model", str(run), "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "flip" / "summary.json").read_text())
    assert summary["n"] >= 1 and 0 <= summary["metrics"]["dice"]["mean"] <= 1
    assert np.isfinite(summary["metrics"]["hd"]["mean"])
    # a 2D dataset with --dims 3 is a one-line error
    assert main(["train", "flip", "--dims", "3", "--dataset", "phantom2d", "--data-opt", "n=4",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2


def _tiny_2d_model(path):
    cfg = FlipConfig(state_size=8, classifier_size=16, standard_short_side=16, levels=(8,))
    torch.manual_seed(0)
    net = build_classifier("compact", spatial_dims=2)
    bundle = {"format": "flipseg-flip-1", "config": cfg.to_dict(),
              "q_network": DQNAgent(cfg).q_network.state_dict(),
              "classifier": {"config": {"network": "compact", "input_size": 16},
                             "state_dict": net.state_dict()}}
    save_bundle(path, bundle)
    return path


def test_flip2d_slices_stacks_axial_slices(tmp_path):
    from flipseg.methods import load_methods

    load_methods()
    from flipseg.methods import get_segmenter

    model = _tiny_2d_model(tmp_path / "flip2d.safetensors")
    seg = get_segmenter("flip2d-slices", model=str(model))
    s = load_dataset("phantom3d", n=1, seed=7, shape=(20, 40, 40))[0]
    mask = seg.segment(s["image"], s["box"])
    assert mask.shape == s["image"].shape and mask.dtype == bool
    assert not mask[~s["box"].to_mask(mask.shape)].any()
    rc = main(["evaluate", "--dataset", "phantom3d", "--data-opt", "n=1", "--data-opt",
               f"shape={SHAPE}", "--method", "flip2d-slices", "--model", str(model),
               "--out", str(tmp_path / "ev"), "--no-progress"])
    assert rc == 0


def test_evaluate_flip_on_volumes_without_model_uses_the_shipped_3d_model(tmp_path):
    out = tmp_path / "ev"
    data = ["--dataset", "phantom3d", "--data-opt", "n=1", "--data-opt", f"shape={SHAPE}", "--no-progress"]
    assert main(["evaluate", *data, "--method", "flip", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] >= 1 and summary["metrics"]["dice"]["mean"] > 0.3
