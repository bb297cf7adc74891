"""Bad input through the CLI: one `error:` line, exit 2, no traceback, no output file left behind."""

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from seqinv.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "seg"
    config = ModelConfig.from_preset(
        "tiny",
        arch="unet",
        task="segment",
        out_channels=4,
        labels=["bg", "csf", "gm", "wm"],
        patch_size=(32,) * 3,
    )
    SeqInvUNet(config).save_pretrained(folder)
    return folder


def _good(shape=(20, 22, 18)):
    return np.random.default_rng(0).random(shape).astype(np.float32) * 50 + 100


def _nifti(data, affine=None):
    return lambda p: nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), p)


def _truncated(path):
    _nifti(_good())(path)
    path.write_bytes(path.read_bytes()[:300])


BAD = {
    "missing": (lambda p: None, "no such file"),
    "text": (lambda p: p.write_text("hello, I am not an image"), "not a NIfTI image"),
    "truncated_gzip": (_truncated, "truncated"),
    "not_gzip_inside": (lambda p: p.write_bytes(gzip.compress(b"abc" * 100)), "not a NIfTI image"),
    "2d": (_nifti(_good((20, 22))), "2D image"),
    "flat_3d": (_nifti(_good((20, 22, 1))), "2D image"),
    "4d_several": (_nifti(np.stack([_good()] * 2, axis=-1)), "holds 2 volumes"),
    "all_zero": (_nifti(np.zeros((10, 10, 10), np.float32)), "every voxel equals 0"),
    "all_nan": (_nifti(np.full((10, 10, 10), np.nan, np.float32)), "every voxel is NaN"),
    "absurd_voxels": (_nifti(_good(), np.diag([1.0, 1.0, 80.0, 1.0])), "outside 0.05-20 mm"),
    "tiny_voxels": (_nifti(_good(), np.diag([0.001, 1.0, 1.0, 1.0])), "outside 0.05-20 mm"),
}


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["seqinv", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def _assert_one_error_line(err):
    lines = [line for line in err.splitlines() if not line.startswith("model ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys, model_dir, case):
    make, message = BAD[case]
    scan = tmp_path / "scan.nii.gz"
    make(scan)
    before = {p.name for p in tmp_path.iterdir()}
    code, err = _run(monkeypatch, capsys, "segment", scan, "--model", model_dir)
    assert code == 2
    _assert_one_error_line(err)
    assert message in err
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing written, no temporary left


def test_unwritable_output_folder(tmp_path, monkeypatch, capsys, model_dir):
    scan = tmp_path / "scan.nii.gz"
    _nifti(_good())(scan)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run(monkeypatch, capsys, "segment", scan, "--model", model_dir, "-o", blocker / "out")
    assert code == 2 and "cannot create output folder" in err
    _assert_one_error_line(err)


def test_unknown_task(tmp_path, monkeypatch, capsys):
    scan = tmp_path / "scan.nii.gz"
    _nifti(_good())(scan)
    code, err = _run(monkeypatch, capsys, "segment", scan, "--task", "brats")
    assert code == 2 and "unknown task 'brats'" in err and "ixi, arc" in err
    _assert_one_error_line(err)


def test_some_nan_voxels_are_background_and_the_scan_is_processed(tmp_path, monkeypatch, capsys, model_dir):
    data = _good()
    data[5, 5, 5:9] = np.nan
    scan = tmp_path / "scan.nii.gz"
    _nifti(data)(scan)
    code, err = _run(monkeypatch, capsys, "segment", scan, "--model", model_dir)
    assert code == 0
    assert "warning: scan.nii.gz: 4 NaN/Inf voxels" in err
    assert nib.load(tmp_path / "scan_dseg.nii.gz").shape == data.shape
