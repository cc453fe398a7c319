"""Hybrid supervision (paper 004): network shapes, honoured ablation switches, the PPA and
perception losses by hand, reversed-box targets, the seeded patient-level strong/weak split,
resume after a kill, whole-image prediction at the image's resolution and the CLI."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.data import make_sample
from flipseg.errors import FlipsegError
from flipseg.methods import get_segmenter
from flipseg.methods.hybrid import (
    HybridConfig,
    HybridModel,
    add_hybrid_args,
    box_target,
    choose_strong,
    hybrid_loss,
    perception_loss,
    ppa_loss,
    prepare_data,
    train_hybrid,
    train_hybrid_cli,
)
from flipseg.methods.hybrid import train as hybrid_train
from flipseg.methods.hybrid.losses import ppa_weight
from flipseg.methods.hybrid.predict import HybridSegmenter
from flipseg.networks.hybrid import ENCODERS, HybridNet

TINY = dict(input_size=32, epochs=2, batch_size=4, strong_fraction=0.5, ppa_kernel=5, num_threads=1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, phantoms):
    run = tmp_path_factory.mktemp("hybrid") / "run"
    cfg = HybridConfig(**TINY)
    train_hybrid(phantoms[:10], phantoms[10:], cfg, run, progress=False)
    return run, cfg


def _grad_norm(loss: torch.Tensor, module: torch.nn.Module) -> float:
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return float(sum(g.abs().sum() for g in grads if g is not None))


# ------------------------------------------------------------------- network
@pytest.mark.parametrize("encoder,size", [("compact", 64), ("compact", 32), ("resnet34", 32)])
def test_outputs_have_the_input_size(encoder, size):
    torch.manual_seed(0)
    net = HybridNet(encoder).eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        feats = net.encoder(x)
        out = net(x)
    assert [f.shape[-1] for f in feats] == [size // 2, size // 4, size // 8, size // 16, size // 32]
    assert [f.shape[1] for f in feats] == list(net.encoder.out_channels)
    assert out.seg_logits.shape == out.aux_logits.shape == (2, 1, size, size)
    single = HybridNet(encoder, dual=False).eval()
    with torch.no_grad():
        assert single(x).seg_logits.shape == (2, 1, size, size)
    assert single(x).aux_logits is None and single.aux_decoder is None and single.disentangle is None


def test_resnet34_layout_and_unknown_encoder():
    net = HybridNet("resnet34")
    assert [len(s) for s in net.encoder.stages] == [3, 4, 6, 3]
    assert net.encoder.out_channels == (64, 64, 128, 256, 512)
    with pytest.raises(FlipsegError, match="compact, resnet18, resnet34, resnet50"):
        HybridNet("vgg")
    assert ENCODERS.names() == ["compact", "resnet18", "resnet34", "resnet50"]
    r50 = HybridNet("resnet50").encoder
    assert r50.out_channels == (64, 256, 512, 1024, 2048)
    assert type(r50.stages[0][0]).__name__ == "Bottleneck"


def test_spatial_prompt_ties_the_segmentation_to_the_background_decoder():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    with_spm = HybridNet("compact").train()
    seg = with_spm(x).seg_logits.sum()
    assert _grad_norm(seg, with_spm.aux_decoder) > 0
    torch.manual_seed(0)
    no_spm = HybridNet("compact", spatial_prompt=False).train()
    seg = no_spm(x).seg_logits.sum()
    assert _grad_norm(seg, no_spm.aux_decoder) == 0
    # same weights, only the prompt differs -> different segmentation
    no_spm.load_state_dict(with_spm.state_dict())
    with torch.no_grad():
        assert not torch.allclose(with_spm.eval()(x).seg_logits, no_spm.eval()(x).seg_logits)
    torch.manual_seed(0)
    detached = HybridNet("compact", prompt_detach=True).train()
    assert _grad_norm(detached(x).seg_logits.sum(), detached.aux_decoder) == 0


def test_disentanglement_routes_each_half_to_its_decoder():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    net = HybridNet("compact", spatial_prompt=False).train()
    out = net(x)
    assert net.disentangle.split == 64
    assert _grad_norm(out.seg_logits.sum(), net.disentangle.to_lesion) > 0
    assert _grad_norm(out.seg_logits.sum(), net.disentangle.to_other) == 0
    assert _grad_norm(out.aux_logits.sum(), net.disentangle.to_other) > 0
    assert _grad_norm(out.aux_logits.sum(), net.disentangle.to_lesion) == 0
    plain = HybridNet("compact", disentangle=False, spatial_prompt=False).eval()
    assert plain.disentangle is None
    n_fd = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters())
    assert n_fd == 2 * (64 * 128 + 128)  # two 1x1 convs, half the channels -> all of them
    with torch.no_grad():  # without FD both decoders read the encoder's f itself
        feats = plain.encoder(x)
        out = plain(x)
        assert torch.allclose(out.seg_logits, plain.seg_decoder(feats[-1], feats[:-1]))
        assert torch.allclose(out.aux_logits, plain.aux_decoder(feats[-1], feats[:-1]))


# -------------------------------------------------------------------- losses
def test_ppa_loss_by_hand():
    zero_logits = torch.zeros(1, 1, 1, 3)
    target = torch.tensor([[[[0.0, 1.0, 0.0]]]])
    # 3x3 window, zero padding counted: the single 1 gives every pixel a local mean of 1/9
    w = torch.tensor([1 + 5 / 9, 1 + 5 * 8 / 9, 1 + 5 / 9])
    assert torch.allclose(ppa_weight(target, 3, 5.0).flatten(), w)
    inter = 0.5 * w[1]
    union = 0.5 * w[0] + 1.5 * w[1] + 0.5 * w[2]
    expected = math.log(2) + 1 - (inter + 1) / (union - inter + 1)
    assert ppa_loss(zero_logits, target, kernel=3, gamma=5.0).item() == pytest.approx(float(expected), 1e-6)
    # empty target, p = 0.5 everywhere: wBCE = ln 2, wIoU = 1 - 1 / (8 * 0.5 * 2 + 1)
    assert ppa_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), kernel=3).item() == pytest.approx(
        math.log(2) + 1 - 1 / 9, 1e-6)
    # the edge weighting matters: gamma changes the loss of a non-uniform prediction
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])
    assert ppa_loss(logits, target, kernel=3, gamma=0.0).item() != pytest.approx(
        ppa_loss(logits, target, kernel=3, gamma=5.0).item())


def test_perception_loss_by_hand():
    # reversed box: 1 outside; the box holds two pixels with p(background) 0.5 and 0.75
    reversed_box = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])
    logits = torch.tensor([[[[5.0, 0.0, math.log(3.0), -7.0]]]])
    tn, fp = 0.5 + 0.25, 0.5 + 0.75
    assert perception_loss(logits, reversed_box).item() == pytest.approx(1 - tn / (tn + fp), 1e-5)
    assert perception_loss(logits, reversed_box).item() == pytest.approx(0.625, 1e-5)
    # calling background uncertain is free; an image without a box is left out
    assert perception_loss(torch.full((1, 1, 1, 4), -30.0), reversed_box).item() == pytest.approx(0, abs=1e-6)
    two = torch.cat([logits, torch.zeros_like(logits)])
    boxes = torch.cat([reversed_box, torch.ones_like(reversed_box)])
    assert perception_loss(two, boxes).item() == pytest.approx(0.625, 1e-5)


def test_hybrid_loss_terms_and_the_perception_switch():
    torch.manual_seed(0)
    seg, aux = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    seg_t = (torch.rand(3, 1, 8, 8) > 0.5).float()
    aux_t = torch.ones(3, 1, 8, 8)
    aux_t[:, :, 2:6, 2:6] = 0
    has_seg, has_aux = torch.tensor([True, False, False]), torch.tensor([True, True, True])
    on = hybrid_loss(seg, seg_t, has_seg, aux, aux_t, has_aux, perception=True, kernel=3)
    off = hybrid_loss(seg, seg_t, has_seg, aux, aux_t, has_aux, perception=False, kernel=3)
    assert on["seg"].item() == pytest.approx(ppa_loss(seg[:1], seg_t[:1], kernel=3).item())
    assert on["aux"].item() == pytest.approx(ppa_loss(aux, aux_t, kernel=3).item())
    assert on["percept"].item() == pytest.approx(perception_loss(aux, aux_t).item())
    assert on["loss"].item() == pytest.approx((on["seg"] + on["aux"] + on["percept"]).item())
    assert off["loss"].item() == pytest.approx((on["seg"] + on["aux"]).item())
    assert on["percept"].item() > 0
    # the targets of images without that label do not count
    seg_t2 = seg_t.clone()
    seg_t2[1:] = 1 - seg_t2[1:]
    assert hybrid_loss(seg, seg_t2, has_seg, aux, aux_t, has_aux, kernel=3)["loss"].item() == \
        pytest.approx(on["loss"].item())
    single = hybrid_loss(seg, seg_t, has_seg, kernel=3)
    assert single["loss"].item() == pytest.approx(on["seg"].item()) and single["aux"].item() == 0


# ---------------------------------------------------------------------- data
def test_box_target_covers_the_box_on_the_network_grid():
    t = box_target(Box(13, 4, 31, 21), (40, 80), 16)
    expected = np.zeros((16, 16), np.float32)
    expected[1:9, 2:7] = 1  # rows floor(1.6) .. ceil(8.4); cols floor(2.6) .. ceil(6.2): outwards
    np.testing.assert_array_equal(t, expected)
    tiny = box_target(Box(3, 3, 4, 4), (100, 100), 16)  # a 1-pixel box still covers a cell
    assert tiny.sum() == 1 and tiny[0, 0] == 1
    with pytest.raises(FlipsegError, match="outside the image"):
        box_target(Box(200, 200, 210, 210), (100, 100), 16)


def _cases(n=8, shape=(40, 48)):
    out = []
    for i in range(n):
        mask = np.zeros(shape, bool)
        mask[10 + i % 3 : 25, 8 + i : 30] = True
        mask[10 + i % 3 : 16, 8 + i : 16] = False  # a corner cut: the mask is not its box
        out.append(make_sample(np.full(shape, 100.0, np.float32), mask=mask, case_id=f"c{i}",
                               patient_id=f"p{i // 2}"))
    return out


@pytest.mark.parametrize("mode", ["hybrid", "strong-only", "weak-only", "vanilla-hybrid"])
def test_targets_per_mode(mode):
    cases = _cases()
    cfg = HybridConfig(mode=mode, input_size=32, aux_on_strong=False)
    data = prepare_data(cases, cfg, {"c0", "c1"})
    boxes = np.stack([box_target(c["box"], (40, 48), 32) for c in cases])[:, None]
    strong = np.array([True, True] + [False] * 6)
    np.testing.assert_array_equal(data.is_strong.numpy(), strong)
    np.testing.assert_array_equal(data.aux_target.numpy(), 1 - boxes)  # reversed boxes
    seg = data.seg_target.numpy()
    if mode in ("hybrid", "strong-only"):
        np.testing.assert_array_equal(data.has_seg.numpy(), strong)
        assert seg[0].sum() < boxes[0].sum() and seg[2:].sum() == 0  # masks, none for weak images
    elif mode == "weak-only":
        np.testing.assert_array_equal(seg, boxes)
    else:
        np.testing.assert_array_equal(seg[2:], boxes[2:])
        assert 0 < seg[0].sum() < boxes[0].sum()
    expected_aux = ~strong if mode == "hybrid" else np.zeros(8, bool)
    np.testing.assert_array_equal(data.has_aux.numpy(), expected_aux)
    n_train = len(data.train_index(cfg))
    assert n_train == (2 if mode == "strong-only" else 8)
    if mode == "hybrid":
        both = prepare_data(cases, HybridConfig(input_size=32), {"c0", "c1"})
        assert both.has_aux.all()  # aux_on_strong (default): strong boxes train Dec_a too


def test_strong_split_is_seeded_and_by_patient():
    cases = _cases(20)
    a = choose_strong(cases, 0.3, seed=4)
    assert sorted(a) == sorted(choose_strong(list(reversed(cases)), 0.3, seed=4))  # order-free
    assert len(a) == 6
    patient = {c["case_id"]: c["patient_id"] for c in cases}
    chosen_patients = {patient[c] for c in a}
    assert all(c["case_id"] in a for c in cases if c["patient_id"] in chosen_patients)
    assert any(choose_strong(cases, 0.3, seed=s) != a for s in range(5, 10))
    assert len(choose_strong(cases, 1.0)) == 20
    cases[0]["mask"] = np.zeros_like(cases[0]["mask"])
    assert "c0" not in choose_strong(cases, 1.0)
    with pytest.raises(FlipsegError, match="strong fraction"):
        choose_strong(cases, 0.0)


def test_batches_hold_strong_images_when_asked():
    cfg = HybridConfig(batch_size=4, strong_per_batch=1)
    is_strong = torch.tensor([True, True] + [False] * 10)
    batches = hybrid_train.epoch_batches(torch.arange(12), is_strong, cfg, torch.Generator().manual_seed(0))
    assert len(batches) == 4 and all(int(is_strong[b].sum()) == 1 for b in batches)
    assert sorted(torch.cat(batches)[~is_strong[torch.cat(batches)]].tolist()) == list(range(2, 12))
    plain = hybrid_train.epoch_batches(torch.arange(12), is_strong, HybridConfig(batch_size=4),
                                       torch.Generator().manual_seed(0))
    assert sorted(torch.cat(plain).tolist()) == list(range(12))


def test_config_round_trip_poly_lr_and_bad_options():
    cfg = HybridConfig(mode="weak-only", epochs=10, lr=0.01)
    assert HybridConfig.from_dict(cfg.to_dict()) == cfg
    assert hybrid_train.poly_lr(cfg, 0) == pytest.approx(0.01)
    assert hybrid_train.poly_lr(cfg, 5) == pytest.approx(0.01 * 0.5**0.9)
    bad = {"mode": "semi", "input_size": 48, "strong_fraction": 0.0, "ppa_kernel": 4, "batch_size": 1}
    for key, value in bad.items():
        with pytest.raises(FlipsegError, match=f"invalid hybrid option {key}="):
            HybridConfig(**{key: value})
    with pytest.raises(FlipsegError, match="unknown hybrid option 'nope'"):
        HybridConfig.from_dict({"nope": 1})


# ------------------------------------------------------------------ training
def test_training_writes_the_run_folder(trained_run):
    run, cfg = trained_run
    for name in ("config.json", "strong_split.json", "hybrid_checkpoint.pt", "hybrid_model.safetensors",
                 "train_log.csv"):
        assert (run / name).exists()
    rows = (run / "train_log.csv").read_text().splitlines()
    assert len(rows) == 3 and "train_percept" in rows[0] and "val_dice" in rows[0]
    model = HybridModel.load(run)
    assert model.cfg == cfg and model.meta["n_strong"] == 5


def test_resume_after_a_kill_gives_identical_weights(tmp_path, phantoms, trained_run, interrupted_after):
    run, cfg = trained_run
    with interrupted_after(1):
        train_hybrid(phantoms[:10], phantoms[10:], cfg, tmp_path / "b", progress=False)
    assert len((tmp_path / "b" / "train_log.csv").read_text().splitlines()) == 2  # epoch 1 kept
    train_hybrid(phantoms[:10], phantoms[10:], cfg, tmp_path / "b", progress=False)
    a, b = HybridModel.load(run).net.state_dict(), HybridModel.load(tmp_path / "b").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FlipsegError, match="differs in: mode"):
        train_hybrid(phantoms[:10], [], HybridConfig(**{**TINY, "mode": "weak-only"}), tmp_path / "b")


@pytest.mark.parametrize("mode", ["strong-only", "weak-only", "vanilla-hybrid"])
def test_baseline_modes_train_a_single_decoder(tmp_path, phantoms, mode):
    cfg = HybridConfig(**{**TINY, "mode": mode, "epochs": 1})
    model = HybridModel.load(train_hybrid(phantoms[:8], [], cfg, tmp_path / mode, progress=False))
    assert model.net.aux_decoder is None
    assert model.predict(phantoms[0]["image"]).shape == (40, 48)


def test_no_strong_image_is_a_one_line_error(tmp_path, phantoms):
    boxes_only = [{k: v for k, v in s.items() if k != "mask"} for s in phantoms[:6]]
    with pytest.raises(FlipsegError, match="no strong") as info:
        train_hybrid(boxes_only, [], HybridConfig(**TINY), tmp_path / "x", progress=False)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- prediction
def test_prediction_is_at_the_image_resolution_and_ignores_the_box(trained_run, phantoms):
    run, _ = trained_run
    model = HybridModel.load(run)
    images = [phantoms[0]["image"], np.zeros((50, 30), np.float32), phantoms[1]["image"][:33]]
    masks = model.predict_many(images, batch_size=2)
    assert [m.shape for m in masks] == [(40, 48), (50, 30), (33, 48)]
    assert all(m.dtype == bool for m in masks)
    for im, m in zip(images, masks):
        np.testing.assert_array_equal(model.predict(im), m)
    probs = model.probabilities(images[:1])[0]
    np.testing.assert_array_equal(probs > model.cfg.threshold, masks[0])
    seg = get_segmenter("hybrid", model=str(run))
    assert isinstance(seg, HybridSegmenter) and seg.dims == (2,)
    a = seg.segment(images[0], Box(0, 0, 5, 5))
    b = seg.segment_many([images[0]], [Box(10, 10, 40, 30)])[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FlipsegError, match="--model RUN"):
        HybridSegmenter()
    with pytest.raises(FlipsegError, match="2D"):
        model.predict(np.zeros((4, 8, 8)))
    with pytest.raises(FlipsegError, match="model not found"):
        HybridModel.load(run / "missing")


# ----------------------------------------------------------------------- CLI
def test_cli_trains_resumes_and_reports_user_mistakes(tmp_path, recipe_cli):
    cli = recipe_cli("hybrid", add_hybrid_args, train_hybrid_cli)
    out = tmp_path / "cli"
    tiny = ["--dataset", "phantom2d", "--data-opt", "n=8", "--data-opt", "shape=32,40", "--out", str(out),
            "--no-progress", "--set", "input_size=32", "--set", "epochs=1", "--set", "batch_size=4",
            "--set", "num_threads=1", "--set", "ppa_kernel=5"]
    assert cli([*tiny, "--strong-fraction", "0.5"]) == 0
    assert (out / "hybrid_model.safetensors").exists() and (out / "data.json").exists()
    assert HybridModel.load(out).cfg.strong_fraction == 0.5
    assert cli(tiny) == 0  # re-run: resumes with the saved config
    assert len((out / "train_log.csv").read_text().splitlines()) == 2
    errors = {
        "unknown dataset 'mnist'": ["--dataset", "mnist"],
        "give --dataset": [],
        r"--strong-fraction must be in \(0, 1\], got 1.5": ["--dataset", "bus-bra",
                                                            "--strong-fraction", "1.5"],
        "unknown --mode 'semi'": ["--dataset", "bus-bra", "--mode", "semi"],
        "unknown hybrid option 'epoch'": ["--dataset", "phantom2d", "--set", "epoch=3"],
        "invalid hybrid option encoder|unknown hybrid encoder 'vgg'": ["--dataset", "phantom2d", "--set",
                                                                      "encoder=vgg"],
        "no official folds": ["--dataset", "phantom2d", "--fold", "2"],
        "differs in: strong_fraction": [*tiny, "--strong-fraction", "0.25"],
    }
    cli.expect_errors(errors)


def test_parser_and_package_do_not_import_torch():
    code = ("import sys, argparse\n"
            "import flipseg.methods.hybrid\n"
            "from flipseg.methods.hybrid.cli import add_hybrid_args\n"
            "p = argparse.ArgumentParser()\n"
            "add_hybrid_args(p.add_subparsers(dest='recipe').add_parser('hybrid'))\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
