"""Dataset registry, default data roots and error messages."""

import json
from pathlib import Path

import numpy as np
import pytest

import flipseg.data as fd
from flipseg.boxes import Box
from flipseg.data import DATASETS, default_data_root, load_dataset
from flipseg.errors import FlipsegError

DATA = Path(__file__).parents[2].parent / "shared" / "data"


def test_names():
    assert DATASETS.names() == ["bus-bra", "busi", "coco", "datalist", "folder", "phantom2d",
                              "phantom3d", "samples", "stu"]
    for name in fd.__all__:
        assert hasattr(fd, name)


def test_samples_and_phantoms():
    assert len(load_dataset("samples")) == 10
    ph = load_dataset("phantom2d", n=3, seed=2, shape=(64, 64))
    assert [s["image"].shape for s in ph] == [(64, 64)] * 3


def test_phantom3d_one_sample_per_lesion():
    ph = load_dataset("phantom3d", n=2, seed=1, shape=(20, 40, 40))
    volumes = {s["patient_id"] for s in ph}
    assert volumes == {"phantom3d-1-0", "phantom3d-1-1"}
    for s in ph:
        assert s["image"].shape == s["mask"].shape == (20, 40, 40)
        assert s["spacing"] == (2.0, 0.5, 0.5)
        assert s["box"] == Box.from_mask(s["mask"]) and s["box"].ndim == 3
        assert s["case_id"].startswith(s["patient_id"] + "#")
    first = [s for s in ph if s["patient_id"] == "phantom3d-1-0"]
    assert all(s["image"] is first[0]["image"] for s in first)  # one shared volume
    assert not (first[0]["mask"] & first[-1]["mask"]).any() or len(first) == 1


def test_errors():
    with pytest.raises(FlipsegError, match="choose one of: bus-bra, busi"):
        load_dataset("nope")
    with pytest.raises(FlipsegError, match="has no option .colour.; options: .*n, posterior, seed"):
        load_dataset("phantom2d", colour=1)
    with pytest.raises(FlipsegError, match="no official folds"):
        load_dataset("samples", part="test")
    with pytest.raises(FlipsegError, match="takes no root"):
        load_dataset("samples", "/tmp")
    with pytest.raises(FlipsegError, match="needs a root folder"):
        load_dataset("folder")
    with pytest.raises(FlipsegError, match="dataset folder not found: /no/such/dir"):
        load_dataset("busi", "/no/such/dir")


def test_default_root_env_and_missing(tmp_path, monkeypatch):
    (tmp_path / "data" / "BUS-BRA").mkdir(parents=True)
    monkeypatch.setenv("FLIPSEG_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert default_data_root("bus-bra") == tmp_path / "data" / "BUS-BRA"
    with pytest.raises(FlipsegError, match=f"dataset folder not found: {tmp_path}/data/BUSI"):
        default_data_root("busi")
    monkeypatch.delenv("FLIPSEG_DATA")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "BUSI").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")  # found two levels up
    assert default_data_root("busi") == tmp_path / "shared" / "data" / "BUSI"
    with pytest.raises(FlipsegError, match="no default folder"):
        default_data_root("stu")


@pytest.mark.skipif(not (DATA / "BUS-BRA").is_dir(), reason=f"real data not found at {DATA}")
def test_bus_bra_from_default_root(monkeypatch):
    monkeypatch.delenv("FLIPSEG_DATA", raising=False)
    monkeypatch.chdir(DATA.parent)  # ./shared/data
    errors: list = []
    samples = load_dataset("bus-bra", fold=5, part="test", cv="10", errors=errors)
    assert len(samples) == 184 and errors == []


def _cv_manifest(tmp_path, n=20):
    """``n`` small images, two per patient, as a manifest."""
    from PIL import Image

    entries = []
    for i in range(n):
        Image.fromarray(np.full((16, 16), i * 10, np.uint8)).save(tmp_path / f"im{i}.png")
        entries.append({"image": f"im{i}.png", "box": [2, 2, 10, 10], "case_id": f"c{i}",
                        "patient_id": f"p{i // 2}"})
    (tmp_path / "manifest.json").write_text(json.dumps(entries))
    return tmp_path


def test_cv_folds_for_datasets_without_official_ones(tmp_path):
    root = _cv_manifest(tmp_path)
    every = [s["case_id"] for s in load_dataset("folder", root)]
    tests = [[s["case_id"] for s in load_dataset("folder", root, fold=k, part="test", cv=4)]
             for k in range(1, 5)]
    assert sorted(sum(tests, [])) == sorted(every)  # the folds partition the dataset
    assert all(4 <= len(t) <= 6 for t in tests)
    for k, test in enumerate(tests, start=1):
        train = [s["case_id"] for s in load_dataset("folder", root, fold=k, part="train", cv=4)]
        assert sorted(train + test) == sorted(every) and not set(train) & set(test)
        val = [s["case_id"] for s in load_dataset("folder", root, fold=k, part="val", cv=4)]
        assert val and set(val) <= set(train)
        # no patient on both sides, and the same files give the same folds
        assert not {int(c[1:]) // 2 for c in train} & {int(c[1:]) // 2 for c in test}
        assert test == [s["case_id"] for s in load_dataset("folder", root, fold=k, part="test",
                                                            cv=4)]
    assert len(load_dataset("folder", root, fold=2, part="all", cv=4)) == len(every)
    with pytest.raises(FlipsegError, match="between 1 and 4"):
        load_dataset("folder", root, fold=5, part="test", cv=4)
    with pytest.raises(FlipsegError, match="needs a fold"):
        load_dataset("folder", root, part="test")
    with pytest.raises(FlipsegError, match="at least 2 folds"):
        load_dataset("folder", root, fold=1, part="test", cv=1)
    with pytest.raises(FlipsegError, match="whole number"):
        load_dataset("folder", root, fold=1, part="test", cv="two")
