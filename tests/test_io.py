"""Reading scans: NIfTI scaling and headers, SimpleITK formats (LPS -> RAS), warnings; atomic writing."""

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from seqinv.errors import InputError
from seqinv.io import InputWarning, atomic_path, read_volume, write_volume


def _noise(shape=(12, 10, 8)):
    return np.random.default_rng(0).random(shape).astype(np.float32) * 100 + 1


def test_int16_with_scaling_reads_as_scaled_float(tmp_path):
    raw = np.arange(12 * 10 * 8, dtype=np.int16).reshape(12, 10, 8)
    image = nib.Nifti1Image(raw, np.diag([1.0, 1.0, 1.0, 1.0]))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "a.nii.gz")
    volume = read_volume(tmp_path / "a.nii.gz")
    assert volume.data.dtype == np.float32
    np.testing.assert_allclose(volume.data, raw * 0.5 + 10.0)


def test_4d_with_one_volume_is_accepted(tmp_path):
    data = _noise()
    nib.save(nib.Nifti1Image(data[..., None], np.eye(4)), tmp_path / "a.nii")
    assert read_volume(tmp_path / "a.nii").shape == data.shape


def test_nrrd_lps_direction_becomes_ras_affine(tmp_path):
    import SimpleITK as sitk

    data = _noise()
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # sitk arrays are (z, y, x)
    image.SetSpacing((0.8, 1.0, 1.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    nib_file, nrrd_file = tmp_path / "a.nii.gz", tmp_path / "a.nrrd"
    sitk.WriteImage(image, str(nrrd_file))
    sitk.WriteImage(image, str(nib_file))  # ITK's own NIfTI writer: an independent LPS -> RAS conversion
    volume = read_volume(nrrd_file)
    expected = np.array([[-0.8, 0, 0, -10.0], [0, -1.0, 0, 20.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-6)
    np.testing.assert_allclose(volume.affine, nib.load(nib_file).affine, atol=1e-5)
    np.testing.assert_array_equal(volume.data, data)


def test_sform_qform_disagreement_warns_and_uses_sform(tmp_path):
    image = nib.Nifti1Image(_noise(), np.eye(4))
    shifted = np.eye(4)
    shifted[:3, 3] = [5.0, 0, 0]
    image.set_sform(np.eye(4), code=2)
    image.set_qform(shifted, code=1)
    nib.save(image, tmp_path / "a.nii.gz")
    with pytest.warns(InputWarning, match="sform and qform disagree by up to 5.0 mm; using the sform"):
        volume = read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_allclose(volume.affine, np.eye(4))


def test_thick_slices_warn(tmp_path):
    nib.save(nib.Nifti1Image(_noise(), np.diag([1.0, 1.0, 5.0, 1.0])), tmp_path / "a.nii.gz")
    with pytest.warns(InputWarning, match=r"voxel size 1x1x5 mm"):
        read_volume(tmp_path / "a.nii.gz")


def test_some_nan_voxels_become_background_with_a_warning(tmp_path):
    data = _noise()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")
    with pytest.warns(InputWarning, match="4 NaN/Inf voxels"):
        volume = read_volume(tmp_path / "a.nii.gz")
    assert np.isfinite(volume.data).all()
    assert volume.data[0, 0, 0] == volume.data.min()


def _save(data, path):
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def _write_zero_voxel_size(path):
    """nibabel refuses to write this, so write the header and data by hand."""
    data = _noise()
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=2)
    header["srow_y"] = [0.0, 0.0, 0.0, 0.0]  # voxels of zero size along j
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * 4 + data.tobytes(order="F"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not an image"), "cannot read as NIfTI"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00" * 1000)[:40]), "cannot read as NIfTI"),
        (lambda p: nib.save(nib.Nifti1Image(_noise((12, 10)), np.eye(4)), p), "2D image"),
        (lambda p: nib.save(nib.Nifti1Image(_noise((12, 10, 8, 3)), np.eye(4)), p), "holds 3 volumes"),
        (lambda p: _save(np.zeros((8, 8, 8), np.float32), p), "every voxel equals 0"),
        (lambda p: _save(np.full((8, 8, 8), np.nan, np.float32), p), "every voxel is NaN or Inf"),
        (_write_zero_voxel_size, "voxel size 1x0x1 mm"),
        (lambda p: nib.save(nib.Nifti1Image(_noise(), np.diag([1.0, 1.0, 500.0, 1.0])), p), "voxel size"),
    ],
)
def test_bad_files_raise_one_clear_input_error(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        read_volume(path)
    assert "\n" not in str(info.value)


def test_write_volume_keeps_shape_affine_and_header(tmp_path):
    source = nib.Nifti1Image(_noise(), np.eye(4))
    source.header["descrip"] = b"scanner X"
    affine = np.array([[0.9, 0.1, 0, 10], [-0.1, 1.2, 0.05, -3], [0, 0.2, 2.5, 7], [0, 0, 0, 1]])
    labels = np.random.default_rng(0).integers(0, 4, (12, 10, 8)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sheared affine must not produce an sform/qform mismatch
        write_volume(tmp_path / "l.nii.gz", labels, affine, source.header, dtype="uint8")
        volume = read_volume(tmp_path / "l.nii.gz")
    image = nib.load(tmp_path / "l.nii.gz")
    assert image.get_data_dtype() == np.uint8 and image.header["descrip"] == b"scanner X"
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
