"""The Python API writes what the CLI writes; every published model runs its task end to end."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from seqinv.inference import denoise_files, embed_files, segment_files
from seqinv.models import catalogue
from seqinv.tasks import TASKS

LABELS = ["background", "csf", "gm", "wm"]
AFFINE = np.array([[0.9, 0.1, 0.0, -20.0], [-0.1, 1.1, 0.0, 5.0], [0.0, 0.0, 1.5, 8.0], [0, 0, 0, 1]])


def _scan(path, shape=(40, 44, 30)):
    rng = np.random.default_rng(0)
    data = np.zeros(shape, np.float32)
    data[5:-5, 5:-5, 4:-4] = 100 + 40 * rng.random((shape[0] - 10, shape[1] - 10, shape[2] - 8))
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


@pytest.fixture
def tissue_model(tiny_models):
    return tiny_models["ixi"]


def _same_sidecar(a: dict, b: dict) -> None:
    skip = {"timings_s", "outputs", "model"}
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    assert a["model"]["sha256"] == b["model"]["sha256"]


def test_segment_files_writes_what_the_cli_writes(tmp_path, monkeypatch, tissue_model):
    from typer.testing import CliRunner

    from seqinv.cli import app

    scan = _scan(tmp_path / "sub-01_T1w.nii.gz")
    lines = []
    summary = segment_files(
        scan,
        tmp_path / "api",
        model=tissue_model,
        probs=True,
        qc=tmp_path / "api" / "qc.png",
        log=lines.append,
    )
    assert summary.done == [scan] and len(lines) == 1 and lines[0].startswith("model ixi: local")
    args = ["segment", str(scan), "-o", str(tmp_path / "cli"), "--model", str(tissue_model), "--probs"]
    result = CliRunner().invoke(app, [*args, "--qc", str(tmp_path / "cli" / "qc.png")])
    assert result.exit_code == 0, result.output
    for name in ("sub-01_dseg.nii.gz", "sub-01_probseg.nii.gz"):
        api, cli = nib.load(tmp_path / "api" / name), nib.load(tmp_path / "cli" / name)
        assert np.array_equal(np.asarray(api.dataobj), np.asarray(cli.dataobj))
        assert np.allclose(api.affine, AFFINE) and np.allclose(cli.affine, AFFINE)
    assert (tmp_path / "api" / "qc.png").read_bytes() == (tmp_path / "cli" / "qc.png").read_bytes()
    api_meta = json.loads((tmp_path / "api" / "sub-01_dseg.json").read_text())
    _same_sidecar(api_meta, json.loads((tmp_path / "cli" / "sub-01_dseg.json").read_text()))
    assert summary.results[scan]["volumes_ml"] == api_meta["volumes_ml"]
    rows = {d: list(csv.DictReader((tmp_path / d / "volumes.csv").open())) for d in ("api", "cli")}
    assert [r["gm_ml"] for r in rows["api"]] == [r["gm_ml"] for r in rows["cli"]]
    assert float(rows["api"][0]["gm_ml"]) == pytest.approx(api_meta["volumes_ml"]["gm"], abs=1e-3)


def test_the_api_collects_failures_of_a_batch_and_goes_on(tmp_path, tissue_model):
    good = _scan(tmp_path / "a.nii.gz")
    bad = tmp_path / "b.nii.gz"
    bad.write_bytes(b"not a volume")
    summary = segment_files([good, bad], tmp_path / "out", model=tissue_model)
    assert summary.done == [good] and [p for p, _ in summary.failed] == [bad]
    assert (tmp_path / "out" / "a_dseg.nii.gz").exists() and not (tmp_path / "out" / "b_dseg.nii.gz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_published_model_runs_its_task_end_to_end(task, tmp_path):
    """The bundled default model of each task, on a small generated oblique volume, through the API."""
    entry = catalogue.resolve(TASKS[task].default_model)
    scan = _scan(tmp_path / "scan.nii.gz")
    settings = {"overlap": 0.25, "precision": "fp32"}
    if TASKS[task].config_task == "segment":
        summary = segment_files(scan, tmp_path / "out", task=task, settings=settings)
        out = nib.load(tmp_path / "out" / f"scan_{TASKS[task].output_suffix}.nii.gz")
        labels = np.asarray(out.dataobj)
        assert labels.max() < len(TASKS[task].labels)
        assert set(summary.results[scan]["volumes_ml"]) == set(TASKS[task].labels)
    elif task == "denoise":
        summary = denoise_files(scan, tmp_path / "out", settings=settings)
        out = nib.load(tmp_path / "out" / "scan_desc-denoised.nii.gz")
        assert np.isfinite(out.get_fdata()).all()
    else:
        (tmp_path / "out").mkdir()
        summary = embed_files(scan, tmp_path / "out" / "f.npz", settings=settings)
        features = np.load(tmp_path / "out" / "f.npz")
        assert features["pooled"].shape == (128,) and features["dense"].shape[0] == 128
        out = None
    if out is not None:
        assert out.shape == (40, 44, 30) and np.allclose(out.affine, AFFINE)
    meta = summary.results[scan]
    assert meta["model"]["sha256"] == entry.sha256 and meta["model"]["name"] == entry.name
