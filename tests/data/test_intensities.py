"""One intensity rule for every reader (flipseg.data.io.normalize_intensities): an 8-bit
image saved as 16-bit (values x257, or unchanged) or as float gives the same image, and so
the same masks."""

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile

from flipseg.data.folder import read_any_image
from flipseg.data.io import normalize_intensities, read_image
from flipseg.metrics import compute_dice as dice

GREY = (np.arange(6 * 8).reshape(6, 8) * 5).astype(np.uint8)  # 0..235


@pytest.mark.parametrize("array, bits, expected", [
    (np.array([[0, 255]], np.uint8), None, [[0, 255]]),
    (np.array([[0, 200]], np.uint16), None, [[0, 200]]),            # 8-bit values in 16 bits
    (np.array([[0, 257 * 200, 65535]], np.uint16), None, [[0, 200, 255]]),
    (np.array([[0, 4095]], np.uint16), 12, [[0, 255]]),              # DICOM BitsStored
    (np.array([[0, 65535]], np.int32), None, [[0, 255]]),            # Pillow's 32-bit 16-bit
    (np.array([[True, False]]), None, [[255, 0]]),
    (np.array([[0.0, 0.5, 1.0]], np.float32), None, [[0, 127.5, 255]]),
    (np.array([[0.0, 100.0]], np.float32), None, [[0, 100]]),
    (np.array([[-1.0, 0.0, 3.0]], np.float32), None, [[0, 63.75, 255]]),
    (np.array([[-100, 300]], np.int16), None, [[0, 255]]),
    (np.array([[np.nan, 2.0, 510.0]]), None, [[0, 0, 255]]),
])
def test_the_rule(array, bits, expected):
    out = normalize_intensities(array, bits=bits)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-3)


@pytest.mark.parametrize("saved", ["x257", "unchanged"])
def test_8bit_saved_as_16bit_reads_the_same(tmp_path, saved):
    g16 = GREY.astype(np.uint16) * (257 if saved == "x257" else 1)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), GREY, atol=1e-4)


def test_float_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "f255.tif", GREY.astype(np.float32))
    tifffile.imwrite(tmp_path / "f1.tif", GREY.astype(np.float32) / 255)
    np.testing.assert_allclose(read_image(tmp_path / "f255.tif"), GREY, atol=1e-4)
    np.testing.assert_allclose(read_image(tmp_path / "f1.tif"), GREY, atol=1e-3)


def test_integer_volume_follows_the_rule(tmp_path):
    vol = np.stack([GREY] * 3).transpose(2, 1, 0).astype(np.uint16) * 257  # stored (x, y, z)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    image = read_any_image(tmp_path / "v.nii.gz")[0]
    np.testing.assert_allclose(image[1], GREY, atol=1e-3)


def test_16bit_png_gives_the_8bit_masks(tmp_path):
    """A real BUS-BRA image saved as 16-bit both ways: flip and flip-vote masks within Dice
    0.99 of the 8-bit file's (before the rule, flip found 34 pixels instead of ~2,000)."""
    from importlib.resources import files

    import flipseg
    from flipseg.boxes import Box
    from flipseg.data.io import read_mask

    src = files("flipseg.data") / "samples" / "bus_0002-l.png"
    box = Box.from_mask(read_mask(files("flipseg.data") / "samples" / "mask_0002-l.png"))
    img8 = read_any_image(src)[0]
    raw = cv2.imread(str(src), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x257.png"), raw * 257)
    cv2.imwrite(str(tmp_path / "same.png"), raw)
    images = [img8, read_any_image(tmp_path / "x257.png")[0], read_any_image(tmp_path / "same.png")[0]]
    parts = flipseg.make_segmenter("flip-vote").vote_parts(images, [box] * 3)
    for name in ("flip", "flip-vote"):
        ref = parts[name][0]
        assert ref.sum() > 1000
        for mask in parts[name][1:]:
            assert dice(mask, ref) >= 0.99, name
