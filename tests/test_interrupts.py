"""Ctrl-C and SIGTERM during a batch (issue 19): no partial output, one line, exit 130 / 143, and the next
run with --skip-existing completes the rest."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from input_cases import save_nifti, save_tiny_models, scan_data

from seqinv.inference.batch import run_cases, sidecar_path
from seqinv.inference.transaction import WriteTransaction
from seqinv.interrupts import Interrupted
from seqinv.io import write_volume

N_SCANS = 6


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"))


def _no_temporaries(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden


def test_a_case_interrupted_midway_leaves_none_of_its_files(tmp_path):
    data = scan_data()
    inputs = [tmp_path / f"in{i}.nii.gz" for i in range(3)]
    outputs = [tmp_path / f"out{i}.nii.gz" for i in range(3)]

    def process(src, dst, writes):
        write_volume(writes.output(dst), data, np.eye(4))
        if dst.name == "out1.nii.gz":  # stopped after its first file, before its second
            raise Interrupted(signal.SIGTERM)
        write_volume(writes.output(dst.with_name(dst.name.replace("out", "probs"))), data, np.eye(4))

    with pytest.raises(Interrupted):
        run_cases(inputs, outputs, process, lambda s, d: False, "test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out0.nii.gz", "probs0.nii.gz"]


def test_a_transaction_keeps_files_of_a_finished_case(tmp_path):
    with WriteTransaction() as writes:
        write_volume(writes.output(tmp_path / "a.nii.gz"), scan_data(), np.eye(4))
    assert writes.written == [tmp_path / "a.nii.gz"] and (tmp_path / "a.nii.gz").is_file()
    with pytest.raises(KeyboardInterrupt), WriteTransaction() as writes:
        write_volume(writes.output(tmp_path / "b.nii.gz"), scan_data(), np.eye(4))
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


def test_a_failed_rerun_keeps_the_previous_complete_result(tmp_path):
    first, second = scan_data(seed=1), scan_data(seed=2)
    with WriteTransaction() as writes:
        write_volume(writes.output(tmp_path / "a.nii.gz"), first, np.eye(4))
        write_volume(writes.output(tmp_path / "a_probs.nii.gz"), first, np.eye(4))
    with pytest.raises(KeyboardInterrupt), WriteTransaction() as writes:  # replaces one file, then stops
        write_volume(writes.output(tmp_path / "a.nii.gz"), second, np.eye(4))
        writes.output(tmp_path / "a_probs.nii.gz")  # kept, stopped before it was written
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "a_probs.nii.gz"]
    np.testing.assert_allclose(nib.load(tmp_path / "a.nii.gz").get_fdata(), first, rtol=1e-6)
    with WriteTransaction() as writes:  # a finished re-run replaces it and leaves no backup behind
        write_volume(writes.output(tmp_path / "a.nii.gz"), second, np.eye(4))
    np.testing.assert_allclose(nib.load(tmp_path / "a.nii.gz").get_fdata(), second, rtol=1e-6)
    _no_temporaries(tmp_path)


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    return [
        save_nifti(folder / f"sub-{i:02d}_T1w.nii.gz", scan_data((48, 48, 48), seed=i))
        for i in range(N_SCANS)
    ]


def _start(args: list) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    return subprocess.Popen(
        [sys.executable, "-m", "seqinv", *map(str, args), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _signal_mid_batch(proc: subprocess.Popen, out: Path, signum: int) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.json"))) < 2:  # the first case is surely finished once the second is
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no case finished within 120 s"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _check_complete(out: Path, kind: str, suffixes: tuple[str, ...]) -> int:
    """Every main output has its sidecar and siblings, and each file reads in full; returns how many."""
    _no_temporaries(out)
    mains = sorted(out.glob(f"*{kind}*.nii.gz"))
    for main in mains:
        meta = json.loads(sidecar_path(main).read_text())
        assert Path(meta["input"]).name.startswith("sub-")
        for suffix in suffixes:
            sibling = out / main.name.replace(kind, suffix)
            assert np.isfinite(nib.load(sibling).get_fdata()).all()
    return len(mains)


def _one_line(err: str, start: str) -> None:
    """One line besides the model line and those of the cases that finished (`wrote ...`)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("model ", "wrote "))]
    assert len(lines) == 1 and lines[0].startswith(start), err
    assert "Traceback" not in err


def test_ctrl_c_during_segment_then_skip_existing_completes(tmp_path, tiny_models):
    scans, out = _inputs(tmp_path / "in"), tmp_path / "out"
    args = ["segment", tmp_path / "in", "-o", out, "--model", tiny_models / "seg", "--probs"]
    code, err = _signal_mid_batch(_start(args), out, signal.SIGINT)
    assert code == 130, err
    _one_line(err, "interrupted (SIGINT)")
    done = _check_complete(out, "dseg", ("dseg", "probseg"))
    assert 1 <= done < N_SCANS
    with open(out / "volumes.csv", newline="") as fh:  # the finished scans are in the cohort CSV already
        assert len(list(csv.DictReader(fh))) == done

    proc = _start([*args, "--skip-existing"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"segment: {N_SCANS - done} done, {done} skipped, 0 failed" in err
    assert _check_complete(out, "dseg", ("dseg", "probseg")) == N_SCANS
    with open(out / "volumes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["input"]).name for r in rows) == sorted(p.name for p in scans)


def test_sigterm_during_denoise_then_skip_existing_completes(tmp_path, tiny_models):
    _inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["denoise", tmp_path / "in", "-o", out, "--model", tiny_models / "den"]
    code, err = _signal_mid_batch(_start(args), out, signal.SIGTERM)
    assert code == 143, err
    _one_line(err, "interrupted (SIGTERM)")
    done = _check_complete(out, "desc-denoised", ("desc-denoised",))
    assert 1 <= done < N_SCANS

    proc = _start([*args, "--skip-existing"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _check_complete(out, "desc-denoised", ("desc-denoised",)) == N_SCANS


#: `seqinv` whose probabilities never finish: kill -9 finds a case half written, its temporary open.
STUCK_PROBS = """
import sys, time
import seqinv.inference.files as files
from seqinv.io import atomic_path

def stuck(path, *args, **kwargs):
    with atomic_path(path):
        time.sleep(600)

files.write_probabilities = stuck
from seqinv.cli import main
sys.argv = ["seqinv", *sys.argv[1:]]
main()
"""


def _other_model(tiny_models: Path, folder: Path) -> Path:
    from seqinv.models import SeqInvUNet

    net = SeqInvUNet.from_pretrained(tiny_models / "seg")
    for weight in net.parameters():
        weight.data.mul_(1.5)
    net.save_pretrained(folder)
    return folder


def _kill_9_mid_case(args: list, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    proc = subprocess.Popen([sys.executable, "-c", STUCK_PROBS, *map(str, args)], env=env, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".*probseg*.tmp*")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=60)


def _run_ok(args: list) -> str:
    proc = _start(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def test_kill_9_mid_overwrite_then_skip_existing_trusts_only_whole_cases(tmp_path, tiny_models):
    save_nifti(tmp_path / "sub-01_T1w.nii.gz", scan_data((48, 48, 48)))
    out, other = tmp_path / "out", _other_model(tiny_models, tmp_path / "other")
    args = ["segment", tmp_path / "sub-01_T1w.nii.gz", "-o", out, "--probs"]
    _run_ok([*args, "--model", tiny_models / "seg"])
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    _kill_9_mid_case([*args, "--model", other], out)
    hidden = [p for p in out.iterdir() if p.name.startswith(".")]
    assert {p.name.rsplit(".", 1)[-1] for p in hidden} >= {"seqinv-previous"}  # the mess kill -9 leaves
    assert any(".tmp" in p.name for p in hidden)  # and the half-written temporary
    assert (out / "sub-01_dseg.nii.gz").read_bytes() != first["sub-01_dseg.nii.gz"]

    err = _run_ok([*args, "--model", tiny_models / "seg", "--skip-existing"])  # rolled back: whole again
    assert "skipped " in err and {p.name: p.read_bytes() for p in out.iterdir()} == first
    err = _run_ok([*args, "--model", other, "--skip-existing"])  # another model: made again
    assert "wrote " in err
    _no_temporaries(out)
    meta = json.loads((out / "sub-01_dseg.json").read_text())
    assert meta["model"]["location"] == str(other)
    for kind in ("dseg", "probseg"):
        digest = hashlib.sha256((out / f"sub-01_{kind}.nii.gz").read_bytes()).hexdigest()
        assert meta["outputs_sha256"][kind] == digest
