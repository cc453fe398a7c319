"""Generic folder / manifest layouts and the STU-Hospital layout, built in tmp_path."""

import json

import cv2
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from flipseg.boxes import Box
from flipseg.data.folder import load_folder, load_manifest
from flipseg.data.stu import load_stu
from flipseg.errors import FlipsegError


def _img(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _mask(h=40, w=50, *rects):
    m = np.zeros((h, w), np.uint8)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = 255
    return m


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    _save(tmp_path / "images" / "a.png", _img())
    _save(tmp_path / "images" / "b.jpg", _img(seed=1))
    _save(tmp_path / "images" / "c10.bmp", _img(seed=2))
    _save(tmp_path / "images" / "c9.png", _img(seed=3))
    _save(tmp_path / "masks" / "a.png", _mask(40, 50, (5, 10, 5, 15)))
    _save(tmp_path / "masks" / "b_mask.png", _mask(40, 50, (20, 30, 20, 30)))
    _save(tmp_path / "masks" / "c10.tif", _mask(40, 50, (2, 8, 2, 8), (30, 36, 40, 46)))
    _save(tmp_path / "masks" / "orphan.png", _mask(40, 50, (0, 1, 0, 1)))
    return tmp_path


def test_images_and_masks(folder):
    samples = load_folder(folder)
    assert [s["case_id"] for s in samples] == ["a", "b", "c9", "c10"]  # natural order
    a, b, c9, c10 = samples
    assert a["box"] == Box(5, 5, 15, 10) and a["mask"].sum() == 50
    assert b["box"] == Box(20, 20, 30, 30)  # from <stem>_mask.png
    assert "mask" not in c9 and c9["box"] is None
    assert c10["box"] == Box(2, 2, 46, 36)
    assert a["spacing"] == (1.0, 1.0) and a["patient_id"] == "a"


def test_boxes_csv_several_lesions(folder):
    (folder / "boxes.csv").write_text(
        "case_id,x0,y0,x1,y1,label\n"
        "c10,2,2,8,8,benign\n"
        "c10,40,30,46,36,malignant\n"
        "c9,1,2,11,12,\n"
    )
    samples = {s["case_id"]: s for s in load_folder(folder)}
    assert set(samples) == {"a", "b", "c9", "c10#1", "c10#2"}
    first, second = samples["c10#1"], samples["c10#2"]
    assert first["patient_id"] == second["patient_id"] == "c10"
    assert (first["label"], second["label"]) == ("benign", "malignant")
    assert first["mask"].sum() == second["mask"].sum() == 36  # each keeps its own lesion only
    assert Box.from_mask(second["mask"]) == second["box"] == Box(40, 30, 46, 36)
    assert samples["c9"]["box"] == Box(1, 2, 11, 12) and samples["c9"]["label"] is None
    assert samples["a"]["box"] == Box(5, 5, 15, 10)  # no row: box from the mask


def test_boxes_csv_errors(folder):
    (folder / "boxes.csv").write_text("id,x0,y0,x1,y1\n")
    with pytest.raises(FlipsegError, match="lacks case_id"):
        load_folder(folder)
    (folder / "boxes.csv").write_text("case_id,x0,y0,x1,y1\na,1,2,zz,4\nghost,1,1,5,5\n")
    with pytest.raises(FlipsegError, match="line 2"):
        load_folder(folder)
    errors: list = []
    samples = load_folder(folder, errors=errors)
    assert len(samples) == 4
    assert [e[0] for e in errors] == ["a", "ghost"]
    (folder / "boxes.csv").write_text("case_id,x0,y0,x1,y1\na,100,100,120,120\n")
    with pytest.raises(FlipsegError, match="outside the image"):
        load_folder(folder)


def test_missing_layout(tmp_path):
    with pytest.raises(FlipsegError, match="dataset folder not found"):
        load_folder(tmp_path / "nope")
    with pytest.raises(FlipsegError, match="neither images/ nor manifest.json"):
        load_folder(tmp_path)


def test_manifest(tmp_path):
    _save(tmp_path / "imgs" / "x.png", _img())
    _save(tmp_path / "imgs" / "y.png", _img(seed=5))
    _save(tmp_path / "gt" / "x1.png", _mask(40, 50, (5, 10, 5, 15)))
    _save(tmp_path / "gt" / "x2.png", _mask(40, 50, (20, 30, 30, 40)))
    entries = [
        {"image": "imgs/x.png", "mask": ["gt/x1.png", "gt/x2.png"], "label": "Benign",
         "case_id": "case-x", "patient_id": "p7"},
        {"image": "imgs/y.png", "box": "3,4,13,14"},
        {"image": "imgs/y.png", "box": [20, 20, 30, 30], "label": "malignant"},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps(entries))
    samples = load_folder(tmp_path)
    assert [s["case_id"] for s in samples] == ["case-x", "y#1", "y#2"]
    x = samples[0]
    assert x["label"] == "benign" and x["patient_id"] == "p7" and x["mask"].sum() == 150
    assert x["box"] == Box(5, 5, 40, 30)
    assert samples[1]["box"] == Box(3, 4, 13, 14) and samples[2]["label"] == "malignant"
    assert samples[1]["patient_id"] == samples[2]["patient_id"] == "y"
    (tmp_path / "bad.json").write_text('{"image": "imgs/x.png"}')
    with pytest.raises(FlipsegError, match="list of entries"):
        load_manifest(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[{"image": "imgs/x.png", "label": "cyst"}]')
    with pytest.raises(FlipsegError, match="'cyst'"):
        load_folder(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[{"image": "imgs/nothing.png"}]')
    with pytest.raises(FlipsegError, match="nothing.png"):
        load_folder(tmp_path / "bad.json")


def test_volume_folder(tmp_path):
    vol = np.zeros((12, 10, 6), np.float32)  # stored (x, y, z)
    vol[2:5, 3:7, 1:4] = 100.0
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "images" / "v.nii.gz")
    nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), affine), tmp_path / "masks" / "v.nii.gz")
    (tmp_path / "boxes.csv").write_text("case_id,x0,y0,x1,y1,z0,z1\nv,2,3,5,7,1,4\n")
    (s,) = load_folder(tmp_path)
    assert s["image"].shape == (6, 10, 12) and s["spacing"] == (2.0, 0.6000000238418579, 0.5)
    assert s["box"] == Box(2, 3, 5, 7, 1, 4) == Box.from_mask(s["mask"])
    assert s["volume_meta"]["format"] == "nifti"


def test_stu_resize_and_threshold(tmp_path):
    small = _mask(40, 50, (10, 30, 12, 40))
    big = cv2.resize(small, (150, 120), interpolation=cv2.INTER_NEAREST)
    big = cv2.GaussianBlur(big, (7, 7), 2.0)  # anti-aliased, 3x larger
    _save(tmp_path / "STU" / "Test_Image_2.png", np.dstack([_img()] * 3))
    _save(tmp_path / "STU" / "mask_2.png", big)
    _save(tmp_path / "STU" / "Test_Image_10.png", _img(seed=4))
    same = _mask(40, 50, (5, 9, 5, 9))
    same[4, 5:9] = 40  # faint anti-aliased row above: below 0.5, not lesion
    _save(tmp_path / "STU" / "mask_10.png", same)
    samples = load_stu(tmp_path)
    assert [s["case_id"] for s in samples] == ["stu_2", "stu_10"]
    np.testing.assert_array_equal(samples[0]["mask"], small > 0)
    assert samples[0]["box"] == Box(12, 10, 40, 30) and samples[0]["label"] is None
    assert samples[1]["box"] == Box(5, 5, 9, 9)
    _save(tmp_path / "STU" / "Test_Image_3.png", _img())
    with pytest.raises(FlipsegError, match="no mask_3"):
        load_stu(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlipsegError, match="no Test_Image_N"):
        load_stu(tmp_path / "empty")
