"""``flipseg segment``'s outputs: never an input file, an unusable --out refused before any
work, files with the umask's permissions, DICOM images in."""

import os
import stat

import numpy as np
import pytest
from PIL import Image

from flipseg.cli import main
from flipseg.data.dicom import make_us_dicom
from flipseg.data.io import write_png

H, W = 48, 64


def _image() -> np.ndarray:
    img = np.full((H, W), 90, np.uint8)
    img[14:34, 12:36] = 25
    return img


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flipseg: error:"), err
    return err[0]


@pytest.fixture()
def no_work(monkeypatch):
    import flipseg.commands

    def refuse(*a, **k):
        raise AssertionError("the segmenter was built")

    monkeypatch.setattr(flipseg.commands, "_segmenters", refuse)
    monkeypatch.setattr(flipseg.commands, "build_segmenters", refuse)


def test_busi_mask_beside_the_image_is_never_replaced(tmp_path, monkeypatch, capsys, no_work):
    """BUSI names its mask ``<stem>_mask.png``, our mask output's name, beside the image."""
    mask = np.zeros((H, W), bool)
    mask[14:34, 12:36] = True
    write_png(tmp_path / "benign (1).png", _image())
    write_png(tmp_path / "benign (1)_mask.png", mask)
    before = (tmp_path / "benign (1)_mask.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    rc = main(["segment", "--image", "benign (1).png", "--mask", "benign (1)_mask.png",
               "--box", "10,12,38,36", "--method", "ellipse", "--out", "."])
    assert rc == 2
    line = _one_line_error(capsys)
    assert "would replace the input file benign (1)_mask.png" in line
    assert (tmp_path / "benign (1)_mask.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benign (1).png", "benign (1)_mask.png"]


def test_segment_beside_the_image_without_a_clash_still_works(tmp_path, monkeypatch):
    write_png(tmp_path / "a.png", _image())
    monkeypatch.chdir(tmp_path)
    assert main(["segment", "--image", "a.png", "--box", "10,12,38,36", "--method", "ellipse",
                 "--out", "."]) == 0
    assert (tmp_path / "a_mask.png").is_file()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_unusable_out_is_one_line_before_work(tmp_path, capsys, no_work, where):
    write_png(tmp_path / "a.png", _image())
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "sub"
    rc = main(["segment", "--image", str(tmp_path / "a.png"), "--box", "10,12,38,36",
               "--method", "ellipse", "--out", str(out)])
    assert rc == 2
    assert "afile" in _one_line_error(capsys)
    assert (tmp_path / "afile").read_text() == "x"


def test_segment_files_follow_the_umask(tmp_path):
    write_png(tmp_path / "a.png", _image())
    old = os.umask(0o077)
    try:
        assert main(["segment", "--image", str(tmp_path / "a.png"), "--box", "10,12,38,36",
                     "--method", "ellipse", "--out", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
    assert len(modes) >= 3 and set(modes.values()) == {0o600}, modes
    old = os.umask(0o022)
    try:
        assert main(["segment", "--image", str(tmp_path / "a.png"), "--box", "10,12,38,36",
                     "--method", "ellipse", "--out", str(tmp_path / "p")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "p").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_segment_a_dicom_file_and_a_frame(tmp_path, capsys):
    frames = np.stack([np.full((H, W), 90, np.uint8), _image()])
    make_us_dicom(frames, compress="jpeg").save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    out = tmp_path / "o"
    assert main(["segment", "--image", str(tmp_path / "cine.dcm"), "--box", "10,12,38,36",
                 "--method", "ellipse", "--data-opt", "frame=1", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out / "cine_mask.png")).shape == (H, W)
    rc = main(["segment", "--image", str(tmp_path / "cine.dcm"), "--box", "10,12,38,36",
               "--method", "ellipse", "--data-opt", "frame=5", "--out", str(out)])
    assert rc == 2 and "2 frame(s)" in _one_line_error(capsys)
    rc = main(["segment", "--image", str(tmp_path / "cine.dcm"), "--box", "10,12,38,36",
               "--method", "ellipse", "--data-opt", "n=5", "--out", str(out)])
    assert rc == 2 and "only frame" in _one_line_error(capsys)
