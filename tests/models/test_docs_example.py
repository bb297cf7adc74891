"""The feature-extraction example in docs/models.md runs as written (offline, tiny model)."""

import re
from pathlib import Path

import nibabel as nib
import numpy as np

from seqinv.models import SeqInvEncoder, catalogue, sources
from seqinv.models.catalogue import PublishedModel

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def _example() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- example:features .*?-->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/models.md lost its feature-extraction example"
    return match.group(1)


def test_feature_extraction_example_runs(tmp_path, monkeypatch):
    from huggingface_hub import constants

    code = _example()
    assert len([line for line in code.splitlines() if line and not line.startswith(("import", "from"))]) == 3
    encoder = SeqInvEncoder(preset="tiny")
    encoder.save_pretrained(tmp_path / "weights" / "seqinv")
    entry = PublishedModel("seqinv", "1.0", "encoder", "features", "seqinv/none", "main", None, "test", True)
    kept = [e for e in catalogue.CATALOGUE if e.name != "seqinv"]
    monkeypatch.setattr(catalogue, "CATALOGUE", [*kept, entry])
    monkeypatch.setattr(sources, "BUNDLED_ROOT", tmp_path / "weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the internet
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((33, 40, 36), dtype=np.float32), np.eye(4)), tmp_path / "t1w.nii.gz")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    assert tuple(scope["features"].shape) == (1, 64)  # tiny preset: F5 = 64
    assert scope["encoder"].source.kind == "bundled"
    assert not scope["features"].requires_grad
