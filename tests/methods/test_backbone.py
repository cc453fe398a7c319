"""flipseg train backbone: pretraining, the overlap refusal, resume, and loading the
shipped or a trained backbone into a network's encoder."""

import json

import pytest
import torch

from flipseg.bundles import read_bundle
from flipseg.cli import main
from flipseg.errors import FlipsegError
from flipseg.networks.backbone import BACKBONE_FORMAT, load_backbone, shipped_backbone
from flipseg.networks.hybrid import HybridNet


def _train(out, *extra):
    return main(["train", "backbone", "--dataset", "phantom2d", "--data-opt", "n=10",
                 "--set", "epochs=2", "--set", "input_size=64", "--set", "batch_size=4",
                 "--out", str(out), "--no-progress", *extra])


def test_pretrains_resumes_and_loads_into_an_encoder(tmp_path):
    out = tmp_path / "bb"
    assert _train(out) == 0
    bundle = read_bundle(out, "backbone.safetensors", BACKBONE_FORMAT, "backbone")
    assert bundle["encoder"] == "compact" and bundle["data"]["dataset"] == "phantom2d"
    log = (out / "train_log.csv").read_text().splitlines()
    assert len(log) == 3  # header + 2 epochs
    assert json.loads((out / "overlap.json").read_text())["train_cases"] == 10
    before = (out / "backbone.safetensors").read_bytes()
    assert _train(out) == 0  # finished: resuming trains nothing more
    assert (out / "backbone.safetensors").read_bytes() == before
    net = HybridNet("compact")
    assert load_backbone(net.encoder, str(out), "compact") is not None
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, bundle["state_dict"][k])


def test_training_refuses_evaluation_images(tmp_path, capsys):
    ids = tmp_path / "eval_ids.txt"
    ids.write_text("phantom2d-0-3\nsomething-else\n")
    rc = _train(tmp_path / "bb", "--exclude-ids", str(ids))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "phantom2d-0-3" in err[0] and "eval_ids.txt" in err[0]
    assert not (tmp_path / "bb" / "backbone.safetensors").exists()


def test_shipped_backbone_none_and_wrong_layouts():
    net = HybridNet("compact")
    start = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    assert load_backbone(net.encoder, "none", "compact") is None
    assert all(torch.equal(v, start[k]) for k, v in net.encoder.state_dict().items())
    assert load_backbone(net.encoder, "shipped", "compact") == shipped_backbone("compact")
    assert not all(torch.equal(v, start[k]) for k, v in net.encoder.state_dict().items())
    with pytest.raises(FlipsegError, match="no pretrained backbone is shipped"):
        load_backbone(HybridNet("resnet18").encoder, "shipped", "resnet18")
    with pytest.raises(FlipsegError, match="compact"):
        load_backbone(HybridNet("resnet18").encoder, shipped_backbone("compact"), "resnet18")


def test_hybrid_trains_from_the_shipped_backbone(tmp_path):
    rc = main(["train", "hybrid", "--dataset", "phantom2d", "--data-opt", "n=8",
               "--set", "epochs=1", "--set", "input_size=64", "--set", "backbone_weights=shipped",
               "--out", str(tmp_path / "h"), "--no-progress"])
    assert rc == 0
    assert json.loads((tmp_path / "h" / "config.json").read_text())["backbone_weights"] == "shipped"
    rc = main(["train", "hybrid", "--dataset", "phantom2d", "--data-opt", "n=8",
               "--set", "epochs=1", "--set", "backbone_weights=nowhere.safetensors",
               "--out", str(tmp_path / "h2"), "--no-progress"])
    assert rc == 2
