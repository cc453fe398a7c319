"""cam-mt (paper 002): Algorithm 1, the selection rule, Mean Teacher pieces, engines, tiny runs."""

import argparse
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.boxes import Box
from flipseg.bundles import save_bundle
from flipseg.data import phantom_dataset_2d, write_png
from flipseg.errors import FlipsegError
from flipseg.methods.cam_mt import (
    CamClassifier,
    CamClassifierConfig,
    CamMTConfig,
    CamMTModel,
    MeanTeacherConfig,
    SamSegmenter,
    SelectionConfig,
    compute_cams,
    make_engine,
    normalize_cam,
    roi_from_cam,
    rois_agree,
    run_cam_mt,
    select_image,
    top_percent_threshold,
)
from flipseg.methods.cam_mt.cams import TUMOR, cam_classifier_loss
from flipseg.methods.cam_mt.cli import add_cam_mt_args, resolve_config, train_cam_mt_cli
from flipseg.methods.cam_mt.config import apply_overrides
from flipseg.methods.cam_mt.mean_teacher import (
    consistency_weight,
    ema_decay_at,
    ema_update,
    mean_teacher_loss,
    sigmoid_rampup,
    soft_dice_loss,
    train_mean_teacher,
)


# ---------------------------------------------------------------- fixtures
def _samples(n_tumor=6, n_normal=4, size=64, seed=3):
    """Phantoms; the last ``n_normal`` get their lesion blanked with background texture."""
    out = phantom_dataset_2d(n_tumor + n_normal, seed, shape=(size, size))
    rng = np.random.default_rng(seed)
    for s in out[n_tumor:]:
        img = s["image"].copy()
        img[s["mask"]] = rng.choice(img[~s["mask"]], size=int(s["mask"].sum()))
        s.update(image=img, mask=np.zeros_like(s["mask"]), box=None, label="normal")
    for i, s in enumerate(out[:n_tumor]):
        s["label"] = "malignant" if i % 3 == 2 else "benign"
    return out


def _tiny_cfg(**mt) -> CamMTConfig:
    return CamMTConfig(
        classifier=CamClassifierConfig(widths=(4, 8), input_size=32, epochs=1, batch_size=4),
        selection=SelectionConfig(iou_threshold=0.0),
        mean_teacher=MeanTeacherConfig(image_size=32, channels=(4, 8), epochs=1, batch_size=4,
                                       labeled_batch_size=2, **mt),
        engine="ellipse",
    )


# ------------------------------------------------------------- Algorithm 1
def _hand_cam():
    cam = np.zeros((20, 20), np.uint8)  # 400 pixels: 1% = 4, 2.5% = 10
    cam[5:7, 5:7] = 255  # 4 pixels at the top level
    cam[7, 5:11] = 200  # 6 more just below
    return cam


def test_algorithm1_threshold_and_rois_on_a_hand_made_cam():
    cam = _hand_cam()
    assert top_percent_threshold(cam, 1.0) == 201  # C(201) = 4 <= 4, C(200) = 10 > 4
    assert top_percent_threshold(cam, 2.5) == 1  # C(1) = 10 <= 10, C(0) = 400
    assert top_percent_threshold(cam, 100) == 0
    assert roi_from_cam(cam, 1.0) == Box(5, 5, 7, 7)
    assert roi_from_cam(cam, 2.5) == Box(5, 5, 11, 8)
    sel = select_image(cam)  # 4 / 18 overlap: rejected
    assert (sel.threshold1, sel.threshold2) == (1, 201)
    assert sel.roi1 == Box(5, 5, 11, 8) and sel.roi2 == Box(5, 5, 7, 7)
    assert sel.iou == pytest.approx(4 / 18) and not sel.selected
    # a compact blob: both ROIs nearly the same box -> kept
    blob = np.zeros((20, 20))
    blob[8:12, 8:12] = 250
    blob[9:11, 9:11] = 255
    assert select_image(blob).selected


def test_algorithm1_edge_cases():
    flat_peak = np.zeros((10, 10), np.uint8)
    flat_peak[:5] = 255  # half the map at the top level: more than any alpha% -> T = 255
    assert top_percent_threshold(flat_peak, 2.5) == 255
    assert roi_from_cam(flat_peak, 2.5) == Box(0, 0, 10, 5)
    assert roi_from_cam(np.zeros((8, 8), np.uint8), 2.5) is None  # constant map: no ROI
    assert not select_image(np.ones((8, 8))).selected
    # the paper's upper bound 250 drops the peak itself
    assert roi_from_cam(_hand_cam(), 1.0, upper=250) is None
    # largest region vs all selected pixels
    two = np.zeros((20, 20), np.uint8)
    two[2:4, 2:5] = 255  # 6 pixels
    two[15:17, 15:17] = 255  # 4 pixels
    assert roi_from_cam(two, 2.5, mode="largest") == Box(2, 2, 5, 4)
    assert roi_from_cam(two, 2.5, mode="all") == Box(2, 2, 17, 17)
    with pytest.raises(FlipsegError, match="alpha"):
        top_percent_threshold(two, 0)
    with pytest.raises(FlipsegError, match="0-255"):
        top_percent_threshold(two.astype(float) + 0.5, 1.0)
    assert normalize_cam(np.array([[0.0, 0.5], [1.0, 0.25]])).tolist() == [[0, 128], [255, 64]]


def test_selection_rule_is_a_strict_iou_threshold():
    a = Box(0, 0, 10, 10)
    assert not rois_agree(a, Box(0, 0, 10, 7), 0.7)  # IoU exactly 0.7
    assert rois_agree(a, Box(0, 0, 10, 8), 0.7)  # 0.8
    assert not rois_agree(a, None) and not rois_agree(None, a)


# ---------------------------------------------------------- Mean Teacher
def test_ema_update_and_decay_warmup():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    student.register_buffer("stat", torch.tensor([5.0]))
    teacher.register_buffer("stat", torch.tensor([1.0]))
    expect = 0.9 * teacher.weight.detach().clone() + 0.1 * student.weight.detach()
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, expect)
    assert float(teacher.stat) == 5.0  # buffers are copied
    assert ema_decay_at(0, 0.99) == 0.0  # the first step copies the student
    assert ema_decay_at(9, 0.99) == pytest.approx(0.9)
    assert ema_decay_at(10_000, 0.99) == 0.99


def test_consistency_rampup_schedule():
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(5, 5) == 1.0 and sigmoid_rampup(50, 5) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0
    vals = [sigmoid_rampup(t, 8) for t in np.linspace(0, 8, 17)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    cfg = MeanTeacherConfig(consistency_weight=0.4, rampup_epochs=4)
    assert consistency_weight(4, cfg) == pytest.approx(0.4)
    assert consistency_weight(0, cfg) == pytest.approx(0.4 * math.exp(-5))
    assert consistency_weight(4, MeanTeacherConfig(supervised=True)) == 0.0


def test_loss_composition_on_hand_made_tensors():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # 4 tumor pixels of 16
    student = torch.zeros(2, 2, 4, 4)  # softmax 0.5 everywhere
    teacher = torch.zeros(2, 2, 4, 4)
    teacher[:, 1] = math.log(3.0)  # softmax [0.25, 0.75]
    # Dice of p = 0.5 against 4 of 16 pixels: 2 * 2 / (8 + 4)
    dice = 1 - (2 * 2 + 1e-5) / (8 + 4 + 1e-5)
    assert float(soft_dice_loss(torch.full((1, 4, 4), 0.5), target)) == pytest.approx(dice)
    loss, parts = mean_teacher_loss(student, teacher, target, beta=0.3)
    expected = 0.5 * (math.log(2) + dice) + 0.3 * 0.0625
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == pytest.approx(math.log(2), rel=1e-5) and parts["mse"] == pytest.approx(0.0625)
    # only the labelled images enter CE + Dice; no teacher -> no consistency
    loss_sup, parts_sup = mean_teacher_loss(student, None, target, beta=0.3)
    assert float(loss_sup) == pytest.approx(0.5 * (math.log(2) + dice), rel=1e-5)
    assert parts_sup["mse"] == 0.0
    # unlabelled only: just the consistency term
    loss_u, _ = mean_teacher_loss(student, teacher, target[:0], beta=2.0)
    assert float(loss_u) == pytest.approx(2.0 * 0.0625)


# ------------------------------------------------------------- classifier
@pytest.mark.parametrize("variant", ["cam", "amr"])
def test_cam_classifier_shapes_and_maps(variant):
    torch.manual_seed(0)
    cfg = CamClassifierConfig(variant=variant, widths=(4, 8, 8), input_size=32)
    model = CamClassifier(cfg).eval()
    x = torch.rand(3, 1, 32, 32)
    assert model(x).shape == (3, 2)
    outs = model.branch_outputs(x)
    assert len(outs) == (2 if variant == "amr" else 1)
    assert outs[0][1].shape == (3, 8, 8)  # two stride-2 blocks, the last at stride 1
    loss, parts = cam_classifier_loss(outs, torch.tensor([TUMOR, 1, TUMOR]), cam_loss_weight=0.5)
    assert loss.item() > 0 and (parts["cam_l1"] > 0) == (variant == "amr")
    images = [np.random.default_rng(1).uniform(0, 255, (40, 50)).astype(np.float32)] * 2
    for method in ("cam", "gradcam"):
        maps = compute_cams(model, images, method=method)
        assert [m.shape for m in maps] == [(40, 50)] * 2
        assert all(0 <= m.min() and m.max() <= 1 for m in maps)


# ---------------------------------------------------------------- engines
def test_engine_plumbing_ellipse_and_errors():
    img = np.full((40, 50), 100, np.float32)
    box = Box(10, 5, 30, 25)
    eng = make_engine("ellipse")
    assert np.array_equal(eng.segment_many([img], [box])[0], inscribed_ellipse(img, box))
    with pytest.raises(FlipsegError, match="unknown method"):
        make_engine("no-such-engine")
    with pytest.raises(FlipsegError, match="sam-checkpoint"):
        make_engine("sam")
    with pytest.raises(FlipsegError, match="only used by the 'sam' engine"):
        make_engine("ellipse", sam_checkpoint="x.pth")


def test_sam_engine_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(FlipsegError, match="pip install segment-anything"):
        make_engine("sam", sam_checkpoint=ckpt)
    with pytest.raises(FlipsegError, match="not found"):
        make_engine("sam", sam_checkpoint=tmp_path / "missing.pth")


class _FakePredictor:
    """Same interface as segment_anything.SamPredictor: fills the prompted box."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.shape = image.shape[:2]

    def predict(self, *, box, multimask_output):
        self.calls.append((box.tolist(), multimask_output))
        x0, y0, x1, y1 = (int(v) for v in box)
        masks = np.zeros((3 if multimask_output else 1, *self.shape), bool)
        masks[:, y0:y1, x0:x1] = True
        masks[0, y0, x0] = False  # the first mask differs from the others
        return masks, np.array([0.1, 0.9, 0.5][: len(masks)]), None


def test_sam_adapter_with_a_fake_predictor():
    pred = _FakePredictor()
    seg = SamSegmenter(predictor=pred)
    img = np.random.default_rng(0).uniform(0, 255, (30, 40)).astype(np.float32)
    m = seg.segment(img, Box(3, 4, 20, 15))
    assert pred.calls == [([3.0, 4.0, 20.0, 15.0], False)]
    assert m.dtype == bool and m.shape == (30, 40) and m.sum() == 17 * 11 - 1
    best = SamSegmenter(predictor=pred, multimask=True).segment(img, Box(3, 4, 20, 15))
    assert best.sum() == 17 * 11  # the best-scored mask (index 1)
    with pytest.raises(FlipsegError, match="outside"):
        seg.segment(img, Box(50, 50, 60, 60))


@pytest.fixture
def segment_anything_module(monkeypatch):
    """The real package; torchvision (its undeclared dependency, absent with a CPU-only
    torch from PyPI) is replaced by a two-function stand-in when it is missing."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch
        import types

        from PIL import Image

        def module(name, **attrs):
            mod = types.ModuleType(name)
            mod.__path__ = []  # a package, so submodules can be found in sys.modules
            mod.__dict__.update(attrs)
            monkeypatch.setitem(sys.modules, name, mod)
            return mod

        def unused(*_args, **_kwargs):
            raise NotImplementedError("torchvision stand-in")

        fn = module("torchvision.transforms.functional",
                    to_pil_image=lambda a: Image.fromarray(np.asarray(a)),
                    resize=lambda im, size: im.resize((size[1], size[0]), Image.BILINEAR))
        boxes = module("torchvision.ops.boxes", batched_nms=unused, box_area=unused)
        module("torchvision", transforms=module("torchvision.transforms", functional=fn),
               ops=module("torchvision.ops", boxes=boxes))
    before = set(sys.modules)
    sam = pytest.importorskip("segment_anything")
    yield sam
    for name in set(sys.modules) - before:  # no module keeps the stand-in past this test
        if name.startswith("segment_anything"):
            monkeypatch.delitem(sys.modules, name, raising=False)


def _tiny_sam(sam):
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    dim, size, patch = 16, 64, 16
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=32, depth=1, num_heads=2,
                                      out_chans=dim, window_size=0, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=1,
                                 iou_head_hidden_dim=8,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=16,
                                                               num_heads=2)),
    ).eval()


def test_sam_adapter_with_a_tiny_random_segment_anything(segment_anything_module, tmp_path):
    from flipseg.methods.cam_mt.engines import load_sam_model

    model = _tiny_sam(segment_anything_module)
    ckpt = tmp_path / "tiny_sam.pth"
    torch.save(model.state_dict(), ckpt)
    loaded = load_sam_model(ckpt, builder=lambda: _tiny_sam(segment_anything_module))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    seg = SamSegmenter(model=loaded, multimask=True)
    img = np.random.default_rng(0).uniform(0, 255, (48, 80)).astype(np.float32)
    masks = seg.segment_many([img, img], [Box(10, 5, 40, 30), Box(50, 20, 70, 40)])
    assert [m.shape for m in masks] == [(48, 80)] * 2 and all(m.dtype == bool for m in masks)
    with pytest.raises(FlipsegError, match="do not fit"):
        load_sam_model(ckpt, builder=lambda: torch.nn.Linear(2, 2))


# --------------------------------------------------------------- end to end
def test_end_to_end_run_resumes_and_predicts(tmp_path):
    train, test = _samples(), _samples(3, 1, seed=9)
    cfg = _tiny_cfg()
    summary = run_cam_mt(train, cfg, tmp_path / "run", test_samples=test, progress=False)
    assert summary["n_tumor"] == 6 and summary["n_selected"] + summary["n_unselected"] == 6
    assert summary["n_selected"] >= 1 and set(summary["test"]) >= {"tumor_iou", "background_iou", "miou"}
    for f in ("config.json", "selection.csv", "pseudo_masks.npz", "classifier/cam_classifier.safetensors",
              "mean_teacher/mt_checkpoint.pt", "mean_teacher/train_log.csv", "metrics.json"):
        assert (tmp_path / "run" / f).exists(), f
    # resume: one more epoch of each stage continues from the checkpoints
    cfg2 = apply_overrides(cfg, ["classifier.epochs=2", "mean_teacher.epochs=2"])
    run_cam_mt(train, cfg2, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "mean_teacher" / "mt_checkpoint.pt", weights_only=False)
    assert [r["epoch"] for r in state["log"]] == [1, 2] and state["step"] == 2 * math.ceil(6 / 4)
    model = CamMTModel.load(tmp_path / "run")
    masks = model.predict([s["image"] for s in test])
    assert [m.shape for m in masks] == [(64, 64)] * 4 and all(m.dtype == bool for m in masks)
    assert model.network() is model.teacher and model.network("student") is model.student


def test_supervised_mode_ignores_unlabelled_images(tmp_path):
    data = _samples(4, 0)
    cfg = MeanTeacherConfig(image_size=32, channels=(4, 8), epochs=1, batch_size=2, supervised=True)
    train_mean_teacher([s["image"] for s in data], [s["mask"] for s in data], [data[0]["image"]] * 10,
                       cfg, tmp_path, progress=False)
    log = torch.load(tmp_path / "mt_checkpoint.pt", weights_only=False)["log"]
    assert log[0]["mse"] == 0.0 and log[0]["beta"] == 0.0 and log[0]["loss"] > 0
    with pytest.raises(FlipsegError, match="at least one labelled"):
        train_mean_teacher([], [], [data[0]["image"]], cfg, tmp_path / "x", progress=False)


def test_config_overrides_and_cli(tmp_path):
    cfg = apply_overrides(CamMTConfig(), ["classifier.variant=cam", "selection.alpha1=3",
                                          "mean_teacher.channels=8,16", "engine=grabcut"])
    assert (cfg.classifier.variant, cfg.selection.alpha1, cfg.mean_teacher.channels, cfg.engine) == (
        "cam", 3.0, (8, 16), "grabcut")
    with pytest.raises(FlipsegError, match="unknown"):
        apply_overrides(cfg, ["classifier.nope=1"])
    with pytest.raises(FlipsegError, match="invalid selection option"):
        apply_overrides(cfg, ["selection.roi_mode=box"])
    # a tiny BUSI folder from phantoms, then the `train cam-mt` command end to end
    root = tmp_path / "BUSI"
    for s in _samples(6, 4) + _samples(2, 1, seed=11):
        folder = root / s["label"]
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.glob("*_mask.png"))) + 1
        write_png(folder / f"{s['label']} ({n}).png", s["image"].astype(np.uint8))
        write_png(folder / f"{s['label']} ({n})_mask.png", s["mask"])
    parser = argparse.ArgumentParser()
    add_cam_mt_args(parser.add_subparsers(dest="recipe").add_parser("cam-mt"))
    sets = ["classifier.widths=4,8", "classifier.input_size=32", "classifier.epochs=1",
            "selection.iou_threshold=0", "mean_teacher.image_size=32", "mean_teacher.channels=4,8",
            "mean_teacher.epochs=1", "mean_teacher.batch_size=4", "mean_teacher.labeled_batch_size=2"]
    argv = ["cam-mt", "--data-root", str(root), "--engine", "box", "--out", str(tmp_path / "run"),
            "--no-progress"] + [f"--set={s}" for s in sets]
    args = parser.parse_args(argv)
    assert args.recipe == "cam-mt"
    assert train_cam_mt_cli(args) == 0
    assert (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "split.json").exists()
    saved = resolve_config(parser.parse_args(["cam-mt", "--out", str(tmp_path / "run")]))
    assert saved.engine == "box" and saved.classifier.input_size == 32  # a re-run resumes as it was
    with pytest.raises(FlipsegError, match="needs --sam-checkpoint"):
        resolve_config(parser.parse_args(["cam-mt", "--out", str(tmp_path / "o"), "--engine", "sam"]))
    with pytest.raises(FlipsegError, match="for --engine sam"):
        resolve_config(parser.parse_args(["cam-mt", "--out", str(tmp_path / "o"), "--engine", "flip",
                                          "--sam-checkpoint", "x.pth"]))


def test_cam_is_the_class_weighted_feature_sum():
    torch.manual_seed(0)
    model = CamClassifier(CamClassifierConfig(variant="cam", widths=(4, 6), input_size=16,
                                              pooling="avg")).eval()
    x = torch.rand(2, 1, 16, 16)
    logits, cam = model.spotlight.forward_with_cam(x)
    feats = model.spotlight.features(x)
    expect = F.relu((feats * model.spotlight.fc.weight[TUMOR][None, :, None, None]).sum(1))
    assert torch.allclose(cam, expect, atol=1e-6)
    # the pooled logit is the mean of the unrectified map plus the bias
    raw = (feats * model.spotlight.fc.weight[TUMOR][None, :, None, None]).sum(1)
    assert torch.allclose(logits[:, TUMOR], raw.mean((1, 2)) + model.spotlight.fc.bias[TUMOR], atol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "lse"])
def test_pooled_logits_follow_the_location_scores(pooling):
    torch.manual_seed(0)
    cfg = CamClassifierConfig(variant="cam", widths=(4, 6), input_size=16, pooling=pooling, lse_r=3.0)
    model = CamClassifier(cfg).eval()
    x = torch.rand(2, 1, 16, 16)
    logits, cam = model.spotlight.forward_with_cam(x)
    feats = model.spotlight.features(x)
    w, b = model.spotlight.fc.weight, model.spotlight.fc.bias
    scores = torch.einsum("bchw,kc->bkhw", feats, w).flatten(2)  # [B, 2, h*w]
    if pooling == "max":
        expect = scores.amax(-1) + b
    else:
        expect = torch.log(torch.exp(3.0 * scores).mean(-1)) / 3.0 + b
    assert torch.allclose(logits, expect, atol=1e-5)
    assert torch.allclose(model(x), logits, atol=1e-6)
    # the CAM is still the rectified tumor score map
    assert torch.allclose(cam, F.relu(scores[:, TUMOR].reshape(cam.shape)), atol=1e-5)
    # lse lies between the average and the maximum
    if pooling == "lse":
        assert torch.all(logits - b <= scores.amax(-1) + 1e-5)
        assert torch.all(logits - b >= scores.mean(-1) - 1e-5)


def test_deeper_compact_blocks_keep_the_grid():
    shallow = CamClassifier(CamClassifierConfig(variant="cam", widths=(4, 8, 8), input_size=32))
    deep = CamClassifier(CamClassifierConfig(variant="cam", widths=(4, 8, 8), input_size=32,
                                             convs_per_block=2))
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in n.spotlight.features.modules())
             for n in (shallow, deep)]
    assert convs == [3, 6]
    x = torch.rand(1, 1, 32, 32)
    assert deep.spotlight.forward_with_cam(x)[1].shape == shallow.spotlight.forward_with_cam(x)[1].shape


def test_augment_classifier_batch_is_seeded_and_in_range():
    from flipseg.methods.cam_mt.cams import augment_classifier_batch

    x = torch.rand(4, 1, 24, 24)
    a = augment_classifier_batch(x, torch.Generator().manual_seed(3))
    b = augment_classifier_batch(x, torch.Generator().manual_seed(3))
    c = augment_classifier_batch(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_classifier_saved_before_the_new_options_loads_as_trained(tmp_path):
    from flipseg.methods.cam_mt import paper_config
    from flipseg.methods.cam_mt.cams import _FORMAT, MODEL_FILE, load_cam_classifier_model

    cfg = CamClassifierConfig(variant="cam", widths=(4, 6), input_size=16)
    model = CamClassifier(cfg)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("pooling", "convs_per_block", "augment",
                                                                 "lse_r")}
    save_bundle(tmp_path / MODEL_FILE, {"format": _FORMAT, "config": old, "state_dict": model.state_dict()})
    loaded = load_cam_classifier_model(tmp_path / MODEL_FILE)
    assert loaded.cfg.pooling == "avg" and loaded.cfg.convs_per_block == 1
    assert CamClassifierConfig().pooling == "max"  # the current default differs: the legacy value matters
    assert paper_config().classifier.pooling == "avg"


def test_pretrained_resnet_weights_load_into_both_branches(tmp_path):
    """A torchvision-named RGB ResNet18 state dict fills each branch's backbone (first
    layer summed to grey, fc ignored); files that fit nothing are one-line errors."""
    from monai.networks.nets import resnet18

    from flipseg.methods.cam_mt.cams import load_backbone_weights

    torch.manual_seed(0)
    src = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "r18.pth")
    model = CamClassifier(CamClassifierConfig(variant="amr", backbone="resnet18", input_size=32))
    n = load_backbone_weights(model, tmp_path / "r18.pth")
    assert n["loaded"] > 50 and n["skipped"] == 2  # fc.weight, fc.bias
    for branch in model.branches:
        assert torch.equal(branch.features[0].weight, src.conv1.weight.sum(1, keepdim=True))
        assert torch.equal(branch.features[7][1].conv2.weight, src.layer4[1].conv2.weight)
        assert torch.equal(branch.features[1].running_mean, src.bn1.running_mean)
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(FlipsegError, match="fits the resnet18 backbone"):
        load_backbone_weights(model, tmp_path / "other.pth")
    with pytest.raises(FlipsegError, match="not found"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    with pytest.raises(FlipsegError, match="must be a file"):
        load_backbone_weights(model, tmp_path)
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(FlipsegError, match="cannot read"):
        load_backbone_weights(model, tmp_path / "junk.pth")


def test_training_starts_from_the_given_backbone_weights(tmp_path):
    from flipseg.methods.cam_mt.cams import load_cam_classifier_model, train_cam_classifier

    torch.manual_seed(5)
    donor = CamClassifier(CamClassifierConfig(variant="cam", widths=(4, 8), input_size=32))
    torch.save(donor.spotlight.features.state_dict(), tmp_path / "w.pt")
    cfg = CamClassifierConfig(variant="cam", widths=(4, 8), input_size=32, epochs=1, batch_size=4,
                              lr=1e-9, backbone_weights=str(tmp_path / "w.pt"))
    model = load_cam_classifier_model(train_cam_classifier(_samples(), cfg, tmp_path / "c", progress=False))
    w = model.spotlight.features[0].weight
    assert torch.allclose(w, donor.spotlight.features[0].weight, atol=1e-6)
    fresh = load_cam_classifier_model(train_cam_classifier(
        _samples(), apply_overrides(CamMTConfig(classifier=cfg), ["classifier.backbone_weights="]).classifier,
        tmp_path / "c2", progress=False))
    assert not torch.allclose(fresh.spotlight.features[0].weight, w, atol=1e-3)


def test_all_empty_cams_say_the_classifier_needs_training(tmp_path, monkeypatch):
    import flipseg.methods.cam_mt.pipeline as pipeline

    monkeypatch.setattr(pipeline, "compute_cams",
                        lambda model, images, **_: [np.zeros(np.shape(im), np.float32) for im in images])
    with pytest.raises(FlipsegError, match="maps are empty on all 6 training tumor images"):
        pipeline.prepare_pseudo_labels(_samples(), _tiny_cfg(), tmp_path / "run", progress=False)


def test_classifier_run_refuses_other_options_but_may_be_extended(tmp_path):
    from flipseg.methods.cam_mt.cams import train_cam_classifier

    cfg = CamClassifierConfig(variant="cam", widths=(4, 8), input_size=32, epochs=1, batch_size=4)
    train_cam_classifier(_samples(), cfg, tmp_path / "c", progress=False)
    with pytest.raises(FlipsegError, match="differs in: pooling"):
        train_cam_classifier(_samples(), CamClassifierConfig(**{**cfg.to_dict(), "pooling": "avg"}),
                             tmp_path / "c", progress=False)
    train_cam_classifier(_samples(), CamClassifierConfig(**{**cfg.to_dict(), "epochs": 2}),
                         tmp_path / "c", progress=False)
    state = torch.load(tmp_path / "c" / "cam_checkpoint.pt", weights_only=False)
    assert [r["epoch"] for r in state["log"]] == [1, 2]
