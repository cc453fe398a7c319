"""flipseg train backbone: pretraining, the overlap refusal, resume, and loading the
shipped or a trained backbone into a network's encoder."""

import json

import pytest
import torch

from flipseg.bundles import read_bundle, save_bundle
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


def test_nt_xent_finds_each_views_partner():
    from flipseg.methods.backbone.train import nt_xent, random_view

    torch.manual_seed(0)
    z = torch.randn(8, 16)
    same = nt_xent(z, z, 0.2)  # each view's partner is itself: far below chance
    chance = nt_xent(torch.randn(8, 16), torch.randn(8, 16), 0.2)
    assert float(same) < 0.5 < 2 < float(chance)  # chance is about log(15) = 2.7
    assert abs(float(nt_xent(torch.ones(4, 3), torch.ones(4, 3), 1.0)) - torch.log(torch.tensor(7.0))) < 1e-5
    x = torch.rand(3, 1, 32, 32)
    v = random_view(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and not torch.equal(v, x) and 0 <= float(v.min()) <= float(v.max()) <= 1


def test_self_supervised_pretraining_alone_and_beside_the_tasks(tmp_path, capsys):
    """ssl_weight adds the contrastive term; with the task weights at 0 it trains alone
    (the encoder still changes and ships); all weights 0 is refused in one line."""
    out = tmp_path / "ssl"
    assert _train(out, "--set", "ssl_weight=1", "--set", "seg_weight=0", "--set", "cls_weight=0",
                  "--set", "box_weight=0") == 0
    head = (out / "train_log.csv").read_text().splitlines()[0]
    assert "loss_ssl" in head
    ssl = read_bundle(out, "backbone.safetensors", BACKBONE_FORMAT, "backbone")["state_dict"]
    torch.manual_seed(0)
    from flipseg.methods.backbone.train import PretrainNet

    fresh = PretrainNet("compact").encoder.state_dict()
    convs = [k for k, v in ssl.items() if v.ndim == 4]  # weights only a gradient moves
    assert convs and any(not torch.equal(fresh[k], ssl[k]) for k in convs)
    assert _train(tmp_path / "both", "--set", "ssl_weight=0.5") == 0
    assert _train(tmp_path / "zero", "--set", "seg_weight=0", "--set", "cls_weight=0",
                  "--set", "box_weight=0") == 2
    assert "one of seg/cls/box/ssl" in capsys.readouterr().err


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


def test_pseudo_unet_is_on_the_resnet_encoder_from_the_backbone_by_default(tmp_path, capsys,
                                                                           monkeypatch):
    """The default U-Net starts from the shipped backbone (its first weights are the
    backbone's); ``encoder=none`` is the MONAI U-Net, random; a model file saved before
    ``encoder`` existed loads as the MONAI U-Net it was."""
    import importlib

    from flipseg.methods.pseudo.config import PseudoConfig
    from flipseg.methods.pseudo.model import PseudoUNetModel

    args = ["train", "pseudo", "--dataset", "phantom2d", "--data-opt", "n=8", "--masks-budget",
            "2", "--pseudo", "ellipse", "--set", "epochs=1", "--set", "input_size=64",
            "--no-progress"]
    pseudo_train = importlib.import_module("flipseg.methods.pseudo.train")
    seen = {}
    real_load = pseudo_train.load_backbone

    def spy(encoder, weights, layout):
        seen["path"] = real_load(encoder, weights, layout)
        return seen["path"]

    monkeypatch.setattr(pseudo_train, "load_backbone", spy)
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    assert seen["path"] == shipped_backbone("compact")
    model = PseudoUNetModel.load(tmp_path / "p")
    assert model.cfg.encoder == "compact" and model.cfg.backbone_weights == "auto"
    assert model.predict_many([torch.rand(64, 64).numpy() * 255])[0].shape == (64, 64)

    assert main([*args, "--set", "encoder=none", "--out", str(tmp_path / "m")]) == 0
    monai = PseudoUNetModel.load(tmp_path / "m")
    assert monai.cfg.encoder == "none" and not hasattr(monai.net, "encoder")
    # a file from before the field: its config has no encoder / backbone_weights
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    del saved["encoder"], saved["backbone_weights"]
    old = PseudoConfig.from_saved(saved)
    assert old.encoder == "none" and old.backbone_weights == "none"
    bundle = read_bundle(tmp_path / "m", "pseudo_model.safetensors", "flipseg-pseudo-unet-1",
                         "pseudo-unet model")
    bundle["config"] = saved
    save_bundle(tmp_path / "old.safetensors", bundle)
    assert PseudoUNetModel.load(tmp_path / "old.safetensors").cfg.encoder == "none"
    # and its run folder resumes as the MONAI U-Net it was (nothing left to train)
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    assert main([*args, "--out", str(tmp_path / "m")]) == 0
    assert PseudoUNetModel.load(tmp_path / "m").cfg.encoder == "none"
    # the MONAI U-Net has no encoder to load: one line, before any training
    assert main([*args, "--set", "encoder=none", "--set", "backbone_weights=shipped",
                 "--out", str(tmp_path / "q")]) == 2
    assert "encoder=compact" in capsys.readouterr().err
    with pytest.raises(FlipsegError, match="multiple of 32"):
        PseudoConfig(input_size=48)


def test_auto_is_the_shipped_backbone_where_one_is_shipped():
    assert load_backbone(HybridNet("compact").encoder, "auto", "compact") == shipped_backbone("compact")
    assert load_backbone(HybridNet("resnet18").encoder, "auto", "resnet18") is None


def test_the_cam_classifier_starts_from_the_backbone():
    """backbone=encoder: every branch's encoder gets the shipped weights (the strided-down
    deepest stages change no weight); auto is random for the other backbones; a flipseg
    backbone does not fit the compact conv net."""
    from flipseg.methods.cam_mt.cams import CamClassifier, load_pretrained
    from flipseg.methods.cam_mt.config import CamClassifierConfig

    ours = ResNetEncoder_with_shipped()
    for stride, grid in ((8, 8), (16, 4), (32, 2)):
        model = CamClassifier(CamClassifierConfig(backbone="encoder", output_stride=stride))
        assert "backbone_compact" in load_pretrained(model, "auto")
        for branch in model.branches:
            assert branch.features is not model.spotlight.features or branch is model.spotlight
            enc = branch.features.encoder.state_dict()
            assert all(torch.equal(v, enc[k]) for k, v in ours.items())
        _, cam = model.spotlight.forward_with_cam(torch.rand(2, 1, 64, 64))
        assert cam.shape == (2, grid, grid)
    plain = CamClassifier(CamClassifierConfig())
    assert load_pretrained(plain, "auto") is None and load_pretrained(plain, "none") is None
    with pytest.raises(FlipsegError, match="backbone=encoder"):
        load_pretrained(plain, "shipped")


def ResNetEncoder_with_shipped():
    from flipseg.networks.hybrid import ENCODERS, ResNetEncoder

    enc = ResNetEncoder(ENCODERS.get("compact"))
    load_backbone(enc, "shipped", "compact")
    return enc.state_dict()


def test_cam_classifier_trains_from_the_backbone_and_resumes_as_it_was(tmp_path):
    import numpy as np

    from flipseg.data.phantoms import phantom_dataset_2d
    from flipseg.methods.cam_mt.cams import load_cam_classifier_model, train_cam_classifier
    from flipseg.methods.cam_mt.config import CamClassifierConfig

    tumors = phantom_dataset_2d(4)
    normals = [{"image": s["image"], "mask": np.zeros_like(s["mask"])} for s in phantom_dataset_2d(3, seed=5)]
    cfg = CamClassifierConfig(backbone="encoder", backbone_weights="shipped", input_size=64,
                              epochs=1, batch_size=4)
    path = train_cam_classifier(tumors + normals, cfg, tmp_path / "c", progress=False)
    model = load_cam_classifier_model(path)
    assert model.cfg.backbone == "encoder" and model.cfg.backbone_weights == "shipped"
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 2)
    # more epochs resume the run; the start weights may be named otherwise on resume
    cfg2 = CamClassifierConfig(backbone="encoder", backbone_weights="none", input_size=64,
                               epochs=2, batch_size=4)
    train_cam_classifier(tumors + normals, cfg2, tmp_path / "c", progress=False)
    assert len((tmp_path / "c" / "train_log.csv").read_text().splitlines()) == 3


def test_boxinst_unet_on_the_encoder_starts_from_the_backbone(tmp_path, capsys):
    from flipseg.methods.boxinst.model import BoxInstModel

    args = ["train", "boxinst", "--dataset", "phantom2d", "--data-opt", "n=8", "--set", "epochs=1",
            "--set", "crop_size=64", "--no-progress"]
    assert main([*args, "--set", "encoder=compact", "--set", "backbone_weights=shipped",
                 "--out", str(tmp_path / "b")]) == 0
    model = BoxInstModel.load(tmp_path / "b")
    assert model.cfg.encoder == "compact"
    from flipseg.boxes import Box

    img = (torch.rand(80, 80).numpy() * 255).astype("uint8")
    assert model.segment_many([img], [Box.from_lo_hi((20, 20), (60, 60))])[0].shape == (80, 80)
    assert main([*args, "--set", "backbone_weights=shipped", "--out", str(tmp_path / "q")]) == 2
    assert "encoder=compact" in capsys.readouterr().err


def test_a_resnet50_backbone_pretrains_and_fills_monais_resnet50(tmp_path):
    """The bottleneck layout: pretrained by the same recipe, its weights map one to one onto
    MONAI's ResNet50 (LA-Net's, the CAM classifier's) and give the same features."""
    from monai.networks.nets import resnet50

    from flipseg.networks.backbone import load_backbone_into_resnet
    from flipseg.networks.hybrid import ENCODERS, ResNetEncoder

    out = tmp_path / "r50"
    assert main(["train", "backbone", "--dataset", "phantom2d", "--data-opt", "n=6",
                 "--set", "epochs=1", "--set", "input_size=64", "--set", "batch_size=3",
                 "--set", "encoder=resnet50", "--out", str(out), "--no-progress"]) == 0
    ours = ResNetEncoder(ENCODERS.get("resnet50"))
    assert ours.out_channels[-1] == 2048
    load_backbone(ours, out, "resnet50")
    theirs = resnet50(spatial_dims=2, n_input_channels=1, num_classes=2)
    load_backbone_into_resnet(theirs, out, "resnet50")
    ours.eval(), theirs.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():  # MONAI's stem strides by 1 by default: compare from the stages on
        assert torch.equal(theirs.conv1.weight, ours.stem[0].weight)
        start = ours.pool(ours.stem(x))
        f = start
        for stage in ours.stages:
            f = stage(f)
        g = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(start))))
    assert f.shape == (2, 2048, 2, 2) and torch.allclose(f, g, atol=1e-5)
    with pytest.raises(FlipsegError, match="resnet50"):
        load_backbone(ResNetEncoder(ENCODERS.get("compact")), out, "compact")


def test_mean_teacher_unets_on_the_encoder_start_from_the_backbone(tmp_path):
    import numpy as np

    from flipseg.data.phantoms import phantom_dataset_2d
    from flipseg.methods.cam_mt.config import MeanTeacherConfig
    from flipseg.methods.cam_mt.mean_teacher import CamMTModel, train_mean_teacher

    data = phantom_dataset_2d(4)
    ims, masks = [s["image"] for s in data], [s["mask"] for s in data]
    cfg = MeanTeacherConfig(image_size=64, encoder="compact", backbone_weights="shipped",
                            epochs=1, batch_size=4, labeled_batch_size=2)
    path = train_mean_teacher(ims[:2], masks[:2], ims[2:], cfg, tmp_path / "mt", progress=False)
    model = CamMTModel.load(path)
    assert model.cfg.encoder == "compact"
    pred = model.predict([np.asarray(ims[0])])[0]
    assert pred.shape == np.shape(ims[0])
    with pytest.raises(FlipsegError, match="backbone_weights"):
        MeanTeacherConfig(backbone_weights="shipped")
    with pytest.raises(FlipsegError, match="multiple of 32"):
        MeanTeacherConfig(encoder="compact", image_size=48)


def test_box_refiner_on_the_encoder_starts_from_the_backbone_and_refines(tmp_path, capsys):
    from flipseg.methods.boxrefine.model import BoxRefiner

    args = ["train", "box-refiner", "--dataset", "phantom2d", "--data-opt", "n=8", "--set",
            "epochs=1", "--set", "input_size=64", "--set", "batch_size=4", "--no-progress"]
    run = tmp_path / "r"
    assert main([*args, "--set", "encoder=compact", "--set", "backbone_weights=shipped",
                 "--out", str(run)]) == 0
    assert BoxRefiner.load(run).cfg.encoder == "compact"
    assert main(["evaluate", "--dataset", "phantom2d", "--data-opt", "n=4", "--method", "box",
                 "--refine-box", str(run), "--box-shift", "0-10", "--repeats", "1",
                 "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert main([*args, "--set", "backbone_weights=shipped", "--out", str(tmp_path / "q")]) == 2
    assert "backbone_weights" in capsys.readouterr().err


def test_flips_classifier_on_the_encoder_starts_from_the_backbone(tmp_path, capsys):
    """``--classifier-network encoder --classifier-set backbone_weights=shipped``: the
    classifier Flip trains first (and ships inside its model file) starts from the backbone."""
    from flipseg.methods.flip.classifier import ClassifierConfig
    from flipseg.methods.flip.infer import FlipModel
    from flipseg.networks.classifier import build_classifier

    run = tmp_path / "f"
    assert main(["train", "flip", "--dataset", "phantom2d", "--data-opt", "n=6", "--out", str(run),
                 "--set", "epochs=1", "--set", "levels=8", "--set", "agents=1",
                 "--classifier-network", "encoder", "--classifier-epochs", "1",
                 "--classifier-set", "backbone_weights=shipped", "--no-progress"]) == 0
    model = FlipModel.load(run)
    assert model.classifier_config["network"] == "encoder"
    assert model.classifier_config["backbone_weights"] == "shipped"
    assert type(model.classifier_net).__name__ == "EncoderClassifier"
    net = build_classifier("encoder")
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
    with pytest.raises(FlipsegError, match="2D only"):
        build_classifier("encoder", spatial_dims=3)
    with pytest.raises(FlipsegError, match="backbone_weights"):
        ClassifierConfig(backbone_weights="shipped")
