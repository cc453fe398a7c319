"""NIfTI / NRRD read and write-back with anisotropic spacing and a non-trivial affine."""

import nibabel as nib
import nrrd
import numpy as np
import pytest

from flipseg.data.volumes import read_volume, write_volume
from flipseg.errors import FlipsegError

# stored (x, y, z) = (7, 5, 4) voxels; spacing x 0.5, y 0.8, z 2.5 mm; rotated + shifted
ROT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = ROT @ np.diag([0.5, 0.8, 2.5])
AFFINE[:3, 3] = [12.0, -30.5, 7.25]


def _volume():
    data = np.arange(7 * 5 * 4, dtype=np.float32).reshape(7, 5, 4)
    return data


def test_nifti_roundtrip(tmp_path):
    data = _volume()
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "img.nii.gz")
    arr, spacing, meta = read_volume(tmp_path / "img.nii.gz")
    assert arr.shape == (4, 5, 7) and arr.dtype == np.float32
    assert arr[3, 2, 6] == data[6, 2, 3]  # array[z, y, x] == stored[x, y, z]
    np.testing.assert_allclose(spacing, (2.5, 0.8, 0.5), rtol=1e-6)
    mask = arr > 60
    out = write_volume(tmp_path / "out" / "mask.nii.gz", mask, meta)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(back.header.get_zooms(), (0.5, 0.8, 2.5), rtol=1e-6)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), data > 60)
    arr2, spacing2, _ = read_volume(out)
    np.testing.assert_array_equal(arr2 > 0, mask)
    assert spacing2 == spacing
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.nii.gz"]  # no temp left


def test_nrrd_roundtrip(tmp_path):
    data = _volume()
    lps = np.diag([-1.0, -1.0, 1.0]) @ AFFINE[:3]  # RAS -> LPS
    header = {"space": "left-posterior-superior", "space directions": lps[:, :3].T,
              "space origin": lps[:, 3]}
    nrrd.write(str(tmp_path / "img.nrrd"), data, header)
    arr, spacing, meta = read_volume(tmp_path / "img.nrrd")
    assert arr.shape == (4, 5, 7) and arr[1, 4, 2] == data[2, 4, 1]
    np.testing.assert_allclose(spacing, (2.5, 0.8, 0.5))
    np.testing.assert_allclose(meta["affine"], AFFINE, atol=1e-9)  # stored as RAS
    out = write_volume(tmp_path / "mask.nrrd", arr > 60, meta)
    back, hdr = nrrd.read(str(out))
    np.testing.assert_array_equal(back, data > 60)
    assert back.dtype == np.uint8 and hdr["space"] == "left-posterior-superior"
    np.testing.assert_allclose(hdr["space directions"], header["space directions"])
    np.testing.assert_allclose(hdr["space origin"], header["space origin"])


def test_cross_format_keeps_world_geometry(tmp_path):
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "img.nii")
    arr, _, meta = read_volume(tmp_path / "img.nii")
    write_volume(tmp_path / "m.nrrd", arr > 0, meta)
    _, _, meta2 = read_volume(tmp_path / "m.nrrd")
    np.testing.assert_allclose(meta2["affine"], AFFINE, atol=1e-6)


def test_volume_errors(tmp_path):
    with pytest.raises(FlipsegError, match="not found"):
        read_volume(tmp_path / "none.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(FlipsegError, match="bad.nii.gz"):
        read_volume(tmp_path / "bad.nii.gz")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\nnonsense\n")
    with pytest.raises(FlipsegError, match="bad.nrrd"):
        read_volume(tmp_path / "bad.nrrd")
    with pytest.raises(FlipsegError, match="unknown file ending"):
        read_volume(tmp_path / "x.png")
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "img.nii")
    arr, _, meta = read_volume(tmp_path / "img.nii")
    with pytest.raises(FlipsegError, match="differs from the volume shape"):
        write_volume(tmp_path / "m.nii", arr[:2], meta)
    with pytest.raises(FlipsegError, match="use a .nii"):
        write_volume(tmp_path / "m.png", arr, meta)
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), AFFINE), tmp_path / "t.nii")
    with pytest.raises(FlipsegError, match="expected a 3D volume"):
        read_volume(tmp_path / "t.nii")
