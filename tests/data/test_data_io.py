"""read_image / read_mask / write_png on tiny generated files of every PNG mode."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from flipseg.data.io import read_image, read_mask, write_png
from flipseg.errors import FlipsegError

GREY = (np.arange(6 * 8).reshape(6, 8) * 5).astype(np.uint8)  # 0..235


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_greyscale_8bit(tmp_path):
    img = read_image(_save(tmp_path / "g.png", GREY))
    assert img.dtype == np.float32 and img.shape == (6, 8)
    np.testing.assert_array_equal(img, GREY.astype(np.float32))


def test_one_bit_reads_as_0_255(tmp_path):
    bits = GREY > 100
    path = tmp_path / "b.png"
    Image.fromarray(bits).convert("1").save(path)
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(read_image(path), bits * np.float32(255))
    np.testing.assert_array_equal(read_mask(path), bits)


def test_rgb_is_luminance(tmp_path):
    rgb = np.dstack([GREY, 255 - GREY, np.full_like(GREY, 40)])
    img = read_image(_save(tmp_path / "c.png", rgb))
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(img, expected, atol=1e-3)


def test_grey_rgb_equals_grey(tmp_path):
    rgb = np.dstack([GREY] * 3)
    np.testing.assert_allclose(read_image(_save(tmp_path / "c.png", rgb)), GREY, atol=1e-3)


def test_rgba_drops_alpha(tmp_path):
    rgb = np.dstack([GREY, GREY // 2, 255 - GREY])
    rgba = np.dstack([rgb, np.zeros_like(GREY)])  # fully transparent: alpha must not matter
    a = read_image(_save(tmp_path / "a.png", rgba))
    b = read_image(_save(tmp_path / "b.png", rgb))
    np.testing.assert_array_equal(a, b)


def test_grey_alpha(tmp_path):
    la = np.dstack([GREY, np.full_like(GREY, 7)])
    np.testing.assert_array_equal(read_image(_save(tmp_path / "la.png", la, "LA")), GREY)


def test_16bit_grey_and_colour(tmp_path):
    """16-bit files come back on the 0-255 scale (x 255/65535, normalize_intensities)."""
    g16 = GREY.astype(np.uint16) * 257 + 1
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), g16)
    img = read_image(path)
    np.testing.assert_allclose(img, g16 / 257.0, rtol=1e-6)
    assert img.max() <= 255
    r, g, b = g16, 65535 - g16, np.full_like(g16, 1000)
    cv2.imwrite(str(tmp_path / "c16.png"), np.dstack([b, g, r]))  # OpenCV writes BGR
    expected = (0.299 * r.astype(float) + 0.587 * g + 0.114 * b) / 257.0
    np.testing.assert_allclose(read_image(tmp_path / "c16.png"), expected, rtol=1e-5)


def test_palette_image(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(GREY).convert("P").save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_allclose(read_image(path), GREY, atol=1.0)


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_file_names_the_file(tmp_path, content):
    good = _save(tmp_path / "good.png", GREY).read_bytes()
    path = tmp_path / "bad.png"
    path.write_bytes(good[: len(good) // 2] if content == "truncated" else content)
    with pytest.raises(FlipsegError, match="bad.png"):
        read_image(path)
    with pytest.raises(FlipsegError, match="bad.png"):
        read_mask(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FlipsegError, match="not found: .*nothing.png"):
        read_image(tmp_path / "nothing.png")
    with pytest.raises(FlipsegError, match="not an image file"):
        read_image(tmp_path)


def test_mask_nonzero_is_lesion_any_value(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[1, 2] = 1
    m[3, 4] = 255
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m.png", m)), m > 0)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[2, 2, 1] = 9
    assert read_mask(_save(tmp_path / "c.png", rgb)).sum() == 1


def test_mask_resized_and_thresholded(tmp_path):
    """A 4x larger anti-aliased mask is brought back to the image size exactly."""
    small = np.zeros((20, 24), bool)
    small[5:15, 6:18] = True
    big = cv2.resize(small.astype(np.uint8) * 255, (96, 80), interpolation=cv2.INTER_NEAREST)
    big = cv2.GaussianBlur(big, (5, 5), 1.0)  # anti-aliased edges
    path = _save(tmp_path / "big.png", big)
    assert (read_mask(path) != (big > 0)).sum() == 0
    np.testing.assert_array_equal(read_mask(path, shape=(20, 24)), small)
    up = read_mask(_save(tmp_path / "s.png", small.astype(np.uint8)), shape=(40, 48))
    assert up.shape == (40, 48) and abs(int(up.sum()) - 4 * int(small.sum())) <= 4


def test_mask_threshold_same_size(tmp_path):
    m = np.array([[0, 10, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m.png", m), threshold=0.5),
                                  [[False, False, False, True, True]])


def test_write_png_roundtrip_and_atomic(tmp_path):
    mask = GREY > 50
    out = write_png(tmp_path / "sub" / "m.png", mask)
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["m.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), mask.astype(np.uint8) * 255)
    write_png(out, GREY)  # overwrite in place
    np.testing.assert_array_equal(read_image(out), GREY)
    with pytest.raises(FlipsegError, match="float32"):
        write_png(tmp_path / "f.png", GREY.astype(np.float32))
    assert not (tmp_path / "f.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
