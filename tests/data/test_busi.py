"""BUSI loader on a few real files copied into the published layout."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data.busi import find_busi_root, load_busi
from flipseg.data.io import read_mask
from flipseg.errors import FlipsegError

DATA = Path(__file__).parents[2].parent / "shared" / "data"
BUSI = DATA / "BUSI"
needs_busi = pytest.mark.skipif(not BUSI.is_dir(), reason=f"real BUSI data not found at {BUSI}")


def _copy(dst: Path, cls: str, num: int) -> None:
    (dst / cls).mkdir(parents=True, exist_ok=True)
    for f in BUSI.glob(f"{cls}/{cls} ({num})*.png"):
        shutil.copy(f, dst / cls / f.name)


@pytest.fixture
def small_busi(tmp_path):
    root = tmp_path / "BUSI"
    # 195 has _mask, _mask_1, _mask_2; 100 has _mask, _mask_1; 131/m51 and 105/156 are
    # near-duplicates; 3 is unrelated; normal 1
    for cls, num in [("benign", 195), ("benign", 100), ("benign", 131), ("benign", 105),
                     ("benign", 156), ("benign", 3), ("malignant", 51), ("normal", 1)]:
        _copy(root, cls, num)
    return root


@needs_busi
def test_masks_are_ored_and_box_is_tight(small_busi):
    samples = {s["case_id"]: s for s in load_busi(small_busi)}
    assert set(samples) == {"benign_3", "benign_100", "benign_105", "benign_131", "benign_156",
                            "benign_195", "malignant_51"}
    s = samples["benign_195"]
    parts = [read_mask(small_busi / "benign" / f"benign (195){suffix}.png")
             for suffix in ("_mask", "_mask_1", "_mask_2")]
    assert all(p.any() for p in parts)
    np.testing.assert_array_equal(s["mask"], parts[0] | parts[1] | parts[2])
    assert s["mask"].sum() > max(p.sum() for p in parts)  # really several lesions
    assert s["box"] == Box.from_mask(s["mask"])
    assert s["label"] == "benign" and s["image"].dtype == np.float32
    assert samples["malignant_51"]["label"] == "malignant"


@needs_busi
def test_per_lesion_gives_one_sample_per_mask_file(small_busi):
    samples = {s["case_id"]: s for s in load_busi(small_busi, per_lesion=True)}
    assert set(samples) == {"benign_3", "benign_100#1", "benign_100#2", "benign_105", "benign_131",
                            "benign_156", "benign_195#1", "benign_195#2", "benign_195#3",
                            "malignant_51"}
    for k, suffix in enumerate(("_mask", "_mask_1", "_mask_2"), start=1):
        s = samples[f"benign_195#{k}"]
        part = read_mask(small_busi / "benign" / f"benign (195){suffix}.png")
        np.testing.assert_array_equal(s["mask"], part)
        assert s["box"] == Box.from_mask(part) and s["lesion_index"] == k
        assert s["patient_id"] == "benign_195"  # the lesions of one image stay together
    whole = {s["case_id"]: s for s in load_busi(small_busi)}
    # a lesion's box is smaller than the image's union box; one-lesion images are unchanged
    assert samples["benign_100#1"]["box"].size < whole["benign_100"]["box"].size
    np.testing.assert_array_equal(samples["benign_3"]["mask"], whole["benign_3"]["mask"])
    assert samples["benign_3"]["box"] == whole["benign_3"]["box"]


@needs_busi
def test_order_and_normal(small_busi):
    ids = [s["case_id"] for s in load_busi(small_busi, include_normal=True)]
    assert ids == ["benign_3", "benign_100", "benign_105", "benign_131", "benign_156",
                   "benign_195", "malignant_51", "normal_1"]
    normal = load_busi(small_busi, classes=("normal",))[0]
    assert normal["label"] == "normal" and normal["box"] is None and not normal["mask"].any()


@needs_busi
def test_near_duplicates_share_patient_id(small_busi):
    pid = {s["case_id"]: s["patient_id"] for s in load_busi(small_busi)}
    assert pid["benign_105"] == pid["benign_156"] == "benign_105"
    assert pid["benign_131"] == pid["malignant_51"]  # the same image filed in both classes
    assert pid["benign_3"] == "benign_3"
    assert len(set(pid.values())) == 5


def test_missing_or_wrong_folder(tmp_path):
    with pytest.raises(FlipsegError, match="dataset folder not found"):
        load_busi(tmp_path / "nope")
    with pytest.raises(FlipsegError, match="no benign/"):
        find_busi_root(tmp_path)
    (tmp_path / "benign").mkdir()
    with pytest.raises(FlipsegError, match="class 'cats'"):
        load_busi(tmp_path, classes=("cats",))
    with pytest.raises(FlipsegError, match="malignant"):
        load_busi(tmp_path)


@needs_busi
def test_missing_mask_is_reported_or_raised(small_busi):
    (small_busi / "benign" / "benign (3)_mask.png").unlink()
    with pytest.raises(FlipsegError, match="no mask file"):
        load_busi(small_busi)
    errors: list = []
    samples = load_busi(small_busi, errors=errors)
    assert len(samples) == 6 and errors[0][0] == "benign_3"
