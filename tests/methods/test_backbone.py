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


def test_the_backbone_loads_into_lanets_monai_resnet():
    from flipseg.networks.backbone import load_backbone_into_resnet
    from flipseg.networks.hybrid import ENCODERS, ResNetEncoder
    from flipseg.networks.lanet import LANetBackbone

    ours = ResNetEncoder(ENCODERS.get("compact"))
    load_backbone(ours, "shipped", "compact")
    lanet = LANetBackbone("compact")
    load_backbone_into_resnet(lanet.resnet, "shipped", "compact")
    r = lanet.resnet
    assert torch.equal(r.conv1.weight, ours.stem[0].weight)
    assert torch.equal(r.layer3[0].conv2.weight, ours.stages[2][0].conv2.weight)
    assert torch.equal(r.layer2[0].downsample[0].weight, ours.stages[1][0].shortcut[0].weight)
    assert not r.layer2[0].downsample[0].bias.any()
    # the same weights give the same stage features (LA-Net's stem has no max-pool, so
    # compare a stage on the same input)
    ours.eval(), lanet.eval()
    x = torch.rand(2, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(r.layer1(x), ours.stages[0](x))
    with pytest.raises(FlipsegError):
        load_backbone_into_resnet(LANetBackbone("resnet18").resnet, "shipped", "resnet18")


def test_pseudo_unet_on_the_resnet_encoder_starts_from_the_backbone(tmp_path, capsys):
    from flipseg.methods.pseudo.model import PseudoUNetModel

    args = ["train", "pseudo", "--dataset", "phantom2d", "--data-opt", "n=8", "--masks-budget",
            "2", "--pseudo", "ellipse", "--set", "epochs=1", "--set", "input_size=64",
            "--no-progress"]
    assert main([*args, "--set", "encoder=compact", "--set", "backbone_weights=shipped",
                 "--out", str(tmp_path / "p")]) == 0
    model = PseudoUNetModel.load(tmp_path / "p")
    assert model.cfg.encoder == "compact" and model.predict_many([torch.rand(64, 64).numpy() * 255])
    # the MONAI U-Net has no such encoder: one line, before any training
    assert main([*args, "--set", "backbone_weights=shipped", "--out", str(tmp_path / "q")]) == 2
    assert "encoder=compact" in capsys.readouterr().err


def test_auto_is_the_shipped_backbone_where_one_is_shipped():
    assert load_backbone(HybridNet("compact").encoder, "auto", "compact") == shipped_backbone("compact")
    assert load_backbone(HybridNet("resnet18").encoder, "auto", "resnet18") is None
