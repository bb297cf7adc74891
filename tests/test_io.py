"""Reading scans: NIfTI scaling and headers, SimpleITK formats (LPS -> RAS), warnings; atomic writing."""

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
from input_cases import GZIP_DEFECTS, damage_gzip

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


#: gzipped formats: the file to read, and the image type nibabel writes it with
GZIPPED = {"a.nii.gz": nib.Nifti1Image, "a.mgz": nib.MGHImage, "a.img.gz": nib.Nifti1Pair}


@pytest.mark.parametrize("defect", GZIP_DEFECTS)
@pytest.mark.parametrize("name", list(GZIPPED))
def test_a_damaged_gzip_trailer_is_one_clear_input_error(tmp_path, name, defect):
    """nibabel reads only the bytes it needs: a bad CRC or a cut trailer went unnoticed."""
    path = tmp_path / name
    nib.save(GZIPPED[name](_noise(), np.eye(4)), path)
    damage_gzip(path, defect)  # of a pair (a.hdr.gz + a.img.gz): the data file
    with pytest.raises(InputError, match="compressed data is damaged") as info:
        read_volume(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_valid_gzip_variants_still_read(tmp_path):
    """Several gzip members (as `cat a.gz b.gz` makes) and zero padding after the last one are valid gzip."""
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(_noise(), np.eye(4)), path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + b"\0" * 512)
    np.testing.assert_array_equal(read_volume(path).data, _noise())


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


def _sitk_image(data, spacing=(0.8, 1.0, 1.5), origin=(10.0, -20.0, 5.0)):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # sitk arrays are (z, y, x)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_mha_reads_like_itks_own_nifti(tmp_path):
    import SimpleITK as sitk

    data = _noise()
    image = _sitk_image(data)
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))  # swapped in-plane axes
    sitk.WriteImage(image, str(tmp_path / "a.mha"))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    volume = read_volume(tmp_path / "a.mha")
    np.testing.assert_allclose(volume.affine, nib.load(tmp_path / "a.nii.gz").affine, atol=1e-5)
    np.testing.assert_array_equal(volume.data, data)


def _write_dicom_series(image, folder, series_uid="1.2.826.0.1.3680043.2.1125.1"):
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    cast = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(cast.GetDepth()):
        plane = cast[:, :, k]
        origin = cast.TransformIndexToPhysicalPoint((0, 0, k))
        plane.SetMetaData("0020|000e", series_uid)  # series instance UID
        plane.SetMetaData("0020|0013", str(k + 1))  # instance number
        plane.SetMetaData("0020|0032", "\\".join(f"{v:.4f}" for v in origin))  # image position (patient)
        plane.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")  # image orientation (patient)
        plane.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.4f}")  # slice thickness
        plane.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_series_folder_reads_with_its_geometry(tmp_path):
    data = np.round(_noise((10, 9, 7)))
    image = _sitk_image(data, spacing=(0.9, 0.9, 2.0))
    _write_dicom_series(image, tmp_path / "dicom")
    volume = read_volume(tmp_path / "dicom")
    assert volume.shape == data.shape
    np.testing.assert_allclose(volume.data, data)
    np.testing.assert_allclose(volume.voxel_mm, [0.9, 0.9, 2.0], atol=1e-4)
    expected_origin = [-10.0, 20.0, 5.0]  # LPS (10, -20, 5) in RAS
    np.testing.assert_allclose(volume.affine[:3, 3], expected_origin, atol=1e-3)


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="folder holds no DICOM series"):
        read_volume(tmp_path / "notes")


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from seqinv.models import SeqInvEncoder

    old = os.umask(0o022)
    try:
        path = write_volume(tmp_path / "out.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
        model_dir = SeqInvEncoder(preset="tiny").save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    files = sorted(model_dir.iterdir())
    assert [p.name for p in files] == ["README.md", "config.json", "model.safetensors"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
