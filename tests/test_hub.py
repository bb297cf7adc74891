"""Loading through the real huggingface_hub client from a local fake Hub; registry; `seqinv models` CLI."""

import hashlib
import socket
import subprocess
import sys
import time

import pytest
import torch
from hub_server import fake_hub, fake_hub_server  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from seqinv.errors import WeightsError
from seqinv.models import SeqInvEncoder, SeqInvUNet, load_model, registry, resolve
from seqinv.models.hub import WEIGHTS_NAME
from seqinv.models.registry import PublishedModel, bundle_model

REPO = "seqinv/test-tiny"


def _tiny_unet(seed):
    torch.manual_seed(seed)
    return SeqInvUNet(
        preset="tiny", out_channels=2, labels=["background", "lesion"], name=f"tiny{seed}"
    ).eval()


def _same_weights(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.fixture
def published(fake_hub, tmp_path):  # noqa: F811
    """REPO on the fake Hub (two commits) and its first model saved locally."""
    first, second = _tiny_unet(1), _tiny_unet(2)
    first.save_pretrained(tmp_path / "first")
    second.save_pretrained(tmp_path / "second")
    commit1 = fake_hub.add_folder(REPO, tmp_path / "first")
    commit2 = fake_hub.add_folder(REPO, tmp_path / "second")
    return {"hub": fake_hub, "models": (first, second), "commits": (commit1, commit2), "dir": tmp_path}


@pytest.fixture
def entry(published, monkeypatch, tmp_path):
    """A registry entry `tinyreg` for REPO at its first commit, with the right sha256 and a bundle folder."""
    sha = hashlib.sha256((tmp_path / "first" / WEIGHTS_NAME).read_bytes()).hexdigest()
    item = PublishedModel("tinyreg", "task", REPO, published["commits"][0], sha, "tinyreg", "test model")
    monkeypatch.setitem(registry.PUBLISHED, "tinyreg", item)
    monkeypatch.setattr(registry, "BUNDLED_ROOT", tmp_path / "weights")
    return item


def _go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_load_by_repo_id_through_the_hub_client(published):
    model, source = load_model(REPO)
    assert source.kind == "hub" and source.location == REPO
    assert source.revision == published["commits"][1]  # main is the second commit
    assert _same_weights(model, published["models"][1])
    assert ("GET", f"/{REPO}/resolve/main/{WEIGHTS_NAME}") in published["hub"].requests


def test_pinned_revision_gives_that_commit(published):
    model = SeqInvUNet.from_pretrained(REPO, revision=published["commits"][0])
    assert _same_weights(model, published["models"][0])
    assert model.source.revision == published["commits"][0]


def test_offline_mode_uses_the_cache_without_requests(published, monkeypatch):
    load_model(REPO)
    published["hub"].requests.clear()
    _go_offline(monkeypatch)
    model, source = load_model(REPO)
    assert source.kind == "cache" and "offline mode" in source.note
    assert _same_weights(model, published["models"][1])
    assert published["hub"].requests == []


def test_unreachable_hub_fails_fast_and_uses_the_cache(published, monkeypatch):
    load_model(REPO)
    silent = socket.socket()  # accepts connections (kernel backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("SEQINV_HUB_TIMEOUT_S", "0.5")
    start = time.monotonic()
    try:
        _, source = load_model(REPO)
    finally:
        silent.close()
    assert time.monotonic() - start < 5
    assert source.kind == "cache" and "unreachable" in source.note


@pytest.mark.parametrize(
    ("repo", "revision", "message"),
    [
        ("seqinv/missing", None, r"Hub repository seqinv/missing not found"),
        (REPO, "v9", r"revision 'v9' not found in Hub repository seqinv/test-tiny"),
        ("seqinv/config-only", None, r"seqinv/config-only@main has no model.safetensors"),
    ],
)
def test_hub_errors_are_one_clear_line(published, repo, revision, message):
    published["hub"].add_files(
        "seqinv/config-only", {"config.json": (published["dir"] / "first/config.json").read_bytes()}
    )
    with pytest.raises(WeightsError, match=message):
        load_model(repo, revision=revision)


def test_truncated_weight_file_from_the_hub(published):
    files = {p.name: p.read_bytes() for p in (published["dir"] / "first").iterdir()}
    files[WEIGHTS_NAME] = files[WEIGHTS_NAME][:1000]
    published["hub"].add_files("seqinv/truncated", files)
    with pytest.raises(WeightsError, match=r"not a valid safetensors file .*truncated or corrupt"):
        load_model("seqinv/truncated")


def test_registry_name_checks_sha256(entry, monkeypatch):
    model, source = load_model("tinyreg")
    assert source.kind == "hub" and source.sha256 == entry.sha256
    monkeypatch.setitem(
        registry.PUBLISHED, "tinyreg", PublishedModel(**{**entry.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(WeightsError, match=r"sha256 of seqinv/test-tiny@.* the registry expects 0000"):
        load_model("tinyreg")


def test_bundled_copy_is_the_fallback_and_says_so(entry, published, monkeypatch, tmp_path, capsys):
    sha = bundle_model(tmp_path / "first", "tinyreg")
    assert sha == entry.sha256 and f'= "{sha}"' in capsys.readouterr().out
    _go_offline(monkeypatch)
    model, source = load_model("tinyreg")
    assert source.kind == "bundled" and _same_weights(model, published["models"][0])
    assert source.describe().startswith(
        f"model tinyreg: bundled seqinv/weights/tinyreg (rev {entry.revision}, sha256 {sha[:12]}); "
        "Hub copy not available: seqinv/test-tiny@"
    )
    with pytest.raises(WeightsError, match=r"not in the Hub cache"):
        load_model("tinyreg", prefer="hub")


def test_bundled_only_makes_no_requests_and_checks_its_hash(entry, published, monkeypatch, tmp_path):
    bundle_model(tmp_path / "first", "tinyreg")
    encoder = SeqInvEncoder.from_pretrained("tinyreg", prefer="bundled")  # the task model's encoder
    assert _same_weights(encoder, published["models"][0].encoder)
    assert published["hub"].requests == []
    monkeypatch.setitem(
        registry.PUBLISHED, "tinyreg", PublishedModel(**{**entry.__dict__, "sha256": "f" * 64})
    )
    with pytest.raises(WeightsError, match=r"bundled .* has sha256 .* reinstall seqinv"):
        load_model("tinyreg", prefer="bundled")


def test_no_hub_no_cache_no_bundle_names_the_download_command(entry, monkeypatch):
    _go_offline(monkeypatch)
    with pytest.raises(WeightsError, match=r"not in the Hub cache .*`seqinv models download"):
        load_model("tinyreg")


def test_registry_names_and_did_you_mean():
    assert set(registry.PUBLISHED) == {"seqinv", "seqaug", "base", "ixi", "arc", "denoise"}
    assert resolve("IXI").repo_id == "seqinv/seqinv-lite-ixi"
    assert all(e.repo_id.startswith("seqinv/") for e in registry.PUBLISHED.values())
    with pytest.raises(WeightsError, match=r"unknown model 'ixy'; did you mean 'ixi'\?"):
        resolve("ixy")
    with pytest.raises(WeightsError, match=r"unknown model 'seqinvv'; did you mean 'seqinv'\?"):
        SeqInvEncoder.from_pretrained("seqinvv")


def test_cli_download_fills_the_cache_for_offline_use(entry, monkeypatch):
    from seqinv.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "download", "tinyreg"])
    assert result.exit_code == 0, result.output
    assert f"model tinyreg: hub {REPO} (rev {entry.revision}" in result.output
    _go_offline(monkeypatch)
    _, source = load_model("tinyreg")
    assert source.kind == "cache"
    info = runner.invoke(app, ["models", "info", "tinyreg"])
    assert info.exit_code == 0 and "preset tiny" in info.output and "['background', 'lesion']" in info.output


def test_cli_list_and_unknown_name_exit_code():
    from seqinv.cli import app

    listing = CliRunner().invoke(app, ["models", "list"])
    assert listing.exit_code == 0
    for name in ("seqinv", "seqaug", "base", "ixi", "arc", "denoise"):
        assert f"\n{name} " in listing.output
    done = subprocess.run(
        [sys.executable, "-m", "seqinv", "models", "info", "ixy"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: unknown model 'ixy'; did you mean 'ixi'?")
        and "Traceback" not in done.stderr
    )


def test_bare_registry_name_is_not_shadowed_by_a_folder_of_that_name(entry, published, monkeypatch, tmp_path):
    bundle_model(tmp_path / "first", "tinyreg")
    _go_offline(monkeypatch)
    shadow = tmp_path / "cwd" / "tinyreg"
    shadow.mkdir(parents=True)
    (shadow / "config.json").write_text("{}")  # e.g. a user's data folder that happens to share the name
    monkeypatch.chdir(tmp_path / "cwd")
    model, source = load_model("tinyreg")
    assert source.kind == "bundled"
    with pytest.raises(WeightsError):
        load_model("./tinyreg")


@pytest.mark.parametrize("name", sorted(n for n, e in registry.PUBLISHED.items() if e.sha256))
def test_each_published_bundled_model_loads_with_its_pinned_hash_and_card(name):
    from pathlib import Path

    entry = registry.PUBLISHED[name]
    model, source = load_model(name, prefer="bundled")
    assert source.kind == "bundled" and source.sha256 == entry.sha256
    assert model.config.arch == ("unet" if entry.kind == "task" else "encoder")
    if name == "ixi":
        assert model.config.labels == ["background", "csf", "gm", "wm"]
    if name == "arc":
        assert model.config.labels == ["background", "lesion"]
        assert model.config.training["lesion_prior_shift"] < 0
    card = Path(__file__).resolve().parents[1] / "model_cards" / f"{name}.md"
    assert (entry.bundled_path / "README.md").read_text() == card.read_text()
    if "HELD_OUT_SEED" in card.read_text():  # a card read on the Hub must give the seed's value too
        from seqinv.physics.phantom import HELD_OUT_SEED

        assert f"seed {HELD_OUT_SEED}," in card.read_text()
