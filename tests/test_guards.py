"""Input guards (issue 19): files that are not volumes, broken voxel sizes and affines, scans too large
for memory and many-volume 4D inputs are refused with one `error:` line, exit 2 and no output file, by
segment, denoise and embed alike; `--volume N` picks one volume of a 4D input."""

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from input_cases import (
    COMMANDS,
    assert_refused,
    run_command,
    save_nifti,
    save_tiny_models,
    scan_data,
    write_raw_nifti,
)

from seqinv.errors import InputError, ParameterError
from seqinv.io import read_volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
GIFTI_DATA = Path(nib.__file__).parent / "gifti" / "tests" / "data"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"))


def _dicom_without_pixels(path):
    """A DICOM Basic Text SR header: preamble, 'DICM', meta group, SOP class; no Pixel Data element."""

    def element(group, elem, vr, value: bytes):
        value += b"\0" * (len(value) % 2)
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    body = element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1")
    body += element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.88.11")
    body += element(0x0008, 0x0060, b"CS", b"SR")
    path.write_bytes(b"\0" * 128 + b"DICM" + body)


def _pixdim(values):
    def make(path):
        write_raw_nifti(path, scan_data(), pixdim=values)

    return make


def _copy(source):
    return lambda path: path.write_bytes(Path(source).read_bytes())


def _huge_header(path):
    """A header that claims 3000^3 int16 voxels, with almost no data behind it."""
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=2)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + b"\0" * 1000)


SINGULAR = np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])

#: case -> (file name, writer, words the one error line must hold)
BAD = {
    "cifti": ("scan.nii", _copy(NIBABEL_DATA / "row_major.dconn.nii"), "CIFTI-2"),
    "gifti": ("scan.gii", _copy(GIFTI_DATA / "ascii.gii"), "GIFTI surface"),
    "mgh_surface": (
        "scan.mgz",
        lambda p: nib.save(nib.MGHImage(np.ones((642, 1, 1), np.float32), np.eye(4)), str(p)),
        "surface overlay (642 vertices",
    ),
    "dicom_not_image": ("scan.dcm", _dicom_without_pixels, "DICOM object without pixel data"),
    "zero_pixdim": ("scan.nii.gz", _pixdim([0.0, 1.0, 1.0]), "pixdim) is 0x1x1 mm"),
    "negative_pixdim": ("scan.nii.gz", _pixdim([1.0, -1.0, 1.0]), "pixdim) is 1x-1x1 mm"),
    "nan_pixdim": ("scan.nii.gz", _pixdim([1.0, 1.0, np.nan]), "pixdim) is 1x1xnan mm"),
    "absurd_pixdim": ("scan.nii.gz", _pixdim([1.0, 1.0, 25.0]), "outside 0.05-20 mm"),
    "tiny_pixdim": ("scan.nii.gz", _pixdim([0.01, 1.0, 1.0]), "outside 0.05-20 mm"),
    "singular_affine": ("scan.nii.gz", lambda p: save_nifti(p, scan_data(), SINGULAR), "singular"),
    "too_large": ("scan.nii.gz", _huge_header, "3000x3000x3000 volume"),
    "4d_several": (
        "scan.nii.gz",
        lambda p: save_nifti(p, np.stack([scan_data()] * 3, axis=-1)),
        "holds 3 volumes; pick one with `--volume N` (0 to 2",
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_in_one_line_without_output(
    tmp_path, monkeypatch, capsys, tiny_models, command, case
):
    name, make, message = BAD[case]
    scan = tmp_path / name
    make(scan)
    before = sorted(tmp_path.iterdir())
    code, err = run_command(monkeypatch, capsys, command, scan, tiny_models)
    assert_refused(code, err, message)
    assert sorted(tmp_path.iterdir()) == before  # no output, no sidecar, no temporary left


def test_too_large_is_refused_before_reading_and_names_size_and_limit(tmp_path, monkeypatch):
    scan = save_nifti(tmp_path / "scan.nii.gz", scan_data((64, 64, 64)))
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "0.3")
    with pytest.raises(InputError) as info:
        read_volume(scan)
    message = str(info.value)
    # 0.4 GB for the runtime; 64^3 voxels: the float32 file and its copy, 24 B working bytes per voxel on the
    # native grid and 48 B on the 1 mm grid
    expected_gb = 0.4 + 64**3 * (4 + 4 + 24 + 48) / 1e9
    assert f"needs about {expected_gb:.3g} GB" in message
    assert "0.3 GB limit (SEQINV_MAX_MEMORY_GB=0.3)" in message
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "1")
    assert read_volume(scan).shape == (64, 64, 64)


def test_too_large_by_default_compares_with_available_memory(tmp_path, monkeypatch):
    from seqinv import guards

    monkeypatch.delenv("SEQINV_MAX_MEMORY_GB", raising=False)
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 5e9)
    _huge_header(tmp_path / "huge.nii.gz")
    with pytest.raises(InputError, match=r"more than the 5 GB limit \(the memory available now\)"):
        read_volume(tmp_path / "huge.nii.gz")


def test_a_bad_memory_limit_is_a_parameter_error(tmp_path, monkeypatch):
    scan = save_nifti(tmp_path / "scan.nii.gz", scan_data())
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "lots")
    with pytest.raises(ParameterError, match="SEQINV_MAX_MEMORY_GB='lots'"):
        read_volume(scan)


def test_the_1mm_grid_of_huge_voxels_counts_too(tmp_path, monkeypatch):
    """100^3 voxels of 15 mm are 1.5 m across: the 1 mm grid (1486^3) would not fit."""
    scan = save_nifti(tmp_path / "scan.nii.gz", scan_data((100, 100, 100)), np.diag([15.0, 15, 15, 1]))
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "20")
    with pytest.raises(InputError, match="a 1486x1486x1486 grid at 1 mm"):
        read_volume(scan)


def test_zero_pixdim_with_a_valid_sform_is_read_from_the_sform(tmp_path):
    path = tmp_path / "scan.nii.gz"
    image = nib.Nifti1Image(scan_data(), np.diag([0.9, 1.1, 1.3, 1]))
    image.header["pixdim"][1:4] = [0.0, 0.0, 0.0]
    nib.save(image, str(path))
    np.testing.assert_allclose(read_volume(path).voxel_mm, [0.9, 1.1, 1.3], rtol=1e-6)


def test_volume_picks_one_volume_of_a_4d_scan(tmp_path):
    data = np.stack([scan_data(seed=s) for s in range(3)], axis=-1)
    affine = np.diag([1.2, 1.0, 0.9, 1])
    path = save_nifti(tmp_path / "bold.nii.gz", data, affine)
    volume = read_volume(path, volume=2)
    np.testing.assert_array_equal(volume.data, data[..., 2])
    np.testing.assert_allclose(volume.affine, affine)
    with pytest.raises(InputError, match="--volume 3 is out of range; the scan holds 3 volumes"):
        read_volume(path, volume=3)
    with pytest.raises(ParameterError, match="expected an integer >= 0"):
        read_volume(path, volume=-1)


def test_volume_on_a_3d_scan_is_refused_unless_zero(tmp_path):
    path = save_nifti(tmp_path / "t1.nii.gz", scan_data())
    assert read_volume(path, volume=0).shape == scan_data().shape
    with pytest.raises(InputError, match="the scan holds a single volume"):
        read_volume(path, volume=1)


def test_volume_picks_one_of_a_4d_nrrd(tmp_path):
    import SimpleITK as sitk

    data = np.stack([scan_data(seed=s) for s in range(2)], axis=-1)  # (x, y, z, t)
    frames = [sitk.GetImageFromArray(data[..., t].transpose(2, 1, 0)) for t in range(2)]
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "a.nrrd"))
    np.testing.assert_array_equal(read_volume(tmp_path / "a.nrrd", volume=1).data, data[..., 1])
    with pytest.raises(InputError, match="holds 2 volumes; pick one with `--volume N`"):
        read_volume(tmp_path / "a.nrrd")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_volume_option_through_the_cli(tmp_path, monkeypatch, capsys, tiny_models, command):
    import json

    data = np.stack([scan_data(seed=s) for s in range(3)], axis=-1)
    affine = np.array([[0.9, 0.2, 0, -5], [-0.2, 1.0, 0, 3], [0, 0, 1.5, 8], [0, 0, 0, 1]])
    scan = save_nifti(tmp_path / "scan.nii.gz", data, affine)
    code, err = run_command(monkeypatch, capsys, command, scan, tiny_models, "--volume", "1")
    assert code == 0, err
    output = tmp_path / COMMANDS[command][1]
    sidecar = json.loads(output.with_name(output.name.split(".")[0] + ".json").read_text())
    assert sidecar["input_volume"] == 1
    if command != "embed":
        result = nib.load(output)
        assert result.shape == data.shape[:3]
        np.testing.assert_allclose(result.affine, affine, atol=1e-5)


def test_python_api_takes_volume(tmp_path, tiny_models):
    from seqinv.inference import denoise

    data = np.stack([scan_data(seed=s) for s in range(2)], axis=-1)
    scan = save_nifti(tmp_path / "scan.nii.gz", data)
    result = denoise(scan, model=tiny_models / "den", volume=0)
    assert result.image.shape == data.shape[:3]
    with pytest.raises(InputError, match="Python: volume=N"):
        denoise(scan, model=tiny_models / "den")


def test_single_volume_4d_is_accepted_without_volume(tmp_path):
    data = scan_data()[..., None]
    path = save_nifti(tmp_path / "scan.nii.gz", data)
    assert read_volume(path).shape == data.shape[:3]


def test_a_dicom_series_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import SimpleITK as sitk

    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(40):
        plane = sitk.GetImageFromArray(np.full((128, 128), 100 + k, np.int16))
        plane.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.7")  # one series
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData("0020|0032", f"0\\0\\{k:.1f}")
        plane.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        writer.SetFileName(str(folder / f"s{k:02d}.dcm"))
        writer.Execute(plane)
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "0.45")  # 0.4 GB base + 128x128x40 voxels needs 0.45 GB
    with pytest.raises(InputError, match=r"a 128x128x40 volume .* more than the 0.45 GB limit"):
        read_volume(folder)
    monkeypatch.setenv("SEQINV_MAX_MEMORY_GB", "1")
    assert read_volume(folder).shape == (128, 128, 40)


def test_skip_existing_reruns_when_another_volume_is_asked_for(tmp_path, monkeypatch, capsys, tiny_models):
    import json

    data = np.stack([scan_data(seed=i) for i in range(2)], axis=-1)
    scan = save_nifti(tmp_path / "scan.nii.gz", data)
    out = tmp_path / "out"
    args = ("-o", out, "--skip-existing")
    assert run_command(monkeypatch, capsys, "segment", scan, tiny_models, "--volume", "0", *args)[0] == 0
    sidecar = out / "scan_dseg.json"
    assert json.loads(sidecar.read_text(encoding="utf-8"))["input_volume"] == 0
    assert run_command(monkeypatch, capsys, "segment", scan, tiny_models, "--volume", "1", *args)[0] == 0
    assert json.loads(sidecar.read_text(encoding="utf-8"))["input_volume"] == 1  # not skipped


def test_a_volumes_csv_in_a_missing_folder_is_refused_before_any_scan(
    tmp_path, monkeypatch, capsys, tiny_models
):
    scan = save_nifti(tmp_path / "scan.nii.gz", scan_data())
    csv = tmp_path / "nodir" / "volumes.csv"
    extra = ("-o", tmp_path / "o", "--volumes", csv)
    code, err = run_command(monkeypatch, capsys, "segment", scan, tiny_models, *extra)
    assert_refused(code, err, "--volumes")
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
