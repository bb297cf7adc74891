"""Loading through the real huggingface_hub client from a local fake Hub; catalogue; `seqinv models` CLI."""

import hashlib
import socket
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from seqinv.errors import WeightsError
from seqinv.models import SeqInvEncoder, SeqInvUNet, catalogue, load_model, resolve, sources
from seqinv.models.catalogue import PublishedModel
from seqinv.models.weights import WEIGHTS_NAME
from training.bundle import bundle_model

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
    """A catalogue entry `tinyreg` for REPO at its first commit, with the right sha256 and a bundle folder."""
    sha = hashlib.sha256((tmp_path / "first" / WEIGHTS_NAME).read_bytes()).hexdigest()
    item = PublishedModel("tinyreg", "1.0", "task", "arc", REPO, published["commits"][0], sha, "test", True)
    _pin(monkeypatch, item)
    monkeypatch.setattr(sources, "BUNDLED_ROOT", tmp_path / "weights")
    return item


def _pin(monkeypatch, *items):
    """A seqinv whose catalogue pins `items` (replacing entries of the same name and version)."""
    keys = {(i.name, i.version) for i in items}
    kept = [e for e in catalogue.CATALOGUE if (e.name, e.version) not in keys]
    monkeypatch.setattr(catalogue, "CATALOGUE", kept + list(items))


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
    _pin(monkeypatch, PublishedModel(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(WeightsError, match=r"sha256 of seqinv/test-tiny@.* the catalogue expects 0000"):
        load_model("tinyreg")


def test_bundled_copy_is_the_fallback_and_says_so(entry, published, monkeypatch, tmp_path, capsys):
    sha = bundle_model(tmp_path / "first", "tinyreg")
    assert sha == entry.sha256 and f'sha256 = "{sha}"' in capsys.readouterr().out
    _go_offline(monkeypatch)
    model, source = load_model("tinyreg")
    assert source.kind == "bundled" and _same_weights(model, published["models"][0])
    assert source.describe() == (
        f"model tinyreg@1.0: bundled seqinv/weights/tinyreg (rev {entry.revision}, sha256 {sha[:12]}); "
        "offline mode (HF_HUB_OFFLINE) and no Hub cache: used the bundled copy"
    )
    with pytest.raises(WeightsError, match=r"not in the Hub cache"):
        load_model("tinyreg", prefer="hub")


def test_bundled_only_makes_no_requests_and_checks_its_hash(entry, published, monkeypatch, tmp_path):
    bundle_model(tmp_path / "first", "tinyreg")
    encoder = SeqInvEncoder.from_pretrained("tinyreg", prefer="bundled")  # the task model's encoder
    assert _same_weights(encoder, published["models"][0].encoder)
    assert published["hub"].requests == []
    _pin(monkeypatch, PublishedModel(**{**entry.__dict__, "sha256": "f" * 64}))
    with pytest.raises(WeightsError, match=r"bundled .* has sha256 .* reinstall seqinv"):
        load_model("tinyreg", prefer="bundled")


def _unreachable(monkeypatch):
    """HF_ENDPOINT at a socket that accepts connections (kernel backlog) but never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("SEQINV_HUB_TIMEOUT_S", "0.5")
    return silent


def test_unreachable_hub_without_cache_says_in_one_short_line_that_the_bundle_is_used(
    entry, published, monkeypatch, tmp_path
):
    bundle_model(tmp_path / "first", "tinyreg")
    silent = _unreachable(monkeypatch)
    start = time.monotonic()
    try:
        model, source = load_model("tinyreg")
    finally:
        silent.close()
    assert time.monotonic() - start < 5  # SEQINV_HUB_TIMEOUT_S: the fast fallback stays
    assert source.kind == "bundled" and _same_weights(model, published["models"][0])
    assert source.note == (
        "the Hub is unreachable and not cached: set HF_HUB_OFFLINE=1 to use the bundled copy directly"
    )
    assert "\n" not in source.describe() and "127.0.0.1" not in source.describe()


def test_a_model_pushed_to_main_never_changes_what_installed_seqinv_loads(published, monkeypatch, tmp_path):
    hub, (first, second) = published["hub"], published["models"]
    repo = "seqinv/test-versions"
    commit1 = hub.add_folder(repo, tmp_path / "first")  # publish v1 and tag it
    hub.tag(repo, "v1.0", commit1)
    sha1 = hashlib.sha256((tmp_path / "first" / WEIGHTS_NAME).read_bytes()).hexdigest()
    sha2 = hashlib.sha256((tmp_path / "second" / WEIGHTS_NAME).read_bytes()).hexdigest()
    v1 = PublishedModel("tinyver", "1.0", "task", "arc", repo, "v1.0", sha1, "v1")
    _pin(monkeypatch, v1)  # the installed package pins v1
    model, source = load_model("tinyver")
    assert (source.version, source.revision, source.sha256) == ("1.0", commit1, sha1)
    assert _same_weights(model, first)

    commit2 = hub.add_folder(repo, tmp_path / "second")  # a retrained model lands on main
    model, source = load_model("tinyver")
    assert (source.revision, source.sha256) == (commit1, sha1) and _same_weights(model, first)
    assert source.describe().startswith(f"model tinyver@1.0: hub {repo} (rev {commit1}")

    v2 = PublishedModel("tinyver", "2.0", "task", "arc", repo, commit2, sha2, "v2")
    _pin(monkeypatch, v1, v2)  # a newer package pins v2 as well
    model, source = load_model("tinyver")
    assert (source.version, source.revision, source.sha256) == ("2.0", commit2, sha2)
    assert _same_weights(model, second)
    model, source = load_model("tinyver@1.0")  # the older version stays reachable
    assert source.version == "1.0" and _same_weights(model, first)


def test_no_hub_no_cache_no_bundle_names_the_download_command(entry, monkeypatch):
    _go_offline(monkeypatch)
    with pytest.raises(WeightsError, match=r"not in the Hub cache .*`seqinv models download"):
        load_model("tinyreg")


def test_registry_names_and_did_you_mean():
    assert set(catalogue.names()) == {"seqinv", "seqaug", "base", "ixi", "arc", "denoise"}
    assert resolve("IXI").repo_id == "seqinv/seqinv-lite-ixi"
    assert resolve("ixi@1.0").repo_id == "seqinv/seqinv-lite-ixi"
    assert all(e.repo_id.startswith("seqinv/") for e in catalogue.CATALOGUE)
    with pytest.raises(WeightsError, match=r"model 'ixi' has no version '0.9'; published versions: 1.0"):
        resolve("ixi@0.9")
    with pytest.raises(WeightsError, match=r"unknown model 'ixy'; did you mean 'ixi'\?"):
        resolve("ixy")
    with pytest.raises(WeightsError, match=r"unknown model 'seqinvv'; did you mean 'seqinv'\?"):
        SeqInvEncoder.from_pretrained("seqinvv")


def test_cli_download_fills_the_cache_for_offline_use(entry, monkeypatch):
    from seqinv.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "download", "tinyreg"])
    assert result.exit_code == 0, result.output
    assert f"model tinyreg@1.0: hub {REPO} (rev {entry.revision}" in result.output
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


@pytest.mark.parametrize("name", sorted(n for n, e in catalogue.latest().items() if e.sha256))
def test_each_published_bundled_model_loads_with_its_pinned_hash_and_card(name):
    from pathlib import Path

    entry = catalogue.latest()[name]
    model, source = load_model(name, prefer="bundled")
    assert source.kind == "bundled" and source.sha256 == entry.sha256 and entry.bundled
    assert load_model(f"{name}@{entry.version}", prefer="bundled")[1].version == entry.version
    assert model.config.arch in (("unet", "denoiser") if entry.kind == "task" else ("encoder",))
    if name == "ixi":
        assert model.config.labels == ["background", "csf", "gm", "wm"]
    if name == "arc":
        assert model.config.labels == ["background", "lesion"]
        assert model.config.training["lesion_prior_shift"] < 0
    card = Path(__file__).resolve().parents[2] / "model_cards" / f"{name}.md"
    assert (sources.bundled_folder(entry) / "README.md").read_text() == card.read_text()
    if "HELD_OUT_SEED" in card.read_text():  # a card read on the Hub must give the seed's value too
        from seqinv.physics.phantom import HELD_OUT_SEED

        assert f"seed {HELD_OUT_SEED}," in card.read_text()


def test_cli_names_a_version_with_name_at_version(tmp_path):
    from seqinv.cli import app

    runner = CliRunner()
    info = runner.invoke(app, ["models", "info", "ixi@1.0"])
    assert info.exit_code == 0 and info.output.startswith("name:        ixi@1.0 (task, task ixi)")
    assert "hub repo:    seqinv/seqinv-lite-ixi @ v1.0" in info.output
    done = subprocess.run(
        [sys.executable, "-m", "seqinv", "segment", "--example", "--model", "ixi@0.9", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "error: model 'ixi' has no version '0.9'; published versions: 1.0, 1.1, 1.2 "
        "(see `seqinv models list`)"
    )
    assert list(tmp_path.iterdir()) == []
