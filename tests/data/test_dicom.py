"""DICOM reading on files the tests write with pydicom: photometric interpretations,
compressed transfer syntaxes, ultrasound calibration, multi-frame files and series."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from flipseg.data import load_dataset
from flipseg.data.dicom import (
    dicom_spacing,
    is_dicom_file,
    make_us_dicom,
    read_dicom,
    read_dicom_series,
)
from flipseg.data.folder import image_stem, load_images, read_any_image
from flipseg.errors import FlipsegError

GREY = (np.add.outer(np.arange(40), np.arange(50)) * 2 + 10).astype(np.uint8)  # 10..188
RGB = np.dstack([GREY, 255 - GREY, GREY // 2])
LUMA = 0.299 * RGB[..., 0] + 0.587 * RGB[..., 1] + 0.114 * RGB[..., 2]


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome2_uncompressed_and_us_calibration(tmp_path):
    path = _save(make_us_dicom(GREY, pixel_size_mm=(0.2, 0.1)), tmp_path / "a.dcm")
    image, spacing, meta = read_dicom(path)
    assert image.dtype == np.float32 and image.shape == (40, 50)
    np.testing.assert_array_equal(image, GREY)
    assert spacing == pytest.approx((0.2, 0.1))  # PhysicalDeltaY/X 0.02/0.01 cm -> mm
    assert meta["format"] == "dicom" and meta["files"] == [str(path)] and meta["frame"] is None
    np.testing.assert_allclose(np.abs(np.diag(meta["affine"]))[:2], [0.1, 0.2])


def test_spacing_falls_back_to_pixel_spacing_then_one(tmp_path):
    ds = make_us_dicom(GREY)
    ds.PixelSpacing = [0.3, 0.25]
    assert read_dicom(_save(ds, tmp_path / "p.dcm"))[1] == pytest.approx((0.3, 0.25))
    assert read_dicom(_save(make_us_dicom(GREY), tmp_path / "n.dcm"))[1] == (1.0, 1.0)
    # regions not in cm (units 0 = none) are not a calibration
    ds = make_us_dicom(GREY, pixel_size_mm=0.5)
    ds.SequenceOfUltrasoundRegions[0].PhysicalUnitsXDirection = 0
    assert dicom_spacing(ds) is None


def test_monochrome1_is_inverted(tmp_path):
    ds = make_us_dicom(GREY)
    ds.PhotometricInterpretation = "MONOCHROME1"
    image, _sp, _m = read_dicom(_save(ds, tmp_path / "m1.dcm"))
    np.testing.assert_array_equal(image, 255 - GREY.astype(np.float32))


def test_rgb_and_ybr_full_are_luminance(tmp_path):
    image = read_dicom(_save(make_us_dicom(RGB), tmp_path / "rgb.dcm"))[0]
    np.testing.assert_allclose(image, LUMA, atol=1e-3)
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(RGB, "RGB", "YBR_FULL")
    ds = make_us_dicom(ybr, photometric="YBR_FULL")
    assert ds.PhotometricInterpretation == "YBR_FULL"
    np.testing.assert_allclose(read_dicom(_save(ds, tmp_path / "ybr.dcm"))[0], LUMA, atol=1.5)


def test_palette_color(tmp_path):
    ds = make_us_dicom(GREY)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    lut = np.arange(256, dtype=np.uint16) * 257  # 16-bit entries: grey ramp
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", lut.tobytes())
    image = read_dicom(_save(ds, tmp_path / "pal.dcm"))[0]
    np.testing.assert_allclose(image, GREY, atol=1e-2)


def test_jpeg_baseline_grey_and_colour(tmp_path):
    path = _save(make_us_dicom(GREY, compress="jpeg"), tmp_path / "j.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert np.abs(read_dicom(path)[0] - GREY).max() <= 3  # lossy
    path = _save(make_us_dicom(RGB, compress="jpeg"), tmp_path / "jc.dcm")
    assert pydicom.dcmread(path).PhotometricInterpretation == "YBR_FULL_422"
    assert np.abs(read_dicom(path)[0] - LUMA).max() <= 4


def test_jpeg2000_lossless_and_12_bit(tmp_path):
    path = _save(make_us_dicom(GREY, compress="jpeg2000"), tmp_path / "j2k.dcm")
    np.testing.assert_array_equal(read_dicom(path)[0], GREY)
    ds = make_us_dicom(GREY.astype(np.uint16) * 16)  # a 12-bit image: 0..4095
    ds.BitsStored, ds.HighBit = 12, 11
    image = read_dicom(_save(ds, tmp_path / "b12.dcm"))[0]
    np.testing.assert_allclose(image, GREY * 16.0 * 255 / 4095, atol=1e-3)


def test_multi_frame_picks_a_frame_or_all(tmp_path):
    frames = np.stack([GREY, GREY // 2, 255 - GREY])
    ds = make_us_dicom(frames, pixel_size_mm=0.1)
    ds.SliceThickness = 2.0
    path = _save(ds, tmp_path / "cine.dcm")
    first, spacing, meta = read_dicom(path)
    np.testing.assert_array_equal(first, GREY)
    assert meta["frame"] == 0 and spacing == pytest.approx((0.1, 0.1))
    np.testing.assert_array_equal(read_dicom(path, frame=2)[0], 255 - GREY)
    vol, spacing, meta = read_dicom(path, frame="all")
    assert vol.shape == (3, 40, 50) and meta["frame"] is None
    assert spacing == pytest.approx((2.0, 0.1, 0.1))
    np.testing.assert_array_equal(vol[1], GREY // 2)
    with pytest.raises(FlipsegError, match="3 frame"):
        read_dicom(path, frame=3)
    with pytest.raises(FlipsegError, match="frame number"):
        read_dicom(path, frame="last")


def _series(folder: Path, n: int = 4, *, shuffle: bool = True) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    slices = [(GREY + 10 * k).astype(np.uint8) for k in range(n)]
    order = [2, 0, 3, 1] if shuffle and n == 4 else list(range(n))
    for k in order:  # files named and numbered out of spatial order
        ds = make_us_dicom(slices[k], study_uid=study, series_uid=series, instance_number=n - k)
        ds.FrameOfReferenceUID = frame_of_ref
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        ds.PixelSpacing = [0.5, 0.4]
        _save(ds, folder / f"slice{order.index(k)}")  # no file ending
    return slices


def test_series_folder_is_a_volume_sorted_by_position(tmp_path):
    slices = _series(tmp_path / "ser")
    vol, spacing, meta = read_dicom_series(tmp_path / "ser")
    assert vol.shape == (4, 40, 50)
    for k in range(4):
        np.testing.assert_array_equal(vol[k], slices[k])
    assert spacing == pytest.approx((2.5, 0.5, 0.4))
    assert [pydicom.dcmread(f).ImagePositionPatient[2] for f in meta["files"]] == [0, 2.5, 5, 7.5]
    # read_any_image takes the folder too (flipseg segment --image FOLDER)
    np.testing.assert_array_equal(read_any_image(tmp_path / "ser")[0], vol)


def test_series_with_two_series_is_refused(tmp_path):
    _series(tmp_path / "ser")
    _save(make_us_dicom(GREY), tmp_path / "ser" / "other.dcm")
    with pytest.raises(FlipsegError, match="2 series"):
        read_dicom_series(tmp_path / "ser")


def test_extensionless_dicom_everywhere(tmp_path):
    (tmp_path / "images").mkdir()
    _save(make_us_dicom(GREY, pixel_size_mm=0.1), tmp_path / "images" / "1.2.840.99")
    _save(make_us_dicom(np.stack([GREY, 255 - GREY])), tmp_path / "images" / "cine.dcm")
    _series(tmp_path / "images" / "vol")
    (tmp_path / "images" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an index: no image
    assert is_dicom_file(tmp_path / "images" / "1.2.840.99")
    assert image_stem(tmp_path / "images" / "1.2.840.99") == "1.2.840.99"
    (tmp_path / "boxes.csv").write_text("case_id,x0,y0,x1,y1,z0,z1\n1.2.840.99,5,5,20,20,,\n"
                                        "cine,5,5,20,20,,\nvol,5,5,20,20,1,3\n")
    samples = {s["case_id"]: s for s in load_dataset("folder", tmp_path, frame=1)}
    assert sorted(samples) == ["1.2.840.99", "cine", "vol"]
    assert samples["1.2.840.99"]["spacing"] == pytest.approx((0.1, 0.1))
    np.testing.assert_array_equal(samples["cine"]["image"], 255 - GREY)  # frame=1
    assert samples["vol"]["image"].shape == (4, 40, 50)
    assert samples["vol"]["volume_meta"]["format"] == "dicom"
    assert len(load_images(tmp_path / "images")) == 3


def test_bad_dicoms_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(FlipsegError, match="bad.dcm"):
        read_dicom(bad)
    ds = make_us_dicom(GREY)
    del ds.PixelData
    with pytest.raises(FlipsegError, match="no pixel data"):
        read_dicom(_save(ds, tmp_path / "empty.dcm"))
    with pytest.raises(FlipsegError, match="not found"):
        read_dicom(tmp_path / "nothing.dcm")
