import json

import numpy as np
import pytest
import torch

from flipseg.data.phantoms import make_phantom_2d
from flipseg.errors import FlipsegError
from flipseg.methods.flip.classifier import (
    ClassifierConfig,
    FlipClassifier,
    load_classifier,
    train_classifier,
    write_finished_classifier,
)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom_2d(s, shape=(80, 80)) for s in range(10)]


def _cfg(**kw):
    base = dict(input_size=24, batch_size=16, positives=2, negatives=2, superpixels=30)
    return ClassifierConfig(**(base | kw))


def _weights(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def test_one_epoch_writes_files_and_resumes(phantoms, tmp_path):
    train, val = phantoms[:8], phantoms[8:]
    model, report = train_classifier(train, val, _cfg(epochs=1), tmp_path, progress=False)
    assert isinstance(model, FlipClassifier)
    for name in ("classifier.pt", "classifier.safetensors", "classifier_config.json",
                 "classifier_report.json"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "classifier_report.json").read_text())
    assert set(saved["validation"]) >= {"accuracy", "precision", "recall", "f1", "auc"}
    assert json.loads((tmp_path / "classifier_config.json").read_text())["dims"] == 2
    assert len(report["history"]) == 1 and report["n_train_boxes"] == 8
    first = report["history"][0]

    # a "killed" run restarted with more epochs continues at epoch 2
    model2, report2 = train_classifier(train, val, _cfg(epochs=2), tmp_path, progress=False)
    assert [r["epoch"] for r in report2["history"]] == [1, 2]
    assert report2["history"][0] == first  # epoch 1 was not run again
    assert torch.load(tmp_path / "classifier.pt", weights_only=True)["epoch"] == 2

    # ... and ends where an uninterrupted 2-epoch run ends
    straight, _ = train_classifier(train, val, _cfg(epochs=2), tmp_path / "b", progress=False)
    w_resumed, w_straight = _weights(model2), _weights(straight)
    assert all(torch.equal(w_resumed[k], w_straight[k]) for k in w_resumed)

    loaded = load_classifier(tmp_path)
    x = torch.rand(5, 1, 24, 24)
    s = loaded.normal_score(x)
    assert s.shape == (5,) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert torch.allclose(s, model2.scorer()(x), atol=1e-6)

    with pytest.raises(FlipsegError, match="lr"):
        train_classifier(train, val, _cfg(epochs=3, lr=0.5), tmp_path, progress=False)


def test_same_seed_same_weights(phantoms, tmp_path):
    train = phantoms[:4]
    a, _ = train_classifier(train, [], _cfg(epochs=1), tmp_path / "a", progress=False)
    b, rep = train_classifier(train, [], _cfg(epochs=1), tmp_path / "b", progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert rep["validation"] is None
    c, _ = train_classifier(train, [], _cfg(epochs=1, seed=1), tmp_path / "c", progress=False)
    wc = _weights(c)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_score_boxes_and_bad_inputs(phantoms, tmp_path):
    model, _ = train_classifier(phantoms[:2], [], _cfg(epochs=0), tmp_path, progress=False)
    s = model.score_boxes([p["image"] for p in phantoms[:3]], [p["box"] for p in phantoms[:3]])
    assert s.shape == (3,) and np.all((s >= 0) & (s <= 1))
    with pytest.raises(FlipsegError, match="fill_prob"):
        ClassifierConfig(fill_prob=1.5)
    with pytest.raises(FlipsegError, match="not found"):
        load_classifier(tmp_path / "missing.pt")


def test_a_bundled_classifier_is_written_as_a_finished_run(phantoms, tmp_path):
    """The classifier a Flip model file carries becomes a run folder that training loads as is."""
    trained, _ = train_classifier(phantoms[:4], [], _cfg(epochs=1, dims=2), tmp_path / "a", progress=False)
    bundle = {"config": trained.config.to_dict(), "state_dict": trained.network.state_dict()}
    out = write_finished_classifier(bundle, tmp_path / "shared")
    assert json.loads((out / "classifier_config.json").read_text()) == trained.config.to_dict()
    again, report = train_classifier(phantoms[:4], [], trained.config, out, progress=False)
    assert report["history"] == []  # nothing trained: the run is finished at its epochs
    w0, w1 = _weights(trained), _weights(again)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
