"""BUS-BRA loader on the real data, and the embedded samples."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data.busbra import load_busbra, parse_busbra_bbox
from flipseg.data.embedded import load_embedded
from flipseg.errors import FlipsegError

DATA = Path(__file__).parents[2].parent / "shared" / "data"
BUSBRA = DATA / "BUS-BRA"
needs_busbra = pytest.mark.skipif(not BUSBRA.is_dir(), reason=f"real BUS-BRA not found at {BUSBRA}")


def test_bbox_parse():
    assert parse_busbra_bbox("[91,24,103,79]") == Box(90, 23, 194, 103)
    with pytest.raises(FlipsegError, match="BBOX"):
        parse_busbra_bbox("[1,2,3]")


@pytest.fixture(scope="module")
def fold5_test():
    if not BUSBRA.is_dir():
        pytest.skip(f"real BUS-BRA not found at {BUSBRA}")
    return load_busbra(BUSBRA, fold=5, part="test")


def test_fold5_test_part(fold5_test):
    assert len(fold5_test) == 383
    assert {s["fold"] for s in fold5_test} == {5}
    # the published box, read as Box(x-1, y-1, x+w, y+h), is the mask's tight box
    assert all(s["box"] == Box.from_mask(s["mask"]) for s in fold5_test)
    s = fold5_test[0]
    assert s["case_id"] == "bus_0002-l" and s["patient_id"] == "busbra_2"
    assert s["label"] == "benign" and s["image"].dtype == np.float32 and s["mask"].dtype == bool
    assert s["device"].startswith("GE Logiq 7")


@needs_busbra
def test_fold_parts_are_patient_level():
    rows = list(csv.DictReader(open(BUSBRA / "5-fold-cv.csv")))
    assert sum(r["kFold"] == "5" for r in rows) == 383
    val = load_busbra(BUSBRA, fold=5, part="val")
    assert len(val) == sum(r["valid_5"] == "0" for r in rows) == 298
    assert all(s["fold"] != 5 for s in val)
    test10 = load_busbra(BUSBRA.parent, fold=10, part="test", cv="10")  # parent folder works too
    assert len(test10) == 181 and {s["fold"] for s in test10} == {10}
    case = {r["ID"]: r["Case"] for r in csv.DictReader(open(BUSBRA / "bus_data.csv"))}
    test_patients = {case[r["ID"]] for r in rows if r["kFold"] == "5"}
    assert not test_patients & {case[r["ID"]] for r in rows if r["kFold"] != "5"}


@pytest.fixture
def mini_busbra(tmp_path):
    """A copy of BUS-BRA's layout with three images."""
    if not BUSBRA.is_dir():
        pytest.skip(f"real BUS-BRA not found at {BUSBRA}")
    ids = {"bus_0001-l", "bus_0002-l", "bus_0845-s"}
    root = tmp_path / "BUS-BRA"
    for sub in ("Images", "Masks"):
        (root / sub).mkdir(parents=True)
    for cid in ids:
        shutil.copy(BUSBRA / "Images" / f"{cid}.png", root / "Images")
        shutil.copy(BUSBRA / "Masks" / f"mask_{cid[4:]}.png", root / "Masks")
    for name in ("bus_data.csv", "5-fold-cv.csv", "10-fold-cv.csv"):
        lines = (BUSBRA / name).read_text().splitlines()
        keep = [lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in ids]
        (root / name).write_text("\n".join(keep) + "\n")
    return root


def test_known_oddity_box_larger_than_mask(mini_busbra):
    samples = {s["case_id"]: s for s in load_busbra(mini_busbra)}
    assert [s["fold"] for s in samples.values()] == [3, 5, 3]
    # bus_0845-s: the published box reaches 78 px further left and 31 px further up
    s = samples["bus_0845-s"]
    tight = Box.from_mask(s["mask"])
    assert (tight.x0 - s["box"].x0, tight.y0 - s["box"].y0) == (78, 31)
    assert (tight.x1, tight.y1) == (s["box"].x1, s["box"].y1)
    assert samples["bus_0001-l"]["box"] == Box.from_mask(samples["bus_0001-l"]["mask"])


def test_missing_image_is_reported(mini_busbra):
    (mini_busbra / "Images" / "bus_0002-l.png").unlink()
    with pytest.raises(FlipsegError, match="bus_0002-l.png"):
        load_busbra(mini_busbra)
    errors: list = []
    assert len(load_busbra(mini_busbra, errors=errors)) == 2
    assert errors[0][0] == "bus_0002-l"


@needs_busbra
def test_bad_fold_and_part():
    for kw, msg in [({"part": "test"}, "needs a fold"), ({"fold": 6, "part": "test"}, "fold 6"),
                    ({"fold": 1, "part": "dev"}, "part 'dev'"), ({"cv": "3"}, "cv '3'")]:
        with pytest.raises(FlipsegError, match=msg):
            load_busbra(BUSBRA, **kw)


def test_missing_folder(tmp_path):
    with pytest.raises(FlipsegError, match="dataset folder not found"):
        load_busbra(tmp_path / "nope")
    with pytest.raises(FlipsegError, match="no bus_data.csv"):
        load_busbra(tmp_path)


def test_embedded_samples():
    samples = load_embedded()
    assert len(samples) == 10
    assert sorted(s["label"] for s in samples).count("malignant") == 5
    assert len({s["patient_id"] for s in samples}) == 10
    assert len({s["device"] for s in samples}) == 3
    assert len({s["image"].shape for s in samples}) >= 5
    for s in samples:
        assert s["fold"] == 5 and s["box"] == Box.from_mask(s["mask"])
    folder = Path(__file__).parents[2] / "src" / "flipseg" / "data" / "samples"
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2_000_000
    assert "Gómez-Flores" in (folder / "CITATION.txt").read_text(encoding="utf-8")


def test_embedded_match_the_dataset(fold5_test):
    emb = {s["case_id"]: s for s in load_embedded()}
    real = {s["case_id"]: s for s in fold5_test if s["case_id"] in emb}
    assert set(real) == set(emb)
    for cid, s in emb.items():
        np.testing.assert_array_equal(s["image"], real[cid]["image"])
        np.testing.assert_array_equal(s["mask"], real[cid]["mask"])
        assert s["box"] == real[cid]["box"]
