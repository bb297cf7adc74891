"""`seqinv train replay`: a recipe's stages run in order, and the exported model records its lineage."""

import json
from pathlib import Path

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


TINY_DENOISE = """
model = "denoise"
version = "0.1"

[[stage]]
name = "dn"
command = "denoise-resnet"
[stage.options]
phantoms = 1
contrasts_per_phantom = 1
icbm152 = false
patch_size = 16
batch_size = 2
steps = 2
widths = [4, 4]
validate_every = 1
"""


def _blob(size: int = 24):
    import torch

    axis = torch.linspace(-1, 1, size)
    r2 = sum(g**2 for g in torch.meshgrid(axis, axis, axis, indexing="ij"))
    return (1.0 - r2).clamp(min=0)  # a smooth head-like blob, 1 at the centre, 0 in the corners


def test_replay_trains_and_exports_a_denoise_resnet_stage(tmp_path, monkeypatch):
    import torch

    from seqinv.models import load_model
    from seqinv.models.denoiser import ResidualDenoiser
    from training import denoise_resnet

    # tiny in-memory sources instead of the simulated phantoms (the recipe plumbing is under test here)
    monkeypatch.setattr(denoise_resnet, "phantom_images", lambda seeds, contrasts, seed: [_blob()])
    clean = _blob(16)
    case = ("blob/0/gaussian-0.05", clean + 0.05 * torch.randn(clean.shape), clean, 0.05)
    monkeypatch.setattr(denoise_resnet, "validation_set", lambda: [case])
    monkeypatch.chdir(tmp_path)
    stage = "nonlocal_stage = { search = 1, h = 0.9, weight = 0.5 }\n"
    (tmp_path / "dn.toml").write_text(TINY_DENOISE.replace('version = "0.1"\n', 'version = "0.1"\n' + stage))
    dry = _invoke("train", "replay", "dn.toml", "--runs", "runs", "--dry-run").splitlines()
    assert dry == [
        "python -m training.denoise_resnet --output runs/dn --phantoms 1 --contrasts-per-phantom 1 "
        "--no-icbm152 --patch-size 16 --batch-size 2 --steps 2 --widths 4,4 --validate-every 1"
    ]
    args, recipe = denoise_resnet.parse(dry[0].split()[3:])  # the printed line gives the stage's recipe
    assert recipe.widths == (4, 4) and recipe.icbm152 is False and str(args.output) == "runs/dn"
    assert not (tmp_path / "runs").exists()

    assert _invoke("train", "replay", "dn.toml", "--runs", "runs").splitlines()[:1] == dry
    folder = tmp_path / "runs" / "dn"
    model, _ = load_model(str(folder))
    assert isinstance(model, ResidualDenoiser) and model.config.task_name == "denoise"
    assert tuple(model.config.features) == (4, 4)
    training = json.loads((folder / "config.json").read_text())["training"]
    lineage = json.loads((folder / "lineage.json").read_text())
    assert training["lineage"] == lineage and lineage["recipe"] == "dn.toml" and lineage["version"] == "0.1"
    assert [s["command"] for s in lineage["stages"]] == dry == [training["command"]]
    # the recipe's second stage reaches the last stage's model (what `seqinv denoise` runs by default)
    assert lineage["nonlocal_stage"] == model.config.nonlocal_stage == {"search": 1, "h": 0.9, "weight": 0.5}
    assert training["steps"] in (1, 2) and training["recipe"]["widths"] == [4, 4]
    again = _invoke("train", "replay", "dn.toml", "--runs", "runs").splitlines()
    assert again == ["# done: " + dry[0]]  # the exported folder counts as finished


def test_a_denoise_resnet_stage_refuses_unknown_options(tmp_path):
    from seqinv.errors import InputError
    from training.recipe import plan

    (tmp_path / "bad.toml").write_text(TINY_DENOISE.replace("widths", "width"))
    with pytest.raises(InputError, match=r"recipe .*bad.toml: stage 'dn': unknown options \['width'\]"):
        plan(tmp_path / "bad.toml", tmp_path / "runs")
    (tmp_path / "stage.toml").write_text(TINY_DENOISE + "[nonlocal_stage]\nweight = 2.0\n")
    with pytest.raises(InputError, match=r"stage.toml: nonlocal_stage: .*weight must be in"):
        plan(tmp_path / "stage.toml", tmp_path / "runs")


def test_only_the_last_stage_of_a_nested_recipe_records_the_second_stage(tmp_path):
    from training.recipe import lineage, plan

    (tmp_path / "inner.toml").write_text(TINY_DENOISE.replace('name = "dn"', 'name = "first"'))
    outer = (
        'model = "denoise"\nversion = "0.2"\nnonlocal_stage = { h = 0.9 }\n\n'
        '[[stage]]\nname = "base"\nrecipe = "inner.toml"\n'
        + TINY_DENOISE.split('version = "0.1"\n')[1].replace("init", "x")
    )
    (tmp_path / "outer.toml").write_text(outer)
    stages = plan(tmp_path / "outer.toml", tmp_path / "runs")
    assert [s.name for s in stages] == ["first", "dn"]
    records = [lineage(tmp_path / "outer.toml", stages, i) for i in range(2)]
    assert "nonlocal_stage" not in records[0] and records[1]["nonlocal_stage"] == {"h": 0.9}
    first_only = plan(tmp_path / "outer.toml", tmp_path / "runs", until="base")
    assert "nonlocal_stage" not in lineage(tmp_path / "outer.toml", first_only, 0)


def test_the_denoise_resnet_script_reads_flat_and_stage_recipes_alike(tmp_path):
    from training.denoise_resnet import read_recipe

    (tmp_path / "stage.toml").write_text(TINY_DENOISE)
    flat = TINY_DENOISE.split("[stage.options]")[1]
    (tmp_path / "flat.toml").write_text("[train]" + flat)
    recipe = read_recipe(str(tmp_path / "stage.toml"))
    assert recipe == read_recipe(str(tmp_path / "flat.toml")) == read_recipe(f"{tmp_path}/stage.toml#dn")
    assert (recipe.widths, recipe.patch_size, recipe.icbm152) == ((4, 4), 16, False)
    with pytest.raises(SystemExit, match=r"0 denoise-resnet stages match"):
        read_recipe(f"{tmp_path}/stage.toml#other")
    (tmp_path / "flat.toml").write_text("[train]\nwidth = [4]\n")
    with pytest.raises(SystemExit, match=r"unknown recipe keys \['width'\]"):
        read_recipe(str(tmp_path / "flat.toml"))


def test_the_research_head_recipe_runs_as_denoise_head_and_keeps_its_published_name(tmp_path):
    from seqinv.errors import InputError
    from training.recipe import plan

    recipe = Path(__file__).resolve().parents[2] / "training" / "recipes" / "denoise.toml"
    last = plan(recipe, "runs")[-1]
    assert last.command == "denoise-head" and last.options.task == "denoise"
    assert last.command_line.startswith("seqinv train denoise --output runs/denoise --encoder runs/seqinv")
    assert last.run_line == last.command_line.replace("train denoise ", "train denoise-head ", 1)
    shown = _invoke("train", "replay", recipe, "--dry-run").splitlines()
    assert shown[-1] == last.run_line  # a replay shows what it runs
    bad = TINY.replace('command = "segment"', 'command = "segment"\npublished_as = "denoise"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(InputError, match="'seg': published_as 'denoise' is no earlier name of 'segment'"):
        plan(tmp_path / "bad.toml", "runs")


def test_a_denoise_stage_is_the_default_denoiser_under_its_new_name(tmp_path):
    from training.options import DenoiseResnetOptions
    from training.recipe import plan

    (tmp_path / "dn.toml").write_text(TINY_DENOISE.replace('"denoise-resnet"', '"denoise"'))
    (stage,) = plan(tmp_path / "dn.toml", "runs")
    assert isinstance(stage.options, DenoiseResnetOptions) and stage.options.widths == (4, 4)
    expected = (
        "seqinv train denoise --output runs/dn --phantoms 1 --contrasts-per-phantom 1 --no-icbm152 "
        "--patch-size 16 --batch-size 2 --steps 2 --widths 4,4 --validate-every 1"
    )
    assert stage.command_line == stage.run_line == expected
