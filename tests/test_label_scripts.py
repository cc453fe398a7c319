"""The documented round trips on 2 real images each (skipped without ../shared/data):
BUSI -> COCO (scripts/busi_to_coco.py) -> ``flipseg label`` in every 2D format, and
BUS-BRA -> DICOM (scripts/png_to_dicom.py) -> ``flipseg label --format dicom-seg``,
with the read-back checks."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from flipseg.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUSI, BUSBRA = DATA / "BUSI", DATA / "BUS-BRA"


def _script(name: str):
    return runpy.run_path(str(REPO / "scripts" / name), run_name="not_main")["main"]


@pytest.mark.skipif(not (BUSI / "benign").is_dir(), reason="BUSI not in ../shared/data")
def test_busi_to_coco_to_every_format(tmp_path):
    from pycocotools.coco import COCO

    from flipseg.data.io import read_mask

    coco_in = tmp_path / "busi.json"
    assert _script("busi_to_coco.py")([str(BUSI), str(coco_in), "--limit", "2"]) == 0
    doc = json.loads(coco_in.read_text())
    assert len(doc["images"]) == 2 and len(doc["annotations"]) == 2
    out = tmp_path / "out"
    rc = main(["label", "--images", str(BUSI), "--boxes", str(coco_in), "--out", str(out),
               "--format", "png,nifti,coco,nnunet", "--no-progress"])  # the default method
    assert rc == 0
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getAnnIds()) == 2
    for ann in coco.loadAnns(coco.getAnnIds()):
        cid = ann["attributes"]["case_id"]
        ours = np.load(out / "done" / f"{cid}.npz")["mask"]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), ours)
        true = read_mask(BUSI / "benign" / f"{cid}_mask.png")
        dice = 2 * (ours & true).sum() / (ours.sum() + true.sum())
        assert dice > 0.6, (cid, dice)  # a mask of the lesion, not of the box
    assert sorted(p.name for p in (out / "png").glob("*.png")) == ["benign (1).png", "benign (2).png"]
    assert len(list((out / "nifti" / "merged").glob("*.nii.gz"))) == 2
    ds = out / "nnunet" / "Dataset501_Lesions"
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2


@pytest.mark.skipif(not (BUSBRA / "bus_data.csv").is_file(), reason="BUS-BRA not in ../shared/data")
def test_busbra_to_dicom_to_dicom_seg(tmp_path):
    import highdicom as hd
    import pydicom

    dicom = tmp_path / "dicom"
    assert _script("png_to_dicom.py")([str(BUSBRA), str(dicom), "--limit", "2",
                                       "--compress", "jpeg"]) == 0
    files = sorted((dicom / "images").glob("*.dcm"))
    assert len(files) == 2
    src = pydicom.dcmread(files[0])
    assert src.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert float(src.SequenceOfUltrasoundRegions[0].PhysicalDeltaX) == pytest.approx(0.01)
    out = tmp_path / "seg"
    assert main(["label", "--images", str(dicom), "--out", str(out), "--format", "dicom-seg",
                 "--no-progress"]) == 0
    for f in files:
        source = pydicom.dcmread(f)
        seg = hd.seg.segread(out / "dicom-seg" / f"{f.stem}.seg.dcm")
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
        ours = np.load(out / "done" / f"{f.stem}.npz")["mask"]
        assert ours.sum() > 500
        np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), ours)
