"""Issue 31 through the API: the volumes CSV under concurrent writers, its keys and cells, and what a
killed run leaves behind."""

import csv
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from seqinv.inference import batch, segment_files
from seqinv.inference.batch import recover_cases, update_csv, writing_into


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _scan(path):
    data = np.zeros((24, 26, 20), np.float32)
    data[3:-3, 3:-3, 3:-3] = 100 + 20 * np.random.default_rng(0).random((18, 20, 14))
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


WRITER = """
import sys
from pathlib import Path
from seqinv.inference.batch import update_csv
path, name = Path(sys.argv[1]), sys.argv[2]
for i in range(200):
    update_csv(path, [{"input": f"/{name}/{i}", "gm_ml": str(i)}])
"""


def test_two_writers_of_one_csv_keep_every_row(tmp_path):
    path = tmp_path / "volumes.csv"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), name], env=env)
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(_rows(path)) == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.csv"]  # no lock file or temporary left


def test_without_fcntl_the_csv_is_still_written(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "fcntl", None)
    update_csv(tmp_path / "v.csv", [{"input": "/a", "gm_ml": "1"}])
    update_csv(tmp_path / "v.csv", [{"input": "/b", "gm_ml": "2"}])
    assert [r["input"] for r in _rows(tmp_path / "v.csv")] == ["/a", "/b"]


def test_stale_csv_temporaries_are_removed_under_the_lock(tmp_path):
    stale = tmp_path / ".v.csv.abcd1234.tmp.csv"
    stale.write_text("half")
    update_csv(tmp_path / "v.csv", [{"input": "/a"}])
    assert not stale.exists()


def test_cells_a_spreadsheet_would_run_are_escaped(tmp_path):
    path = tmp_path / "v.csv"
    row = {"input": "/a", "=HYPERLINK(1)_ml": "1.000", "+x_ml": "-2.5", "@y_ml": "-1+1", "z_ml": "=1"}
    update_csv(path, [row])
    update_csv(path, [{**row, "input": "/b"}])  # read back and merged: escaped once, same columns
    text = path.read_text()
    assert text.splitlines()[0] == "input,'=HYPERLINK(1)_ml,'+x_ml,'@y_ml,z_ml"
    assert [r["'@y_ml"] for r in _rows(path)] == ["'-1+1"] * 2
    assert [r["'+x_ml"] for r in _rows(path)] == ["-2.5"] * 2  # numbers stay numbers
    assert [r["z_ml"] for r in _rows(path)] == ["'=1"] * 2


def test_rows_are_keyed_by_the_resolved_input(tmp_path, monkeypatch, tiny_models):
    scans, work = tmp_path / "scans", tmp_path / "work"
    scans.mkdir(), work.mkdir()
    _scan(scans / "x.nii.gz")
    volumes = tmp_path / "volumes.csv"
    monkeypatch.chdir(tmp_path)
    segment_files("scans/x.nii.gz", "out", model=tiny_models["ixi"], volumes=volumes)
    monkeypatch.chdir(work)
    segment_files("../scans/x.nii.gz", "../out", model=tiny_models["ixi"], volumes=volumes)
    (row,) = _rows(volumes)
    assert row["input"] == str(scans / "x.nii.gz") and row["dseg"] == str(tmp_path / "out" / "x_dseg.nii.gz")


def test_segment_returns_probabilities_when_asked(tiny_models, tmp_path):
    from seqinv.inference import segment

    scan = _scan(tmp_path / "x.nii.gz")
    assert segment(scan, model=tiny_models["ixi"]).probs is None  # as the README says
    assert segment(scan, model=tiny_models["ixi"], probs=True).probs.shape[0] == 4


# ------------------------------------------------------------------------------- what kill -9 leaves
def _killed_case(folder):
    """A case a killed run left: new labels beside the old sidecar, a backup, a 0600 temporary."""
    (folder / "a_dseg.nii.gz").write_text("new labels")
    (folder / ".a_dseg.nii.gz.seqinv-previous").write_text("old labels")
    (folder / "a_dseg.json").write_text('{"outputs_sha256": {"dseg": "sha of the old labels"}}')
    temp = folder / ".a_probseg.nii.gz.k3j_x9a2.tmp.nii.gz"
    temp.write_text("half")
    temp.chmod(0o600)
    return [[folder / "a_dseg.nii.gz", folder / "a_probseg.nii.gz", folder / "a_dseg.json"]]


def test_a_killed_case_is_rolled_back_on_the_next_run(tmp_path):
    with writing_into(_killed_case(tmp_path)):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dseg.json", "a_dseg.nii.gz"]
    assert (tmp_path / "a_dseg.nii.gz").read_text() == "old labels"


def test_a_finished_case_keeps_its_new_files(tmp_path):
    import hashlib

    cases = _killed_case(tmp_path)
    sha = hashlib.sha256(b"new labels").hexdigest()
    (tmp_path / "a_dseg.json").write_text(f'{{"outputs_sha256": {{"dseg": "{sha}"}}}}')
    recover_cases(cases)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dseg.json", "a_dseg.nii.gz"]
    assert (tmp_path / "a_dseg.nii.gz").read_text() == "new labels"


@pytest.mark.skipif(batch.fcntl is None, reason="no folder locks without fcntl")
def test_files_of_a_live_run_are_left_alone(tmp_path):
    cases = _killed_case(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        batch.fcntl.flock(fd, batch.fcntl.LOCK_SH)  # another process writing into this folder
        with writing_into(cases):
            assert sorted(p.name for p in tmp_path.iterdir()) == before
    finally:
        os.close(fd)
