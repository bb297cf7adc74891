"""A corpus of odd and bad inputs (issue 19) through `seqinv segment | denoise | embed`.

Every file of nibabel's own test data, plus generated files: malformed ones are refused cleanly (exit 2,
one `error:` line, no traceback, no output file); odd but valid ones (oblique, anisotropic, integers
with scaling, single-volume 4D, a small field of view, LPS, other formats) give outputs on the input's
grid (shape and affine as nibabel or the writer of the file has them).
"""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from input_cases import (
    GZIP_DEFECTS,
    assert_refused,
    damage_gzip,
    run_cli,
    save_nifti,
    save_tiny_models,
    scan_data,
    write_raw_nifti,
)

from seqinv.errors import SeqInvError
from seqinv.inference.batch import sidecar_path
from seqinv.io import read_volume

NIBABEL_ROOT = Path(nib.__file__).parent
NIBABEL_FILES = sorted(
    p for p in NIBABEL_ROOT.glob("**/tests/data/**/*") if p.is_file() and "__pycache__" not in p.parts
)
#: nibabel test files that are one 3D volume (the rest are refused, or need --volume below).
NIBABEL_VOLUMES = {
    "anatomical.nii",
    "minc1-no-att.mnc",
    "minc1_1_scale.mnc",
    "minc2-no-att.mnc",
    "minc2_1_scale.mnc",
    "reoriented_anat_moved.nii",
    "resampled_anat_moved.nii",  # 14 % NaN voxels: set to background with a warning
    "scaled+tlrc.BRIK",
    "scaled+tlrc.HEAD",
    "small.mnc",
    "standard.nii.gz",
    "tiny.mnc",
}
#: nibabel test files with several volumes: refused without --volume, processed with --volume 0.
NIBABEL_SERIES = {
    "example4d+orig.BRIK.gz",
    "example4d+orig.HEAD",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "phantom_EPI_asc_CLEAR_2_1.PAR",
    "phantom_EPI_asc_CLEAR_2_1.REC",
    "phantom_varscale.PAR",
    "phantom_varscale.REC",
    "test.mgz",
}
#: Too few voxels (or under 5 slices) to estimate the noise: denoise asks for --sigma.
NEEDS_SIGMA = {"standard.nii.gz", "test.mgz", "functional.nii", "resampled_anat_moved.nii"}
MAIN_OUTPUT = {"segment": "_dseg.nii.gz", "denoise": "_desc-denoised.nii.gz", "embed": "_features.npz"}
MODEL = {"segment": "seg", "denoise": "den", "embed": "seg"}


@pytest.fixture(scope="module")
def coarse_models(tmp_path_factory):
    """4 mm tiny models: nibabel's scans span up to 22 cm, which at 1 mm makes a slow test."""
    return save_tiny_models(tmp_path_factory.mktemp("coarse"), spacing_mm=4.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("fine"))


def _run(monkeypatch, capsys, command, scan, models, out, *extra):
    return run_cli(monkeypatch, capsys, command, scan, "--model", models / MODEL[command], "-o", out, *extra)


def _assert_on_grid(command: str, out: Path, shape: tuple, affine: np.ndarray) -> None:
    mains = [p for p in out.iterdir() if p.name.endswith(MAIN_OUTPUT[command])]
    assert len(mains) == 1, sorted(out.iterdir())
    main = mains[0]
    assert sidecar_path(main).is_file()
    if command == "embed":  # features live on a coarse grid of their own that starts where the scan does
        features = np.load(main)
        start = features["dense_affine"] @ np.array([-0.5, -0.5, -0.5, 1.0])  # corner of the first block
        corners = np.array(
            [[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)],
            float,
        )
        world = (affine @ corners.T)[:3]
        assert np.all(start[:3] >= world.min(axis=1) - 5) and np.all(start[:3] <= world.max(axis=1) + 5)
        assert np.isfinite(features["pooled"]).all()
        return
    result = nib.load(main)
    assert result.shape == tuple(shape)
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)
    values = np.asarray(result.dataobj)
    assert np.isfinite(values).all()
    if command == "segment":
        assert set(np.unique(values)) <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------------- nibabel's test data
@pytest.mark.parametrize("path", NIBABEL_FILES, ids=lambda p: str(p.relative_to(NIBABEL_ROOT)))
def test_every_nibabel_test_file(tmp_path, monkeypatch, capsys, coarse_models, path):
    for command in MAIN_OUTPUT:
        _check_nibabel_file(monkeypatch, capsys, command, path, coarse_models, tmp_path / command)


def _check_nibabel_file(monkeypatch, capsys, command, path, models, out):
    def run(*extra):
        return _run(monkeypatch, capsys, command, path, models, out, *extra)

    def refused(code, err, message=None):
        assert_refused(code, err, message)
        assert not out.exists() or list(out.iterdir()) == []

    code, err = run()
    if path.name not in NIBABEL_VOLUMES | NIBABEL_SERIES:
        refused(code, err)
        return
    extra = []
    if path.name in NIBABEL_SERIES:
        refused(code, err, "pick one with `--volume N`")
        extra = ["--volume", "0"]
        code, err = run(*extra)
    if command == "denoise" and path.name in NEEDS_SIGMA:
        refused(code, err, "give --sigma")
        code, err = run(*extra, "--sigma", "5")
    assert code == 0, err
    reference = nib.load(path)
    _assert_on_grid(command, out, reference.shape[:3], reference.affine)


@pytest.mark.filterwarnings("ignore::seqinv.io.InputWarning")
def test_nibabel_test_data_through_the_python_api_raise_only_input_errors():
    read, refused = 0, 0
    for path in NIBABEL_FILES:
        try:
            volume = read_volume(path, volume=0 if path.name in NIBABEL_SERIES else None)
        except SeqInvError:
            refused += 1
            continue
        assert volume.data.ndim == 3 and volume.data.dtype == np.float32
        read += 1
    assert read == len(NIBABEL_VOLUMES | NIBABEL_SERIES) and refused == len(NIBABEL_FILES) - read


# -------------------------------------------------------------------------------- generated odd and bad
def _rotation(z_deg, x_deg):
    z, x = np.deg2rad(z_deg), np.deg2rad(x_deg)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def _affine(linear, origin=(-10.0, 12.0, -8.0)):
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


OBLIQUE = _affine(_rotation(20, 10) * 1.1)
ANISOTROPIC = _affine(np.diag([0.6, 0.9, 3.5]))
LPS = _affine(np.diag([-1.0, -1.0, 1.0]), (30.0, 40.0, -20.0))
SHEARED = _affine([[1.0, 0.3, 0], [0, 1.0, 0], [0, 0.2, 1.2]])


def _int16_scaled(path):
    data = np.round(scan_data() * 40).astype(np.int16)
    image = nib.Nifti1Image(data, ANISOTROPIC)
    image.header.set_slope_inter(0.25, -10.0)
    nib.save(image, str(path))
    return data.shape, ANISOTROPIC


def _nifti(data, affine, dtype=np.float32):
    def make(path):
        save_nifti(path, data.astype(dtype), affine)
        return data.shape[:3], affine

    return make


def _mgz(path):
    nib.save(nib.MGHImage(scan_data(), OBLIQUE), str(path))
    return scan_data().shape, OBLIQUE


def _nrrd_lps(path):
    """ITK stores LPS: an identity direction with spacing (0.8, 1, 1.5) is RAS diag(-0.8, -1, 1.5)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(scan_data().transpose(2, 1, 0))
    image.SetSpacing((0.8, 1.0, 1.5))
    image.SetOrigin((5.0, -6.0, 7.0))
    sitk.WriteImage(image, str(path))
    return scan_data().shape, np.array(
        [[-0.8, 0, 0, -5.0], [0, -1.0, 0, 6.0], [0, 0, 1.5, 7.0], [0, 0, 0, 1]]
    )


#: case -> (file name, writer returning the expected (shape, affine))
ODD = {
    "oblique": ("scan.nii.gz", _nifti(scan_data(), OBLIQUE)),
    "anisotropic": ("scan.nii.gz", _nifti(scan_data((40, 32, 8)), ANISOTROPIC)),
    "int16_scaled": ("scan.nii.gz", _int16_scaled),
    "uint8": ("scan.nii", _nifti(scan_data(), np.eye(4), np.uint8)),
    "big_endian": ("scan.nii.gz", _nifti(scan_data(), OBLIQUE, ">f4")),
    "single_volume_4d": ("scan.nii.gz", _nifti(scan_data()[..., None], OBLIQUE)),
    "single_volume_5d": ("scan.nii.gz", _nifti(scan_data()[..., None, None], np.eye(4))),
    "small_fov": ("scan.nii.gz", _nifti(scan_data((7, 6, 5)), ANISOTROPIC)),
    "lps": ("scan.nii.gz", _nifti(scan_data(), LPS)),
    "sheared": ("scan.nii.gz", _nifti(scan_data(), SHEARED)),
    "mgz": ("scan.mgz", _mgz),
    "nrrd_lps": ("scan.nrrd", _nrrd_lps),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_but_valid_inputs_give_outputs_on_the_input_grid(tmp_path, monkeypatch, capsys, models, case):
    name, make = ODD[case]
    scan = tmp_path / name
    shape, affine = make(scan)
    for command in MAIN_OUTPUT:
        out = tmp_path / command
        code, err = _run(monkeypatch, capsys, command, scan, models, out)
        if command == "denoise" and case == "small_fov":  # 210 voxels: too few to estimate the noise
            assert_refused(code, err, "give --sigma")
            code, err = _run(monkeypatch, capsys, command, scan, models, out, "--sigma", "5")
        assert code == 0, err
        assert "Traceback" not in err
        _assert_on_grid(command, out, shape, affine)


def _truncated_voxels(path):
    save_nifti(path, scan_data((40, 40, 40)))
    path.write_bytes(path.read_bytes()[: 352 + 4000])  # .nii: the header is intact, the voxels are cut


def _gifti(path):
    array = nib.gifti.GiftiDataArray(np.zeros(100, np.float32), intent="NIFTI_INTENT_SHAPE")
    nib.save(nib.GiftiImage(darrays=[array]), str(path))


BAD = {
    "empty_file": ("scan.nii.gz", lambda p: p.write_bytes(b"")),
    "garbage_unknown_suffix": ("scan.dat", lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000))),
    "gzip_named_nii": ("scan.nii", lambda p: save_nifti(p.with_suffix(".nii.gz"), scan_data()).rename(p)),
    "truncated_voxels": ("scan.nii", _truncated_voxels),
    "nan_affine": (
        "scan.nii.gz",
        lambda p: write_raw_nifti(p, scan_data(), sform_code=2, srow_y=[0, np.nan, 0, 0]),
    ),
    "gifti_generated": ("scan.gii", _gifti),
    "no_dicom_folder": ("folder", lambda p: (p.mkdir(), (p / "notes.txt").write_text("x"))),
    "4d_volume_out_of_range": ("scan.nii.gz", _nifti(np.stack([scan_data()] * 2, -1), np.eye(4))),
    **{
        f"gzip_{d}": ("scan.nii.gz", lambda p, d=d: damage_gzip(save_nifti(p, scan_data()), d))
        for d in GZIP_DEFECTS
    },
    "mgz_bad_crc": ("scan.mgz", lambda p: (_mgz(p), damage_gzip(p, "crc"))),
}
#: what the one `error:` line says, where a case checks it
BAD_MESSAGES = {f"gzip_{d}": "compressed data is damaged" for d in GZIP_DEFECTS} | {
    "mgz_bad_crc": "compressed data is damaged"
}


@pytest.mark.parametrize("case", list(BAD))
def test_generated_bad_inputs_are_refused_cleanly(tmp_path, monkeypatch, capsys, models, case):
    name, make = BAD[case]
    scan = tmp_path / name
    make(scan)
    extra = ("--volume", "2") if case == "4d_volume_out_of_range" else ()
    for command in MAIN_OUTPUT:
        out = tmp_path / command
        code, err = _run(monkeypatch, capsys, command, scan, models, out, *extra)
        assert_refused(code, err, BAD_MESSAGES.get(case))
        assert not out.exists() or list(out.iterdir()) == []


# ------------------------------------------------------------------------------ real processes, a few
@pytest.mark.parametrize(
    "command, path, refused",
    [
        ("segment", NIBABEL_ROOT / "tests" / "data" / "row_major.dconn.nii", "CIFTI-2"),
        ("denoise", NIBABEL_ROOT / "tests" / "data" / "0.dcm", "a single DICOM slice"),
        ("embed", NIBABEL_ROOT / "tests" / "data" / "tinypet.v", "not a format seqinv reads"),
        ("segment", NIBABEL_ROOT / "tests" / "data" / "anatomical.nii", None),
    ],
    ids=["cifti", "dicom_slice", "ecat", "valid"],
)
def test_in_a_real_process(tmp_path, coarse_models, command, path, refused):
    out = tmp_path / "out"
    args = [command, path, "--model", coarse_models / MODEL[command], "-o", out, "--threads", "1"]
    proc = subprocess.run([sys.executable, "-m", "seqinv", *map(str, args)], capture_output=True, text=True)
    assert proc.stdout == ""
    if refused:
        assert_refused(proc.returncode, proc.stderr, refused)  # nothing from C libraries (ITK, MINC) either
        assert not out.exists() or list(out.iterdir()) == []
    else:
        assert proc.returncode == 0, proc.stderr
        _assert_on_grid(command, out, nib.load(path).shape[:3], nib.load(path).affine)


# ------------------------------------------------------------------------------ outputs against inputs
@pytest.mark.parametrize("command", list(MAIN_OUTPUT))
def test_an_output_naming_the_input_is_refused(tmp_path, monkeypatch, capsys, models, command):
    scan = tmp_path / "scan.nii.gz"
    save_nifti(scan, scan_data())
    before = scan.read_bytes()
    code, err = _run(monkeypatch, capsys, command, scan, models, scan)
    assert_refused(code, err)
    assert scan.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.parametrize("command", list(MAIN_OUTPUT))
def test_an_output_that_looks_like_another_format_is_refused(tmp_path, monkeypatch, capsys, models, command):
    scan = tmp_path / "scan.nii.gz"
    save_nifti(scan, scan_data())
    code, err = _run(monkeypatch, capsys, command, scan, models, tmp_path / "labels.mgz")
    assert_refused(code, err, "-o takes a folder")
    assert not (tmp_path / "labels.mgz").exists()


def test_a_folder_rerun_leaves_seqinv_outputs_out(tmp_path, monkeypatch, capsys, models):
    folder = tmp_path / "scans"
    folder.mkdir()
    save_nifti(folder / "scan.nii.gz", scan_data())
    code, _ = _run(monkeypatch, capsys, "segment", folder, models, folder)
    assert code == 0 and (folder / "scan_dseg.nii.gz").exists() and (folder / "scan_dseg.json").exists()
    code, err = _run(monkeypatch, capsys, "segment", folder, models, folder)
    assert code == 0 and "note: skipped 1 seqinv output" in err
    assert not list(folder.glob("*_dseg_dseg*"))
