"""`seqinv train denoise` trains the default denoiser through the common loop (training/loop.py);
the research head on an encoder is `seqinv train denoise-head`."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

TINY = [
    "--phantoms", "1", "--contrasts-per-phantom", "1", "--no-icbm152", "--patch-size", "16",
    "--batch-size", "2", "--widths", "4,4", "--validate-every", "2", "--checkpoint-every", "2",
]  # fmt: skip


def _invoke(*args):
    from seqinv.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _blob(size: int = 24):
    axis = torch.linspace(-1, 1, size)
    return (1.0 - sum(g**2 for g in torch.meshgrid(axis, axis, axis, indexing="ij"))).clamp(min=0)


@pytest.fixture
def tiny_sources(monkeypatch):
    """A blob for the training images and one validation case (the phantoms take minutes to simulate)."""
    from training import denoise_resnet

    monkeypatch.setattr(denoise_resnet, "phantom_images", lambda seeds, contrasts, seed: [_blob()])
    clean = _blob(16)
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    case = ("blob/gaussian-0.05", noisy, clean, 0.05)
    monkeypatch.setattr(denoise_resnet, "validation_set", lambda: [case])


def _losses(folder, step: int) -> list[float]:
    return torch.load(folder / "checkpoints" / f"step_{step:07d}.pt", weights_only=True)["history"]["loss"]


def test_train_denoise_trains_the_default_denoiser_in_the_common_loop_and_resumes(
    tmp_path, tiny_sources, monkeypatch
):
    from seqinv.models import load_model
    from seqinv.models.denoiser import ResidualDenoiser
    from training import loop

    starts, run_loop = [], loop.run_loop

    def counted(**kw):
        starts.append(kw["start_step"])
        return run_loop(**kw)

    monkeypatch.setattr(loop, "run_loop", counted)
    out = tmp_path / "dn"
    _invoke("train", "denoise", *TINY, "--steps", "4", "--output", out)
    model, _ = load_model(str(out))
    assert isinstance(model, ResidualDenoiser) and model.config.arch == "denoiser"
    assert tuple(model.config.features) == (4, 4)
    training = model.config.training
    assert training["command"].startswith(f"seqinv train denoise --output {out} --phantoms 1")
    assert "--widths 4,4" in training["command"] and training["recipe"]["widths"] == [4, 4]
    assert training["steps"] in (2, 4)  # the step chosen on the development phantom
    full = _losses(out, 4)

    (out / "checkpoints" / "step_0000004.pt").unlink()
    _invoke("train", "denoise", *TINY, "--steps", "4", "--output", out)  # resumes at step 2
    assert starts == [0, 2]
    assert _losses(out, 4) == pytest.approx(full[2:], rel=1e-6)  # what an uninterrupted run did
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == [2, 4, 4]

    from training.export import export

    exported = export(out / "checkpoints" / "step_0000002.pt", tmp_path / "exported")
    again, _ = load_model(str(exported))
    assert isinstance(again, ResidualDenoiser)
    assert "ResidualDenoiser" in (exported / "README.md").read_text(encoding="utf-8")


def test_the_schedule_is_the_cosine_of_the_published_runs():
    from training import loop

    optimizer = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
    schedule = loop.cosine_schedule(optimizer, 100, final=1e-5 / 1e-3, warmup=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # the formula of the loop that made denoise 2.0-2.2
    published = [
        (1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * s / 100))) * min(1, (s + 1) / 10)
        for s in range(100)
    ]
    assert lrs == pytest.approx(published, rel=1e-9)


class _SlowClock:
    """`time` for training/denoise_resnet.py where every reading is one second later."""

    def __init__(self):
        self.now = 0.0

    def time(self) -> float:
        self.now += 1.0
        return self.now

    def strftime(self, fmt: str) -> str:
        return "00:00:00"


def test_a_spent_time_budget_ends_the_run_with_a_checkpoint(tmp_path, tiny_sources, monkeypatch):
    from training import denoise_resnet

    monkeypatch.setattr(denoise_resnet, "time", _SlowClock())
    out = tmp_path / "dn"
    _invoke("train", "denoise", *TINY, "--steps", "50", "--time-budget-s", "20", "--output", out)
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert 1 < logged[-1] < 50 and checkpoints[-1] == f"step_{logged[-1]:07d}.pt"  # ended on the budget
    _invoke("train", "denoise", *TINY, "--steps", "50", "--time-budget-s", "20", "--output", out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints  # spent: no more steps
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == logged


def test_the_script_name_of_the_published_lineage_runs_the_same_training(tmp_path, tiny_sources):
    from seqinv.models import load_model
    from training.denoise_resnet import main

    out = tmp_path / "dn"
    main([*TINY, "--steps", "2", "--output", str(out)])
    model, _ = load_model(str(out))
    assert model.config.training["command"].startswith(f"python -m training.denoise_resnet --output {out}")
    main(["--export", str(out / "best.pt"), "--output", str(tmp_path / "again")])  # a chosen checkpoint
    assert load_model(str(tmp_path / "again"))[0].config.training["steps"] == 2


def test_the_research_head_trains_as_denoise_head(tmp_path, monkeypatch):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from tests.training.test_pretrain_finetune import sphere_subject
    from training import finetune

    SeqInvEncoder(preset="tiny").save_pretrained(tmp_path / "enc")
    monkeypatch.setattr(finetune, "build_subjects", lambda opts: ([sphere_subject()], "spheres"))
    args = ["--encoder", tmp_path / "enc", "--phantom", "--patch-size", "32", "--steps", "2"]
    _invoke("train", "denoise-head", *args, "--precision", "fp32", "--output", tmp_path / "head")
    head = SeqInvUNet.from_pretrained(str(tmp_path / "head"))
    assert head.config.output_kind == "denoise" and head.config.out_channels == 1
    assert head.config.training["command"].startswith("seqinv train denoise-head --output")
    assert head.config.training["noise_sigma_range"] == [0.05, 0.4]
