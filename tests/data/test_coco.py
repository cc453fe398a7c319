"""Boxes from annotation tools: COCO as CVAT and Label Studio export it, and MONAI /
Decathlon datalists, on small generated images."""

import json
from pathlib import Path

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.data import load_dataset
from flipseg.data.coco import coco_box, load_coco, load_datalist
from flipseg.data.io import write_png
from flipseg.errors import FlipsegError

H, W = 40, 60


def _image(path: Path, value: int = 80) -> Path:
    img = np.full((H, W), value, np.uint8)
    img[10:30, 10:30] = 20
    return write_png(path, img)


def _coco(images, anns, cats=({"id": 1, "name": "lesion"}, {"id": 2, "name": "calcification"})):
    return {"images": images, "annotations": anns, "categories": list(cats)}


@pytest.fixture()
def cvat(tmp_path):
    """CVAT's "COCO 1.0" export: annotations/instances_default.json beside images/."""
    root = tmp_path / "cvat"
    for name in ("a.png", "b.png", "c.png"):
        _image(root / "images" / name)
    images = [{"id": i, "file_name": n, "width": W, "height": H}
              for i, n in enumerate(("a.png", "b.png", "c.png"), start=1)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.4, 9.6, 20.0, 20.2],
         "segmentation": [], "area": 0, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "segmentation": []},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [30, 5, 10, 10], "segmentation": []},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [40, 20, 15, 15],
         "segmentation": [[40, 20, 55, 20, 55, 35, 40, 35]]},
    ]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(_coco(images, anns)))
    return root


def test_coco_box_is_half_open_and_rounded():
    assert coco_box([10, 20, 30, 40], "x") == Box(10, 20, 40, 60)
    assert coco_box([10.4, 9.6, 20.0, 20.2], "x") == Box(10, 10, 30, 30)
    with pytest.raises(FlipsegError, match="empty"):
        coco_box([1, 1, 0, 5], "x")
    with pytest.raises(FlipsegError, match=r"\[x, y, w, h\]"):
        coco_box([1, 2], "x")


def test_cvat_export_one_case_per_box(cvat):
    samples = load_coco(cvat)  # the annotation file is found in the export folder
    ids = [s["case_id"] for s in samples]
    assert ids == ["a", "b-box1", "b-box2", "b-box3"]  # c has no box: left out
    a = samples[0]
    assert a["box"] == Box(10, 10, 30, 30) and a["image"].shape == (H, W)
    assert a["coco_annotation_id"] == 1 and a["coco_image"]["file_name"] == "a.png"
    assert a["file"].endswith("a.png") and "mask" not in a
    assert samples[1]["image"] is samples[2]["image"]  # one read per image
    poly = samples[3]
    assert poly["mask"].sum() == pytest.approx(15 * 15, abs=40)  # the polygon became a mask
    assert poly["patient_id"] == "b"


def test_category_filter_by_name_or_id(cvat):
    assert [s["case_id"] for s in load_coco(cvat, category="Calcification")] == ["b"]
    assert [s["case_id"] for s in load_coco(cvat, category=1)] == ["a", "b-box1", "b-box2"]
    with pytest.raises(FlipsegError, match="lesion \\(1\\), calcification \\(2\\)"):
        load_coco(cvat, category="mass")


def test_label_studio_export_and_registered_dataset(tmp_path):
    """Label Studio's COCO export: result.json, file_name "images/<name>"."""
    root = tmp_path / "ls"
    _image(root / "images" / "x 1.png")
    images = [{"id": 0, "file_name": "images/x 1.png", "width": W, "height": H}]
    anns = [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "ignore": 0,
             "iscrowd": 0, "area": 12}]
    (root / "result.json").write_text(json.dumps(_coco(images, anns)))
    (s,) = load_dataset("coco", root)
    assert s["case_id"] == "x 1" and s["box"] == Box(1, 2, 4, 6)
    # images somewhere else: --data-root IMAGES --data-opt annotations=FILE
    (s,) = load_dataset("coco", root / "images", annotations=root / "result.json")
    assert s["box"] == Box(1, 2, 4, 6)
    with pytest.raises(FlipsegError, match="no option 'bogus'"):
        load_dataset("coco", root, bogus=1)


def test_coco_errors_are_per_case(cvat):
    doc = json.loads((cvat / "annotations" / "instances_default.json").read_text())
    doc["images"][0]["width"] = 99  # a.png is 60 wide
    doc["images"].append({"id": 9, "file_name": "gone.png", "width": W, "height": H})
    doc["annotations"].append({"id": 9, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]})
    path = cvat / "annotations" / "instances_default.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FlipsegError, match="'gone.png' not found"):
        load_coco(cvat)
    errors: list = []
    samples = load_coco(cvat, errors=errors)
    assert [s["case_id"] for s in samples] == ["b-box1", "b-box2", "b-box3"]
    assert [e[0] for e in errors] == ["gone.png", "a"]
    assert "a.png is 60x40 pixels" in errors[1][1]
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(FlipsegError, match="not a COCO file"):
        load_coco(cvat)


def test_datalist_2d_several_boxes_and_modes(tmp_path):
    _image(tmp_path / "imagesTr" / "a.png")
    _image(tmp_path / "imagesTr" / "b.png")
    mask = np.zeros((H, W), bool)
    mask[10:30, 10:30] = True
    mask[2:6, 50:56] = True
    write_png(tmp_path / "labelsTr" / "a.png", mask)
    doc = {"training": [
        {"image": "imagesTr/a.png", "label": "labelsTr/a.png", "box": [[10, 10, 30, 30], [50, 2, 56, 6]]},
        {"image": "imagesTr/b.png", "box": [5, 6, 7, 8]},
        {"image": "imagesTr/b.png"},  # no box: left out
    ], "validation": [{"image": "imagesTr/b.png", "box": [1, 1, 4, 4]}]}
    (tmp_path / "datalist.json").write_text(json.dumps(doc))
    samples = load_datalist(tmp_path)
    assert [s["case_id"] for s in samples] == ["a-box1", "a-box2", "b"]
    assert samples[0]["mask"].sum() == 400 and samples[1]["mask"].sum() == 24  # lesion parts
    assert samples[2]["box"] == Box(5, 6, 7, 8)
    xywh = load_datalist(tmp_path, box_mode="xywh")
    assert xywh[2]["box"] == Box(5, 6, 12, 14)
    assert [s["case_id"] for s in load_datalist(tmp_path, section="all")][-1] == "b-3"
    with pytest.raises(FlipsegError, match="sections: training, validation"):
        load_datalist(tmp_path, section="test")
    with pytest.raises(FlipsegError, match="box_mode 'xyzxyz'"):
        load_datalist(tmp_path, box_mode="xyzxyz")
    (s,) = load_dataset("datalist", tmp_path, section="validation")
    assert s["box"] == Box(1, 1, 4, 4)


def test_datalist_3d_standard_mode(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((30, 20, 10), np.float32), np.diag([0.5, 0.5, 2, 1])),
             tmp_path / "v.nii.gz")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [
        {"image": "v.nii.gz", "box": [2, 3, 1, 12, 13, 6]}]}))
    (s,) = load_datalist(tmp_path / "dl.json")
    assert s["box"] == Box(2, 3, 12, 13, 1, 6) and s["image"].shape == (10, 20, 30)
    assert s["spacing"] == pytest.approx((2.0, 0.5, 0.5))
