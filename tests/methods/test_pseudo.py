"""Pseudo masks -> U-Net (paper 000, Table 4): the real-mask budget by patient, pseudo masks
from the named box -> mask segmenter, the refresh rule, resume, prediction and the CLI."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods import get_segmenter
from flipseg.methods.pseudo import (
    PseudoConfig,
    PseudoUNetModel,
    add_pseudo_args,
    budget_count,
    choose_real_masks,
    make_pseudo_masks,
    parse_budget,
    prepare_data,
    refresh_pseudo_labels,
    train_pseudo,
    train_pseudo_cli,
)
from flipseg.methods.pseudo import train as pseudo_train
from flipseg.methods.pseudo.train import box_at, label_at
from flipseg.networks.unet import build_unet

TINY = dict(input_size=32, channels=(8, 16, 32), epochs=3, refresh_every=2, batch_size=4,
            min_steps_per_epoch=2, masks_budget="3", pseudo="ellipse", num_threads=1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, phantoms):
    run = tmp_path_factory.mktemp("pseudo") / "run"
    cfg = PseudoConfig(**TINY)
    train_pseudo(phantoms, cfg, run, progress=False)
    return run, cfg


class ConstLogits(torch.nn.Module):
    """A stand-in network: the same logit everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value)


# --------------------------------------------------------------------- budget
def test_budget_strings_and_counts():
    assert parse_budget("30") == ("count", 30) and parse_budget("2.5%") == ("percent", 2.5)
    assert parse_budget(" ALL ") == ("all", 0)
    for n in (7, 40, 401):
        assert budget_count("all", n) == n
        assert budget_count("5%", n) == max(1, round(0.05 * n))
        assert budget_count(str(n), n) == n
    for bad in ("0", "-3", "abc", "0%", "101%", "nan%", "1.5", ""):
        with pytest.raises(FlipsegError, match="must be N"):
            parse_budget(bad)
    with pytest.raises(FlipsegError, match="asks for 8 masks but only 7"):
        budget_count("8", 7)


def _with_patients(samples, sizes):
    out, k = [], 0
    for p, size in enumerate(sizes):
        for _ in range(size):
            out.append(dict(samples[k], patient_id=f"patient-{p}"))
            k += 1
    return out


def test_real_masks_are_whole_patients_seeded_and_exact(phantoms):
    mixed = _with_patients(phantoms, [3, 2, 2, 1, 1, 3])
    patient_of = {s["case_id"]: s["patient_id"] for s in mixed}
    size_of = Counter(s["patient_id"] for s in mixed)
    for n in range(1, len(mixed) + 1):
        for seed in (0, 1):
            ids = choose_real_masks(mixed, str(n), seed=seed)
            assert len(ids) == len(set(ids)) == n
            assert ids == choose_real_masks(mixed, str(n), seed=seed)  # same seed, same cases
            assert ids == [s["case_id"] for s in mixed if s["case_id"] in ids]  # input order
            assert sorted(ids) == sorted(choose_real_masks(mixed[::-1], str(n), seed=seed))
            taken = Counter(patient_of[c] for c in ids)
            assert sum(taken[p] < size_of[p] for p in taken) <= 1  # at most one patient split
    # patients of two images and an even budget: every chosen patient is whole
    pairs = _with_patients(phantoms, [2] * 6)
    for seed in range(4):
        taken = Counter(s["patient_id"] for s in pairs if s["case_id"] in choose_real_masks(pairs, "4",
                                                                                           seed=seed))
        assert sorted(taken.values()) == [2, 2]
    picks = {tuple(choose_real_masks(mixed, "25%", seed=seed)) for seed in range(6)}
    assert len(picks) > 1 and all(len(p) == budget_count("25%", len(mixed)) for p in picks)
    # only images with a mask are candidates
    partly = [dict(s, mask=None) if i % 2 else s for i, s in enumerate(phantoms)]
    masked = [s["case_id"] for s in partly if s["mask"] is not None]
    assert choose_real_masks(partly, "all") == masked
    assert set(choose_real_masks(partly, "3", seed=5)) <= set(masked)
    with pytest.raises(FlipsegError, match="only 6 training images"):
        choose_real_masks(partly, "7")


# --------------------------------------------------------------- pseudo masks
def test_pseudo_masks_come_from_the_named_segmenter(tmp_path, phantoms, monkeypatch):
    some = phantoms[:5]
    by_name = {}
    for name in ("ellipse", "box"):
        masks, failed = make_pseudo_masks(some, name, cache=tmp_path / f"{name}.npz", progress=False)
        seg = get_segmenter(name)
        assert failed == [] and list(masks) == [s["case_id"] for s in some]
        for s in some:
            assert np.array_equal(masks[s["case_id"]], seg.segment(s["image"], s["box"], seed=0))
        by_name[name] = masks
    assert any(not np.array_equal(by_name["ellipse"][c], by_name["box"][c]) for c in by_name["box"])
    # a second call reads the cache instead of running the segmenter again
    def no_engine(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pseudo_train, "make_pseudo_engine", no_engine)
    again, _ = make_pseudo_masks(some[:3], "box", cache=tmp_path / "box.npz", progress=False)
    assert list(again) == [s["case_id"] for s in some[:3]]
    assert all(np.array_equal(again[c], by_name["box"][c]) for c in again)
    with pytest.raises(FlipsegError, match="was made by"):
        make_pseudo_masks(some, "ellipse", cache=tmp_path / "box.npz", progress=False)
    # training targets: real masks for the budget, the segmenter's masks for the rest
    cfg = PseudoConfig(**TINY)
    real = {some[1]["case_id"], some[3]["case_id"]}
    pseudo = {c: m for c, m in by_name["ellipse"].items() if c not in real}
    data = prepare_data(some, real, pseudo, cfg)
    for i, s in enumerate(some):
        want = s["mask"] if s["case_id"] in real else pseudo[s["case_id"]]
        assert bool(data.is_real[i]) == (s["case_id"] in real)
        assert np.array_equal(data.labels[i, 0].numpy() > 0.5, label_at(want, cfg.input_size))
        assert np.array_equal(data.boxes[i, 0].numpy(), box_at(s["box"], s["image"].shape, cfg.input_size))


def test_training_uses_the_budget_and_the_named_method(tmp_path, phantoms, trained_run):
    run, cfg = trained_run
    labels = json.loads((run / "labels.json").read_text())
    assert labels["real"] == choose_real_masks(phantoms, cfg.masks_budget, seed=cfg.seed + 1)
    assert labels["n_real"] == int(cfg.masks_budget)
    assert labels["n_pseudo"] == len(phantoms) - labels["n_real"]
    assert labels["pseudo_cases"] == sorted(set(s["case_id"] for s in phantoms) - set(labels["real"]))
    alone = tmp_path / "alone"
    train_pseudo(phantoms, PseudoConfig(**dict(TINY, pseudo="none", epochs=1)), alone, progress=False)
    alone_labels = json.loads((alone / "labels.json").read_text())
    assert alone_labels["n_pseudo"] == 0 and alone_labels["real"] == labels["real"]
    with pytest.raises(FlipsegError, match="unknown method 'no-such'"):
        train_pseudo(phantoms, PseudoConfig(**dict(TINY, pseudo="no-such")), tmp_path / "bad",
                     progress=False)


# -------------------------------------------------------------------- refresh
def test_refresh_replaces_pseudo_labels_by_the_prediction_inside_the_box(phantoms):
    cfg = PseudoConfig(**TINY)
    real = {phantoms[0]["case_id"], phantoms[4]["case_id"]}
    pseudo = {s["case_id"]: s["box"].to_mask(s["image"].shape) for s in phantoms if s["case_id"] not in real}
    data = prepare_data(phantoms, real, pseudo, cfg)
    before = data.labels.clone()
    torch.manual_seed(1)
    net = build_unet(2, 1, 1, cfg.channels)
    net.eval()
    with torch.no_grad():
        pred = (torch.sigmoid(net(data.images)) > cfg.threshold) & data.boxes
    replaced = refresh_pseudo_labels(net, data, threshold=cfg.threshold, batch_size=5)
    changed = 0
    for i in range(len(data)):
        if data.is_real[i] or not pred[i].any():
            assert torch.equal(data.labels[i], before[i])  # real masks and empty predictions stay
        else:
            assert torch.equal(data.labels[i].bool(), pred[i])
            changed += 1
    assert replaced == changed
    # everything predicted: each pseudo label becomes its box; nothing predicted: no change
    assert refresh_pseudo_labels(ConstLogits(-5.0), data) == 0
    after_empty = data.labels.clone()
    assert refresh_pseudo_labels(ConstLogits(5.0), data) == int((~data.is_real).sum())
    for i in range(len(data)):
        want = after_empty[i] if data.is_real[i] else data.boxes[i].float()
        assert torch.equal(data.labels[i], want)


def test_training_refreshes_on_schedule_and_keeps_real_masks(trained_run, phantoms):
    run, cfg = trained_run
    rows = (run / "train_log.csv").read_text().splitlines()
    head = rows[0].split(",")
    refresh = [int(r.split(",")[head.index("refresh")]) for r in rows[1:]]
    assert refresh == [int(e % cfg.refresh_every == 0 and e < cfg.epochs) for e in range(1, cfg.epochs + 1)]
    state = torch.load(run / pseudo_train.CHECKPOINT, weights_only=False)
    labels = state["labels"]
    real = set(choose_real_masks(phantoms, cfg.masks_budget, seed=cfg.seed + 1))
    for i, s in enumerate(phantoms):
        inside = box_at(s["box"], s["image"].shape, cfg.input_size)
        if s["case_id"] in real:
            assert np.array_equal(labels[i, 0].numpy() > 0, label_at(s["mask"], cfg.input_size))
        else:
            assert not (labels[i, 0].numpy().astype(bool) & ~inside).any()  # pseudo labels stay in the box


# --------------------------------------------------------------------- resume
def test_training_resumes_to_the_same_weights(tmp_path, interrupted_after, phantoms, trained_run):
    run, cfg = trained_run
    other = tmp_path / "interrupted"
    with interrupted_after(2):
        train_pseudo(phantoms, cfg, other, progress=False)
    assert len((other / "train_log.csv").read_text().splitlines()) == 3
    train_pseudo(phantoms, cfg, other, progress=False)
    a = torch.load(run / pseudo_train.CHECKPOINT, weights_only=False)
    b = torch.load(other / pseudo_train.CHECKPOINT, weights_only=False)
    assert a["epoch"] == b["epoch"] == cfg.epochs
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert torch.equal(a["labels"], b["labels"])
    assert [r["loss"] for r in a["log"]] == [r["loss"] for r in b["log"]]
    train_pseudo(phantoms, cfg, other, progress=False)  # finished: nothing more
    assert len((other / "train_log.csv").read_text().splitlines()) == cfg.epochs + 1
    with pytest.raises(FlipsegError, match="differs in: masks_budget"):
        train_pseudo(phantoms, PseudoConfig(**dict(TINY, masks_budget="4")), other, progress=False)


# -------------------------------------------------------------------- predict
def test_predict_returns_masks_at_each_image_resolution(trained_run, phantoms):
    run, cfg = trained_run
    model = PseudoUNetModel.load(run)
    assert model.meta["epoch"] == cfg.epochs and model.cfg == cfg
    rng = np.random.default_rng(0)
    images = [phantoms[0]["image"], rng.uniform(0, 255, (50, 30)).astype(np.float32),
              rng.uniform(0, 255, (70, 90)).astype(np.float32)]
    masks = model.predict_many(images, batch_size=2)
    maps = model.probability_maps(images)
    for im, m, p in zip(images, masks, maps):
        assert m.shape == p.shape == im.shape and m.dtype == bool
        assert 0 <= p.min() and p.max() <= 1
        assert not (m & (p <= cfg.threshold) & ~_holes_filled(p > cfg.threshold)).any()
    assert np.array_equal(model.predict(images[1]), masks[1])
    model.net = ConstLogits(5.0)
    assert all(m.all() for m in model.predict_many(images))
    model.net = ConstLogits(-5.0)
    assert not any(m.any() for m in model.predict_many(images))
    with pytest.raises(FlipsegError, match="2D"):
        model.predict(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(FlipsegError, match="model not found"):
        PseudoUNetModel.load(run / "missing")
    with pytest.raises(FlipsegError, match="not a flipseg pseudo-unet model"):
        PseudoUNetModel.load(run / pseudo_train.CHECKPOINT)


def _holes_filled(mask):
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask) & ~mask


def test_segmenter_ignores_the_box_unless_asked(trained_run, phantoms):
    import flipseg.methods.pseudo.model  # noqa: F401  (registers "pseudo-unet")

    run, _ = trained_run
    images = [s["image"] for s in phantoms[:3]]
    boxes = [s["box"] for s in phantoms[:3]]
    seg = get_segmenter("pseudo-unet", model=str(run))
    want = PseudoUNetModel.load(run).predict_many(images)
    got = seg.segment_many(images, boxes)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    moved = [Box(0, 0, 4, 4)] * len(images)  # any box: the whole image is segmented
    assert all(np.array_equal(a, b) for a, b in zip(seg.segment_many(images, moved), want))
    boxed = get_segmenter("pseudo-unet", model=str(run), restrict_to_box=True)
    boxed.model.net = ConstLogits(5.0)
    for im, b, m in zip(images, boxes, boxed.segment_many(images, boxes)):
        assert np.array_equal(m, b.to_mask(im.shape))
    assert np.array_equal(boxed.segment(images[0], boxes[0]), boxes[0].to_mask(images[0].shape))
    with pytest.raises(FlipsegError, match="needs a trained model"):
        get_segmenter("pseudo-unet")


# ------------------------------------------------------------------------ CLI
def test_cli_trains_resumes_and_reports_user_mistakes(tmp_path, recipe_cli):
    cli = recipe_cli("pseudo", add_pseudo_args, train_pseudo_cli)
    out = tmp_path / "cli"
    tiny = ["--dataset", "phantom2d", "--data-opt", "n=8", "--data-opt", "shape=32,40", "--out", str(out),
            "--no-progress", "--pseudo", "box", "--set", "encoder=none", "--set", "input_size=16",
            "--set", "channels=4,8",
            "--set", "epochs=1", "--set", "batch_size=4", "--set", "min_steps_per_epoch=1",
            "--set", "num_threads=1"]
    assert cli([*tiny, "--masks-budget", "25%"]) == 0
    assert (out / "pseudo_model.safetensors").exists() and (out / "data.json").exists()
    loaded = PseudoUNetModel.load(out)
    assert loaded.cfg.masks_budget == "25%" and loaded.cfg.pseudo == "box"
    assert loaded.meta["n_real"] == budget_count("25%", 8)
    assert cli(tiny) == 0  # re-run: resumes with the saved config
    assert len((out / "train_log.csv").read_text().splitlines()) == 2
    errors = {
        "unknown dataset 'mnist'": ["--dataset", "mnist"],
        "give --dataset": [],
        "masks budget 'abc' must be N": ["--dataset", "phantom2d", "--masks-budget", "abc"],
        "asks for 50 masks but only 8": ["--dataset", "phantom2d", "--data-opt", "n=8",
                                         "--masks-budget", "50", "--pseudo", "none"],
        "unknown method 'nope'": ["--dataset", "phantom2d", "--pseudo", "nope"],
        "takes no model": ["--dataset", "phantom2d", "--pseudo", "ellipse", "--pseudo-model", "x.pt"],
        "unknown pseudo option 'epochz'": ["--dataset", "phantom2d", "--set", "epochz=3"],
        "invalid pseudo option input_size=20": ["--dataset", "phantom2d", "--set", "input_size=20"],
        "no official folds": ["--dataset", "phantom2d", "--fold", "2", "--pseudo", "none"],
        "--limit must be >= 1": ["--dataset", "phantom2d", "--limit", "0"],
        "differs in: masks_budget": [*tiny, "--masks-budget", "50%"],
    }
    cli.expect_errors(errors)
