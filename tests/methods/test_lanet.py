"""LA-Net (paper 003): network shapes, honoured attention switches, the hybrid loss and
its pseudo-label gate, two-stage training with resume, prediction and the CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flipseg.boxes import Box
from flipseg.bundles import save_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.lanet import (
    LANetConfig,
    LANetModel,
    add_lanet_args,
    choose_location_labelled,
    hybrid_loss,
    pseudo_label_gate,
    pseudo_location_labels,
    split_train_val,
    train_lanet,
    train_lanet_cli,
)
from flipseg.methods.lanet import train as lanet_train
from flipseg.methods.lanet.predict import build_network
from flipseg.networks.lanet import (
    BACKBONES,
    ChannelAttention,
    LANet,
    MaskAttention,
    SpatialAttention,
)

N_PHANTOMS = 14  # the `phantoms` fixture's count
TINY = dict(input_size=32, stage1_epochs=1, stage2_epochs=2, batch_size=8, loc_fraction=0.5, num_threads=1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, phantoms):
    run = tmp_path_factory.mktemp("lanet") / "run"
    cfg = LANetConfig(**TINY)
    train, val = split_train_val(phantoms, cfg)
    train_lanet(train, val, cfg, run, progress=False)
    return run, train, val, cfg


# ------------------------------------------------------------------- networks
@pytest.mark.parametrize("backbone,size,map_stage,map_size", [
    ("compact", 64, 4, 4), ("compact", 64, 1, 32), ("compact", 32, 2, 8), ("resnet18", 64, 4, 2),
    ("resnet50", 32, 3, 2),
])
def test_every_output_has_its_shape(backbone, size, map_stage, map_size):
    torch.manual_seed(0)
    net = LANet(backbone, map_stage=map_stage).eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        feats = net.backbone(x)
        out = net(x)
        loc = net.localize(x)
    stride = BACKBONES.get(backbone).stride
    assert [f.shape[1] for f in feats] == list(net.backbone.out_channels)
    assert [f.shape[-1] for f in feats] == [size * 8 // stride, size * 4 // stride, size * 2 // stride,
                                            size // stride]
    assert out.logits.shape == (2, 2)
    assert out.lesion_logits.shape == out.lesion_map.shape == loc.shape == (2, 1, map_size, map_size)
    assert torch.allclose(out.lesion_map, torch.sigmoid(out.lesion_logits))
    assert torch.allclose(loc, out.lesion_logits)
    assert ((out.lesion_map >= 0) & (out.lesion_map <= 1)).all()
    assert net.get_submodule(net.cam_layer) is net.backbone.resnet.layer4


def _count(net, cls):
    return sum(isinstance(m, cls) for m in net.modules())


@pytest.mark.parametrize("switch,module", [
    ("channel_attention", ChannelAttention), ("spatial_attention", SpatialAttention),
    ("mask_attention", MaskAttention),
])
def test_switching_an_attention_module_off_changes_the_graph_and_the_output(switch, module):
    torch.manual_seed(0)
    full = LANet("compact").eval()
    torch.manual_seed(0)
    ablated = LANet("compact", **{switch: False}).eval()
    assert _count(full, module) == (1 if module is MaskAttention else 4)
    assert _count(ablated, module) == 0
    # same weights for everything the ablated network still has
    missing, unexpected = ablated.load_state_dict(full.state_dict(), strict=False)
    assert missing == []
    assert all(switch.split("_")[0] in k for k in unexpected)
    assert (len(unexpected) > 0) == (module is not MaskAttention)  # mask attention has no weights
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = full(x), ablated(x)
    assert not torch.allclose(a.logits, b.logits)
    if module is MaskAttention:
        assert torch.allclose(a.lesion_map, b.lesion_map)  # only the classifier changed
    else:
        assert not torch.allclose(a.lesion_map, b.lesion_map)


def test_without_mask_attention_the_classifier_ignores_the_localization_head():
    torch.manual_seed(0)
    for mask_attention in (True, False):
        net = LANet("compact", mask_attention=mask_attention).train()
        net(torch.rand(2, 1, 32, 32)).logits.sum().backward()
        grads = [p.grad for p in net.lanet.parameters()]
        reached = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reached == mask_attention


def test_config_switches_reach_the_network_and_survive_saving(tmp_path):
    cfg = LANetConfig(channel_attention=False, spatial_attention=False, mask_attention=False, input_size=32)
    net = build_network(cfg)
    assert _count(net, ChannelAttention) == _count(net, SpatialAttention) == _count(net, MaskAttention) == 0
    assert _count(build_network(LANetConfig()), ChannelAttention) == 4
    path = tmp_path / "m.safetensors"
    save_bundle(path, LANetModel(cfg).bundle())
    loaded = LANetModel.load(path)
    assert loaded.cfg == cfg and _count(loaded.net, SpatialAttention) == 0


def test_config_rejects_bad_values():
    for bad in ({"loc_fraction": 0.0}, {"loc_fraction": 1.5}, {"input_size": 100}, {"tau": 2.0},
                {"augment": "mixup"}, {"location_label": "scribble"}, {"map_stage": 5}):
        with pytest.raises(FlipsegError, match=next(iter(bad))):
            LANetConfig(**bad)
    with pytest.raises(FlipsegError, match="resnet18"):
        LANetConfig(backbone="vgg")
    with pytest.raises(FlipsegError, match="unknown lanet option 'nope'"):
        LANetConfig.from_dict({"nope": 1})


# ------------------------------------------------------------------- losses
def _bce(logit: torch.Tensor, target: torch.Tensor) -> float:
    p = torch.sigmoid(logit)
    return float(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean())


def test_pseudo_label_gate_is_a_strict_threshold_on_the_top_class_probability():
    # top probabilities: sigmoid(3)=0.953, sigmoid(0.1)=0.525, 0.8 exactly, 0.5
    logits = torch.tensor([[3.0, 0.0], [0.0, 0.1], [0.0, math.log(4.0)], [1.0, 1.0]])
    assert pseudo_label_gate(logits, 0.8).tolist() == [True, False, False, False]
    assert pseudo_label_gate(logits, 0.79).tolist() == [True, False, True, False]
    assert pseudo_label_gate(logits, 0.5).tolist() == [True, True, True, False]
    lesion = torch.tensor([[[[2.0, -1.0], [0.0, 0.3]]]], requires_grad=True)
    pseudo = pseudo_location_labels(lesion)
    assert pseudo.tolist() == [[[[1.0, 0.0], [0.0, 1.0]]]] and not pseudo.requires_grad


def test_hybrid_loss_matches_equation_7_by_hand():
    logits = torch.tensor([[3.0, 0.0], [0.0, 0.1], [0.0, 3.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    lesion = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[1.0, 1.0], [-1.0, 0.2]]],
                           [[[0.7, -0.4], [-2.0, 1.5]]], [[[0.0, 0.0], [4.0, -4.0]]]])
    target = torch.zeros(4, 1, 4, 4)
    target[0, 0, :2, :2] = 1.0  # image 0: lesion in the top-left quarter
    has_loc = torch.tensor([True, False, False, False])
    out = hybrid_loss(logits, labels, lesion, target, has_loc, lam=0.3, alpha=0.2, tau=0.8)

    cls = float(F.cross_entropy(logits, labels))
    loc = _bce(lesion[0], torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))  # target area-averaged to 2x2
    # only image 2 passes the gate (image 0 is confident too, but has a real label)
    pseudo = _bce(lesion[2], torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert int(out["n_pseudo"]) == 1
    assert float(out["cls"]) == pytest.approx(cls, rel=1e-5)
    assert float(out["loc"]) == pytest.approx(loc, rel=1e-5)
    assert float(out["pseudo"]) == pytest.approx(pseudo, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.3 * cls + 0.7 * (loc + 0.2 * pseudo), rel=1e-5)

    none = hybrid_loss(logits, labels, lesion, target, has_loc, lam=0.3, alpha=0.2, tau=0.99)
    assert int(none["n_pseudo"]) == 0 and float(none["pseudo"]) == 0.0
    assert float(none["loss"]) == pytest.approx(0.3 * cls + 0.7 * loc, rel=1e-5)
    every = hybrid_loss(logits, labels, lesion, target, has_loc, tau=0.0)
    assert int(every["n_pseudo"]) == 3
    only_cls = hybrid_loss(logits, labels, lesion, target, has_loc, lam=1.0)
    assert float(only_cls["loss"]) == pytest.approx(cls, rel=1e-6)
    unlabelled = hybrid_loss(logits, labels, lesion, target, torch.zeros(4, dtype=bool), tau=0.99)
    assert float(unlabelled["loc"]) == 0.0


# ------------------------------------------------------------------- data
def test_location_labels_are_chosen_by_patient_with_a_seed(phantoms):
    samples = [dict(s, patient_id=f"p{i // 2}") for i, s in enumerate(phantoms)]  # 2 images/patient
    half = choose_location_labelled(samples, 0.5, seed=4)
    assert half == choose_location_labelled(samples, 0.5, seed=4)
    assert len(half) in (6, 8)
    pid = {s["case_id"]: s["patient_id"] for s in samples}
    chosen = {pid[c] for c in half}
    assert all((s["case_id"] in half) == (s["patient_id"] in chosen) for s in samples)
    assert len(choose_location_labelled(samples, 1.0)) == len(samples)
    boxes_only = [dict(s, mask=None) for s in samples]
    assert len(choose_location_labelled(boxes_only, 1.0)) == len(samples)
    with pytest.raises(FlipsegError, match="fraction"):
        choose_location_labelled(samples, 0.0)


def test_boxes_become_filled_rectangles():
    s = {"image": np.zeros((10, 12), np.float32), "mask": None, "box": Box.parse("2,3,6,8")}
    lab = lanet_train.location_label(s, "mask")
    assert lab.sum() == 4 * 5 and lab[3:8, 2:6].all()
    assert lanet_train.location_label({"image": s["image"], "box": None}) is None


def test_training_refuses_data_without_location_labels(tmp_path, phantoms):
    no_loc = [dict(s, mask=None, box=None) for s in phantoms]
    with pytest.raises(FlipsegError, match="no location-labelled images"):
        train_lanet(no_loc, [], LANetConfig(**TINY), tmp_path / "r", progress=False)
    with pytest.raises(FlipsegError, match="both benign and malignant"):
        train_lanet([dict(s, label="benign") for s in phantoms], [], LANetConfig(**TINY), tmp_path / "r",
                    progress=False)
    with pytest.raises(FlipsegError, match="no benign or malignant"):
        train_lanet([dict(s, label="normal") for s in phantoms], [], LANetConfig(**TINY), tmp_path / "r",
                    progress=False)


# ------------------------------------------------------------------- training
def test_two_stage_training_resumes_to_the_same_weights(tmp_path, interrupted_after, trained_run):
    run, train, val, cfg = trained_run
    log = (run / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("stage,epoch") and [r.split(",")[:2] for r in log[1:]] == [
        ["1", "1"], ["2", "1"], ["2", "2"]]
    assert (run / "location_labels.json").exists() and (run / "config.json").exists()

    # interrupt right after the first stage-2 epoch has been saved, then resume
    other = tmp_path / "interrupted"
    with interrupted_after(2):
        train_lanet(train, val, cfg, other, progress=False)
    assert len((other / "train_log.csv").read_text().splitlines()) == 3
    train_lanet(train, val, cfg, other, progress=False)
    resumed = (other / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[:4] for r in resumed] == [r.split(",")[:4] for r in log]  # not the seconds
    a = torch.load(run / lanet_train.CHECKPOINT, weights_only=False)["net"]
    b = torch.load(other / lanet_train.CHECKPOINT, weights_only=False)["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run re-run does nothing more; another config in the same folder is refused
    train_lanet(train, val, cfg, other, progress=False)
    assert len((other / "train_log.csv").read_text().splitlines()) == 4
    with pytest.raises(FlipsegError, match="differs in: tau"):
        train_lanet(train, val, LANetConfig(**dict(TINY, tau=0.9)), other, progress=False)


def test_loaded_model_predicts_probabilities_maps_and_gradcam(trained_run, phantoms):
    run, *_ = trained_run
    model = LANetModel.load(run)
    assert model.meta["stage"] == 2 and model.meta["n_labelled"] >= 1
    images = [s["image"] for s in phantoms[:3]] + [np.zeros((50, 30), np.float32)]
    preds = model.predict(images, batch_size=2)
    assert len(preds) == 4
    for im, p in zip(images, preds):
        assert p.probabilities.shape == (2,) and p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert p.label == ("malignant" if p.probabilities[1] > p.probabilities[0] else "benign")
        assert p.lesion_map.shape == p.mask.shape == im.shape and p.mask.dtype == bool
        assert 0 <= p.lesion_map.min() and p.lesion_map.max() <= 1
    cams = model.gradcam(images[:2], class_index=1)
    assert [c.shape for c in cams] == [images[0].shape, images[1].shape]
    assert all(0 <= c.min() and c.max() <= 1 for c in cams)
    with pytest.raises(FlipsegError, match="class_index"):
        model.gradcam(images[:1], class_index=2)
    with pytest.raises(FlipsegError, match="2D"):
        model.predict([np.zeros((3, 8, 8))])
    with pytest.raises(FlipsegError, match="model not found"):
        LANetModel.load(run / "missing")


# ------------------------------------------------------------------- CLI
def test_cli_trains_resumes_and_reports_user_mistakes(tmp_path, recipe_cli):
    cli = recipe_cli("lanet", add_lanet_args, train_lanet_cli)
    out = tmp_path / "cli"
    tiny = ["--dataset", "phantom2d", "--data-opt", "n=10", "--data-opt", "shape=32,40", "--out", str(out),
            "--no-progress", "--set", "input_size=32", "--set", "stage1_epochs=1", "--set", "stage2_epochs=1",
            "--set", "batch_size=4", "--set", "num_threads=1"]
    assert cli([*tiny, "--loc-fraction", "0.5"]) == 0
    assert (out / "lanet_model.safetensors").exists() and (out / "data.json").exists()
    assert LANetModel.load(out).cfg.loc_fraction == 0.5
    assert cli(tiny) == 0  # re-run: resumes with the saved config
    assert len((out / "train_log.csv").read_text().splitlines()) == 3
    errors = {
        "unknown dataset 'mnist'": ["--dataset", "mnist"],
        "give --dataset": [],
        r"--loc-fraction must be in \(0, 1\], got 1.5": ["--dataset", "busi", "--loc-fraction", "1.5"],
        r"--loc-fraction must be in \(0, 1\], got 0.0": ["--dataset", "busi", "--loc-fraction", "0"],
        "unknown lanet option 'epochs'": ["--dataset", "phantom2d", "--set", "epochs=3"],
        "no official folds": ["--dataset", "phantom2d", "--fold", "2"],
        "differs in: loc_fraction": [*tiny, "--loc-fraction", "0.25"],
    }
    cli.expect_errors(errors)


def test_classify_command_writes_probabilities_maps_gradcam_and_metrics(tmp_path, trained_run, capsys):
    import csv

    from flipseg.cli import main
    from flipseg.viz import save_png

    run, *_ = trained_run
    out = tmp_path / "cls"
    data = ["--dataset", "phantom2d", "--data-opt", "n=6", "--data-opt", "shape=32,40"]
    assert main(["classify", "--model", str(run), *data, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 6
    for r in rows:
        p = float(r["p_benign"]) + float(r["p_malignant"])
        assert p == pytest.approx(1.0, abs=2e-4)
        assert r["predicted"] == ("malignant" if float(r["p_malignant"]) > float(r["p_benign"]) else "benign")
        for suffix in ("lesion", "lesion_map", "gradcam"):
            assert (out / f"{r['case_id']}_{suffix}.png").stat().st_size > 0
    assert {r["true_label"] for r in rows} == {"benign", "malignant"}  # the phantoms carry both
    assert set(json_keys(out / "metrics.json")) >= {"accuracy", "f1", "auc"}
    # one image file, no Grad-CAM
    img = tmp_path / "one.png"
    save_png(img, (np.arange(32 * 40).reshape(32, 40) % 255).astype(np.uint8))
    single = tmp_path / "single"
    one = ["--image", str(img), "--out", str(single)]
    assert main(["classify", "--model", str(run), *one, "--no-gradcam"]) == 0
    assert "one: " in capsys.readouterr().out
    assert (single / "one_lesion.png").exists() and not (single / "one_gradcam.png").exists()
    # user mistakes: one line, exit code 2
    assert main(["classify", "--model", str(tmp_path / "nope"), *one]) == 2
    assert main(["classify", "--model", str(run), "--out", str(single)]) == 2
    assert "give --image IMG or --dataset NAME" in capsys.readouterr().err


def json_keys(path):
    import json

    return json.loads(path.read_text()).keys()


def test_gradcam_is_high_where_the_class_evidence_is(trained_run, phantoms):
    """Our Grad-CAM matches one computed by hand (monai's default normaliser would invert it)."""
    from flipseg.methods.whole_image import image_batches
    from flipseg.resize import resize

    run, *_ = trained_run
    model = LANetModel.load(run)
    images = [s["image"] for s in phantoms[:4]]
    cams = model.gradcam(images, class_index=1)
    net = model.net.eval()
    acts = {}
    layer = dict(net.named_modules())[net.cam_layer]
    hook = layer.register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
    try:
        _, x = next(iter(image_batches(images, 4, model.input_batch)))
        logits = net(x).logits
        grads = torch.autograd.grad(logits[:, 1].sum(), acts["a"])[0]
    finally:
        hook.remove()
    manual = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1)).detach().numpy()
    checked = 0
    for cam, m, im in zip(cams, manual, images):
        if m.max() <= 0:
            continue
        ref = resize(m, im.shape)
        assert np.corrcoef(cam.ravel(), ref.ravel())[0, 1] > 0.8
        checked += 1
    assert checked >= 1
