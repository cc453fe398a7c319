"""``flipseg label``: boxes in (COCO, boxes.csv, DICOM), masks out in every format, read back
with the tools that consume them (pycocotools, highdicom, pydicom, nibabel)."""

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

import flipseg
from flipseg.boxes import Box
from flipseg.cli import main
from flipseg.data.dicom import make_us_dicom
from flipseg.data.io import write_png

H, W = 48, 64


def _image(value: int = 90, blob=(12, 14, 36, 34)) -> np.ndarray:
    img = np.full((H, W), value, np.uint8)
    x0, y0, x1, y1 = blob
    img[y0:y1, x0:x1] = 25
    return img


@pytest.fixture()
def coco_export(tmp_path):
    """A CVAT-like export: two images, three boxes (two on a.png), two categories."""
    root = tmp_path / "export"
    write_png(root / "images" / "a.png", _image())
    write_png(root / "images" / "b.png", _image(120, (30, 10, 50, 30)))
    images = [{"id": 7, "file_name": "a.png", "width": W, "height": H},
              {"id": 8, "file_name": "b.png", "width": W, "height": H}]
    anns = [{"id": 70, "image_id": 7, "category_id": 3, "bbox": [10, 12, 28, 24], "segmentation": []},
            {"id": 71, "image_id": 7, "category_id": 4, "bbox": [40, 30, 20, 14], "segmentation": []},
            {"id": 80, "image_id": 8, "category_id": 3, "bbox": [28, 8, 24, 24], "segmentation": []}]
    cats = [{"id": 3, "name": "mass"}, {"id": 4, "name": "cyst"}]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flipseg: error:"), err
    return err[0]


def _label(*args: str) -> int:
    return main(["label", "--method", "ellipse", "--no-progress", *map(str, args)])


def _expected(root: Path) -> dict[str, np.ndarray]:
    """The ellipse masks of the export's boxes, straight from the Python API."""
    from flipseg.data.coco import load_coco

    cases = load_coco(root)
    seg = flipseg.make_segmenter("ellipse")
    masks = seg.segment_many([c["image"] for c in cases], [c["box"] for c in cases])
    return {c["case_id"]: m for c, m in zip(cases, masks)}


def test_coco_in_every_2d_format_out(coco_export, tmp_path):
    out = tmp_path / "out"
    assert _label("--images", coco_export, "--out", out, "--format", "png,nifti,coco,nnunet") == 0
    want = _expected(coco_export)
    assert sorted(want) == ["a-box1", "a-box2", "b"]
    # png: 0/255 per box, merged per image
    for cid, m in want.items():
        png = np.asarray(Image.open(out / "png" / f"{cid}.png"))
        assert set(np.unique(png)) <= {0, 255}
        np.testing.assert_array_equal(png > 0, m)
    merged = np.asarray(Image.open(out / "png" / "merged" / "a.png")) > 0
    np.testing.assert_array_equal(merged, want["a-box1"] | want["a-box2"])
    # nifti: one slice, x the column
    nii = nib.load(out / "nifti" / "a-box1.nii.gz")
    assert nii.shape == (W, H, 1)
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[..., 0].T > 0, want["a-box1"])
    # coco: pycocotools loads it and decodes our masks; the input's ids are kept
    from pycocotools.coco import COCO

    coco = COCO(str(out / "coco.json"))
    assert sorted(coco.getImgIds()) == [7, 8] and sorted(coco.getCatIds()) == [3, 4]
    assert coco.loadCats(4)[0]["name"] == "cyst"
    by_case = {a["attributes"]["case_id"]: a for a in coco.loadAnns(coco.getAnnIds())}
    assert {cid: a["id"] for cid, a in by_case.items()} == {"a-box1": 70, "a-box2": 71, "b": 80}
    for cid, m in want.items():
        np.testing.assert_array_equal(coco.annToMask(by_case[cid]).astype(bool), m)
        assert by_case[cid]["area"] == m.sum()
    assert by_case["a-box1"]["attributes"]["box"] == [10, 12, 38, 36]
    # nnunet: the documented raw layout
    ds = out / "nnunet" / "Dataset501_Lesions"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "US"} and meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".png"
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == ["a_0000.png", "b_0000.png"]
    lab = np.asarray(Image.open(ds / "labelsTr" / "a.png"))
    np.testing.assert_array_equal(lab, (want["a-box1"] | want["a-box2"]).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(Image.open(ds / "imagesTr" / "a_0000.png")), _image())
    # the quality score: qc.csv worst first, the same numbers in the COCO attributes
    import csv

    from flipseg.data.coco import load_coco
    from flipseg.qc import quality_features, quality_score

    rows = list(csv.DictReader(open(out / "qc.csv")))
    scores = [float(r["quality"]) for r in rows]
    assert sorted(r["case_id"] for r in rows) == sorted(want) and scores == sorted(scores)
    cases = {c["case_id"]: c for c in load_coco(coco_export)}
    for r in rows:
        c = cases[r["case_id"]]
        expect = quality_score(quality_features(c["image"], c["box"], want[r["case_id"]]))
        assert float(r["quality"]) == pytest.approx(expect, abs=1e-4)
        assert by_case[r["case_id"]]["attributes"]["quality"] == pytest.approx(expect, abs=1e-4)
    assert (out / "worst.png").is_file()


def test_rerun_skips_done_boxes_and_keeps_its_settings(coco_export, tmp_path, capsys):
    out = tmp_path / "out"
    assert _label("--images", coco_export, "--out", out) == 0
    done = out / "done" / "b.npz"
    stamp = done.stat().st_mtime_ns
    capsys.readouterr()
    assert _label("--images", coco_export, "--out", out, "--format", "png,coco") == 0
    assert "(3 done before)" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == stamp and (out / "coco.json").is_file()
    rc = main(["label", "--method", "grabcut", "--images", str(coco_export), "--out", str(out)])
    assert rc == 2 and "other settings" in _one_line_error(capsys)


def test_a_bad_case_goes_to_errors_csv(coco_export, tmp_path, capsys):
    path = coco_export / "annotations" / "instances_default.json"
    doc = json.loads(path.read_text())
    doc["images"].append({"id": 9, "file_name": "gone.png", "width": W, "height": H})
    doc["annotations"].append({"id": 90, "image_id": 9, "category_id": 3, "bbox": [1, 1, 5, 5]})
    path.write_text(json.dumps(doc))
    (coco_export / "images" / "c.png").write_bytes(b"not a png")
    doc["images"].append({"id": 10, "file_name": "c.png", "width": W, "height": H})
    doc["annotations"].append({"id": 100, "image_id": 10, "category_id": 3, "bbox": [1, 1, 5, 5]})
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert _label("--images", coco_export, "--out", out, "--format", "png") == 3
    errors = (out / "errors.csv").read_text()
    assert "gone.png" in errors and "cannot read image" in errors
    assert len(list((out / "png").glob("*.png"))) == 3  # the good boxes were written
    assert "2 case(s) failed" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["file", "under-a-file", "the-images", "above-the-input"])
def test_unusable_out_is_one_line_before_work(coco_export, tmp_path, capsys, monkeypatch, where):
    import flipseg.commands

    def no_work(*a, **k):
        raise AssertionError("the segmenter was built")

    monkeypatch.setattr(flipseg.commands, "_segmenters", no_work)
    monkeypatch.setattr(flipseg.commands, "build_segmenters", no_work)
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under-a-file": tmp_path / "afile" / "sub",
           "the-images": coco_export / "images", "above-the-input": tmp_path}[where]
    assert _label("--images", coco_export, "--out", out) == 2
    line = _one_line_error(capsys)
    assert str(out) in line or out.name in line
    assert not (out / "done.json").exists() if out.is_dir() else True


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_out(coco_export, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _label("--images", coco_export, "--out", ro) == 2
        assert "cannot be written" in _one_line_error(capsys)
    finally:
        ro.chmod(0o755)


def test_files_follow_the_umask(coco_export, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        assert _label("--images", coco_export, "--out", out, "--format",
                      "png,nifti,coco,nnunet") == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 15
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o640}, modes


def _dicom_folder(root: Path) -> dict[str, Box]:
    """images/ with two calibrated single-frame DICOMs (one without ending, one JPEG) and
    a series sub-folder; boxes.csv."""
    (root / "images").mkdir(parents=True)
    study = generate_uid()
    make_us_dicom(_image(), pixel_size_mm=0.2, study_uid=study).save_as(
        root / "images" / "IM0001", enforce_file_format=True)
    make_us_dicom(_image(110, (30, 10, 50, 30)), pixel_size_mm=0.2, study_uid=study,
                  compress="jpeg").save_as(root / "images" / "im2.dcm", enforce_file_format=True)
    series, frame_of_ref = generate_uid(), generate_uid()
    (root / "images" / "vol").mkdir()
    for k in range(5):
        ds = make_us_dicom(_image(90 + k), study_uid=study, series_uid=series, instance_number=k + 1)
        ds.FrameOfReferenceUID = frame_of_ref
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.PixelSpacing = [0.4, 0.4]
        ds.save_as(root / "images" / "vol" / f"s{k}.dcm", enforce_file_format=True)
    boxes = {"IM0001": Box(10, 12, 38, 36), "im2": Box(28, 8, 52, 32),
             "vol": Box(10, 12, 38, 36, 1, 4)}
    lines = ["case_id,x0,y0,x1,y1,z0,z1"] + [
        f"{k},{b.x0},{b.y0},{b.x1},{b.y1},{b.z0 if b.z0 is not None else ''},"
        f"{b.z1 if b.z1 is not None else ''}" for k, b in boxes.items()]
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return boxes


def test_dicom_in_dicom_seg_and_nifti_out(tmp_path):
    import highdicom as hd

    root = tmp_path / "dicom"
    _dicom_folder(root)
    (root / "boxes.csv").write_text("\n".join((root / "boxes.csv").read_text().splitlines()[:3]))
    out = tmp_path / "out"
    assert _label("--images", root, "--out", out, "--format", "dicom-seg,nifti") == 0
    for name, src in (("IM0001", root / "images" / "IM0001"), ("im2", root / "images" / "im2.dcm")):
        mask = np.load(out / "done" / f"{name}.npz")["mask"]
        assert mask.sum() > 100
        seg_path = out / "dicom-seg" / f"{name}.seg.dcm"
        source = pydicom.dcmread(src)
        plain = pydicom.dcmread(seg_path)
        assert plain.Modality == "SEG" and plain.StudyInstanceUID == source.StudyInstanceUID
        ref = plain.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        seg = hd.seg.segread(seg_path)
        assert seg.number_of_segments == 1
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
        np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), mask)
        nii = nib.load(out / "nifti" / f"{name}.nii.gz")
        assert nii.header.get_zooms()[:2] == pytest.approx((0.2, 0.2))  # the US calibration


def test_dicom_series_volume(tmp_path):
    import highdicom as hd

    root = tmp_path / "dicom"
    _dicom_folder(root)
    (root / "images" / "IM0001").unlink()
    (root / "images" / "im2.dcm").unlink()
    (root / "boxes.csv").write_text("case_id,x0,y0,x1,y1,z0,z1\nvol,10,12,38,36,1,4\n")
    out = tmp_path / "out"
    assert _label("--images", root, "--out", out, "--format", "nifti,dicom-seg,nnunet") == 0
    mask = np.load(out / "done" / "vol.npz")["mask"]
    assert mask.shape == (5, H, W) and mask[1:4].any() and not mask[0].any()
    nii = nib.load(out / "nifti" / "vol.nii.gz")
    assert nii.shape == (W, H, 5) and nii.header.get_zooms() == pytest.approx((0.4, 0.4, 3.0))
    seg = hd.seg.segread(out / "dicom-seg" / "vol.seg.dcm")
    files = sorted((root / "images" / "vol").iterdir())
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)
    ds = out / "nnunet" / "Dataset501_Lesions"
    assert json.loads((ds / "dataset.json").read_text())["file_ending"] == ".nii.gz"
    assert (ds / "imagesTr" / "vol_0000.nii.gz").is_file()
    rc = _label("--images", root, "--out", tmp_path / "o2", "--format", "png")
    assert rc == 2


def test_dicom_seg_needs_dicom_input(coco_export, tmp_path, capsys):
    assert _label("--images", coco_export, "--out", tmp_path / "o", "--format", "dicom-seg") == 2
    assert "needs DICOM images" in _one_line_error(capsys)
    assert _label("--images", coco_export, "--out", tmp_path / "o", "--format", "tiff") == 2
    assert "--format 'tiff'" in _one_line_error(capsys)


def test_multi_frame_seg_without_frame_of_reference_is_a_case_error(tmp_path, capsys):
    root = tmp_path / "cine"
    (root / "images").mkdir(parents=True)
    make_us_dicom(np.stack([_image(), _image(100)])).save_as(root / "images" / "cine.dcm",
                                                              enforce_file_format=True)
    (root / "boxes.csv").write_text("case_id,x0,y0,x1,y1\ncine,10,12,38,36\n")
    out = tmp_path / "out"
    rc = _label("--images", root, "--out", out, "--format", "dicom-seg,png", "--data-opt", "frame=1")
    assert rc == 3
    assert "Frame of Reference" in (out / "errors.csv").read_text()
    assert (out / "png" / "cine.png").is_file()


def test_ignore_disagreement_with_flip_vote(tmp_path):
    """The flip-vote voters on a real BUS-BRA sample: where they disagree, nnU-Net's ignore."""
    from importlib.resources import files

    from flipseg.data.io import read_mask

    samples = files("flipseg.data") / "samples"
    root = tmp_path / "in"
    root.mkdir()
    (root / "bus.png").write_bytes((samples / "bus_0002-l.png").read_bytes())
    b = Box.from_mask(read_mask(samples / "mask_0002-l.png"))
    (root / "boxes.csv").write_text(f"case_id,x0,y0,x1,y1\nbus,{b.x0},{b.y0},{b.x1},{b.y1}\n")
    out = tmp_path / "out"
    rc = main(["label", "--images", str(root), "--out", str(out), "--format", "nnunet",
               "--ignore-disagreement", "--no-progress"])
    assert rc == 0
    ds = out / "nnunet" / "Dataset501_Lesions"
    assert json.loads((ds / "dataset.json").read_text())["labels"]["ignore"] == 2
    lab = np.asarray(Image.open(ds / "labelsTr" / "bus.png"))
    assert (lab == 1).sum() > 1000 and (lab == 2).sum() > 0
    with np.load(out / "done" / "bus.npz") as z:
        assert ((lab == 2) == (z["disagree"] & ~(lab == 1))).all()
    rc = _label("--images", root, "--out", tmp_path / "o2", "--format", "nnunet",
                "--ignore-disagreement")
    assert rc == 2


def test_a_box_whose_segmentation_fails_is_reported_and_the_rest_written(coco_export, tmp_path,
                                                                           monkeypatch):
    import flipseg.commands

    class Fussy:
        def segment_many(self, images, boxes, seed=0):
            if any(b.x0 == 40 for b in boxes):
                raise RuntimeError("cannot do this one\nsecond line")
            return [b.to_mask(im.shape) for im, b in zip(images, boxes)]

    monkeypatch.setattr(flipseg.commands, "build_segmenters",
                        lambda recipes, **kw: {name: Fussy() for name in recipes})
    out = tmp_path / "out"
    assert _label("--images", coco_export, "--out", out, "--format", "png") == 3
    assert (out / "errors.csv").read_text().splitlines()[1:] == [
        "a-box2,RuntimeError: cannot do this one"]
    assert sorted(p.name for p in (out / "png").glob("*.png")) == ["a-box1.png", "b.png"]
    monkeypatch.undo()
    assert _label("--images", coco_export, "--out", out, "--format", "png") == 0  # the rest
    assert not (out / "errors.csv").exists()


def test_registered_coco_dataset_with_a_category(coco_export, tmp_path):
    out = tmp_path / "out"
    ann = coco_export / "annotations" / "instances_default.json"
    assert _label("--dataset", "coco", "--data-root", coco_export / "images", "--data-opt",
                  f"annotations={ann}", "--data-opt", "category=cyst", "--out", out,
                  "--format", "coco") == 0
    doc = json.loads((out / "coco.json").read_text())
    assert [a["id"] for a in doc["annotations"]] == [71]
    assert doc["annotations"][0]["attributes"]["case_id"] == "a"  # one box left on a.png
