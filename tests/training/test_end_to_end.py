"""End to end at tiny scale on a real phantom: pretrain → fine-tune → evaluate → export → load and run."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner


@pytest.mark.slow
def test_pretrain_finetune_evaluate_export_and_run(tmp_path, monkeypatch):
    from seqinv.cli import app

    monkeypatch.setenv("SEQINV_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    tiny = ["--phantom", "--phantoms", 1, "--patch-size", 32, "--steps", 2, "--threads", 1]
    invoke("train", "pretrain", *tiny, "--preset", "tiny", "--batch-size", 2, "--output", tmp_path / "enc")
    invoke(
        "train",
        "segment",
        *tiny,
        "--encoder",
        tmp_path / "enc",
        "--task",
        "ixi",
        "--lr",
        1e-3,
        "--output",
        tmp_path / "seg",
    )
    assert (tmp_path / "enc" / "checkpoints").is_dir() and (tmp_path / "seg" / "model.safetensors").is_file()

    table = invoke(
        "evaluate",
        "--phantom",
        "--crop",
        48,
        "--model",
        f"seqinv={tmp_path / 'seg'}",
        "--output",
        tmp_path / "eval",
    )
    assert "| ixi | T1w | phantom | dice |" in table
    with open(tmp_path / "eval" / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    contrasts = {r["contrast"] for r in summary}
    assert contrasts == {"T1w", "T2w", "PDw", "FLAIR"}
    assert all(0 <= float(r["value"]) <= 1 for r in summary if r["metric"] == "dice")

    invoke(
        "train",
        "export",
        tmp_path / "seg",
        "--output",
        tmp_path / "hub",
        "--metrics",
        tmp_path / "eval" / "summary.csv",
        "--metrics-model",
        "seqinv",
    )
    card = (tmp_path / "hub" / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: image-segmentation" in card and "| ixi | T1w | phantom | dice |" in card
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["training"]["command"].startswith("seqinv train segment")
    assert "ixi/T1w/phantom/dice" in config["training"]["metrics"]

    from seqinv.inference import segment
    from seqinv.models import SeqInvUNet

    model = SeqInvUNet.from_pretrained(str(tmp_path / "hub"))
    affine = np.diag([1.2, 1.0, 1.0, 1.0])
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 34, 28), dtype=np.float32), affine), scan)
    result = segment(scan, model=model)
    labels = np.asarray(result.labels)
    assert labels.shape == (30, 34, 28) and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert torch.is_tensor(model(torch.zeros(1, 1, 32, 32, 32)))
