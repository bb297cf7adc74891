"""`seqinv train ...` through the CLI: fast start (no torch at import) and one-line errors for bad input."""

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seqinv", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_import_does_not_import_torch():
    code = "import sys, seqinv.cli; print('torch' in sys.modules, 'training.options' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the train commands are registered (training.options read) without importing torch
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--phantom"], "--output is required"),
        (["--phantom", "--maps", "some/folder", "--output", "OUT"], "exactly one data source"),
        (["--phantom", "--patch-size", "50", "--output", "OUT"], "--patch-size 50: must be a multiple of 16"),
    ],
)
def test_train_pretrain_bad_input_one_line_exit_2(tmp_path, args, expected):
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    result = _run("train", "pretrain", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "OUT").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--widths", "32,a", "--output", "OUT"], "--widths '32,a': give comma-separated numbers"),
        (["--patch-size", "15", "--output", "OUT"], "--patch-size 15: must be even"),
    ],
)
def test_train_denoise_bad_input_one_line_exit_2(tmp_path, args, expected):
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    result = _run("train", "denoise", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not (tmp_path / "OUT").exists()
