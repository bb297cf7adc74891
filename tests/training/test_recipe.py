"""`seqinv train replay`: a recipe's stages run in order, and the exported model records its lineage."""

import json

import pytest
from typer.testing import CliRunner

TINY = """
model = "tiny"
version = "0.1"

[[stage]]
name = "enc"
command = "pretrain"
[stage.options]
phantom = true
phantoms = 1
preset = "tiny"
patch_size = 32
batch_size = 2
steps = 2
threads = 1
precision = "fp32"

[[stage]]
name = "seg"
command = "segment"
[stage.options]
task = "ixi"
encoder = "@enc"
phantom = true
phantoms = 1
patch_size = 32
steps = 1
threads = 1
precision = "fp32"
"""


def _invoke(*args):
    from seqinv.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_replay_runs_the_stages_in_order_and_export_records_the_lineage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative runs/, as a user would type it
    (tmp_path / "tiny.toml").write_text(TINY)
    dry = _invoke("train", "replay", "tiny.toml", "--runs", "runs", "--dry-run").splitlines()
    assert dry[0].startswith("seqinv train pretrain --output runs/enc --phantom --phantoms 1 --preset tiny")
    assert dry[1].startswith("seqinv train segment --output runs/seg --encoder runs/enc")
    assert not (tmp_path / "runs").exists()

    out = _invoke("train", "replay", "tiny.toml", "--runs", "runs").splitlines()
    assert out[:1] == dry[:1] and dry[1] in out
    lineage = json.loads((tmp_path / "runs" / "seg" / "lineage.json").read_text())
    assert lineage["recipe"] == "tiny.toml" and lineage["version"] == "0.1"
    assert [s["command"] for s in lineage["stages"]] == dry
    again = _invoke("train", "replay", "tiny.toml", "--runs", "runs").splitlines()
    assert again == ["# done: " + line for line in dry]  # finished stages are kept

    _invoke("train", "export", tmp_path / "runs" / "seg", "--output", tmp_path / "hub")  # an absolute path
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["task_name"] == "ixi"
    assert config["training"]["lineage"] == lineage
    assert str(tmp_path) not in json.dumps(config)  # no machine paths in a published file
    assert config["training"]["exported_from"].startswith("runs/seg")


def test_exported_records_carry_no_machine_paths(tmp_path, monkeypatch):
    from training.export import portable

    monkeypatch.chdir(tmp_path)
    record = {
        "command": f"seqinv train segment --output {tmp_path}/runs/seg --init /scratch/me/runs/e2e7b",
        "options": {"output": str(tmp_path / "runs" / "seg"), "init": "/work/runs/s9/X", "data": ""},
        "data": "48/48 subjects (100 % labels)",
        "exported_from": str(tmp_path),
    }
    assert portable(record) == {
        "command": "seqinv train segment --output runs/seg --init e2e7b",
        "options": {"output": "runs/seg", "init": "X", "data": ""},
        "data": "48/48 subjects (100 % labels)",
        "exported_from": ".",
    }


def test_a_stage_naming_no_earlier_stage_is_one_clear_error(tmp_path):
    from seqinv.errors import InputError
    from training.recipe import plan

    (tmp_path / "bad.toml").write_text(TINY.replace('"@enc"', '"@nope"'))
    with pytest.raises(InputError, match=r"stage 'seg': encoder = '@nope' names no earlier stage"):
        plan(tmp_path / "bad.toml", tmp_path / "runs")
    (tmp_path / "ok.toml").write_text(TINY)
    with pytest.raises(InputError, match=r"has no stage .x."):
        plan(tmp_path / "ok.toml", tmp_path / "runs", until="x")
