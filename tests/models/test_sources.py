"""Loading through the real huggingface_hub client from a local fake Hub; catalogue; `seqinv models` CLI."""

import dataclasses
import hashlib
import json
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from hub_server import repository_copy
from typer.testing import CliRunner

from seqinv.errors import WeightsError
from seqinv.models import SeqInvEncoder, SeqInvUNet, catalogue, load_model, resolve, sources
from seqinv.models.catalogue import PublishedModel
from seqinv.models.weights import CONFIG_NAME, WEIGHTS_NAME
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


def test_bundled_copy_of_the_pinned_version_loads_first_without_the_hub(
    entry, published, monkeypatch, tmp_path, capsys
):
    # issue #31: the Hub used to be asked first, and the bundle was only a fallback with a note
    sha = bundle_model(tmp_path / "first", "tinyreg")
    assert sha == entry.sha256 and f'sha256 = "{sha}"' in capsys.readouterr().out
    model, source = load_model("tinyreg")  # the Hub is reachable, and not needed
    assert source.kind == "bundled" and _same_weights(model, published["models"][0])
    assert source.describe() == (
        f"model tinyreg@1.0: bundled seqinv/weights/tinyreg (rev {entry.revision}, sha256 {sha[:12]})"
    )
    assert published["hub"].connections == 0
    _go_offline(monkeypatch)
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


def test_an_unreachable_hub_is_never_tried_for_a_bundled_version(entry, published, monkeypatch, tmp_path):
    # issue #31: this used to wait SEQINV_HUB_TIMEOUT_S on the Hub, then fall back with a note
    bundle_model(tmp_path / "first", "tinyreg")
    silent = _unreachable(monkeypatch)
    try:
        model, source = load_model("tinyreg")
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing ever connected
            silent.accept()
    finally:
        silent.close()
    assert source.kind == "bundled" and source.note == "" and _same_weights(model, published["models"][0])


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
    text = card.read_text(encoding="utf-8")
    assert (sources.bundled_folder(entry) / "README.md").read_text(encoding="utf-8") == text
    if "HELD_OUT_SEED" in text:  # a card read on the Hub must give the seed's value too
        from seqinv.physics.phantom import HELD_OUT_SEED

        assert f"seed {HELD_OUT_SEED}," in text


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
        "error: model 'ixi' has no version '0.9'; published versions: 1.0, 1.1, 1.2, 2.0 "
        "(see `seqinv models list`)"
    )
    assert list(tmp_path.iterdir()) == []


# ---- issue #31: pinned by content, no network for a bundled version, malformed ids ---------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _swap_labels(config_bytes: bytes) -> bytes:
    config = json.loads(config_bytes)
    config["labels"] = config["labels"][::-1]
    return (json.dumps(config, indent=2) + "\n").encode()


@pytest.mark.parametrize("entry", catalogue.CATALOGUE, ids=lambda e: e.ref)
def test_every_published_version_pins_its_weights_and_its_config(entry):
    folder = repository_copy(entry)  # the bundled default, or the Hub copy kept in hub/
    assert entry.sha256 and entry.config_sha256 and (folder / WEIGHTS_NAME).is_file()
    assert entry.bundled == (entry == catalogue.latest()[entry.name])  # the wheel ships the newest only
    assert sources.pin_mismatch(entry, folder) is None
    assert entry.config_sha256 == _sha((folder / CONFIG_NAME).read_bytes())


def test_versions_sharing_weights_are_told_apart_by_their_config():
    old, new = resolve("denoise@2.2"), resolve("denoise@2.3")
    assert old.sha256 == new.sha256 and old.config_sha256 != new.config_sha256
    assert sources.pin_mismatch(old, sources.bundled_folder(new)) == (
        CONFIG_NAME,
        new.config_sha256,
        old.config_sha256,
    )


def test_a_hub_config_that_is_not_the_published_one_is_refused(published, monkeypatch, tmp_path):
    hub, repo = published["hub"], "seqinv/test-config"
    files = _files(tmp_path / "first")
    served = {**files, CONFIG_NAME: _swap_labels(files[CONFIG_NAME])}  # same weights, labels reordered
    hub.tag(repo, "v1.0", hub.add_files(repo, served))
    pinned = PublishedModel(
        "tinycfg", "1.0", "task", "arc", repo, "v1.0", _sha(files[WEIGHTS_NAME]), "t",
        config_sha256=_sha(files[CONFIG_NAME]),
    )  # fmt: skip
    _pin(monkeypatch, dataclasses.replace(pinned, config_sha256=None))
    model, _ = load_model("tinycfg")  # the bug: with the weights alone pinned, the labels were trusted
    assert model.config.labels == ["lesion", "background"]
    _pin(monkeypatch, pinned)
    expected = (
        rf"sha256 of {repo}@\w+/config.json is {_sha(served[CONFIG_NAME])}, but the catalogue expects "
        rf"{pinned.config_sha256} for model 'tinycfg@1.0': .* refused; delete \S*models--seqinv--test-config "
        r"and run `seqinv models download tinycfg@1.0`, or upgrade seqinv$"
    )
    with pytest.raises(WeightsError, match=expected):
        load_model("tinycfg")
    _go_offline(monkeypatch)
    with pytest.raises(
        WeightsError, match=r"config.json .* the copy that is in the Hub cache is not the published"
    ):
        load_model("tinycfg")
    from seqinv.cli import app

    info = CliRunner().invoke(app, ["models", "info", "tinycfg"])
    assert info.exit_code == 0 and "is not the published version; delete it" in info.output
    assert "['lesion', 'background']" not in info.output


def test_cli_info_shows_both_pins_and_where_an_older_version_is(published_hub):
    from seqinv.cli import app

    entry = resolve("ixi@1.0")
    info = CliRunner().invoke(app, ["models", "info", "ixi@1.0"])
    assert info.exit_code == 0
    assert f"config:      sha256 {entry.config_sha256}\n" in info.output
    assert "bundled:     no\n" in info.output
    assert "hub cache:   no (run `seqinv models download ixi@1.0`)" in info.output
    assert CliRunner().invoke(app, ["models", "download", "ixi@1.0"]).exit_code == 0
    info = CliRunner().invoke(app, ["models", "info", "ixi@1.0"])
    assert "hub cache:   " in info.output and "models--seqinv--seqinv-lite-ixi" in info.output
    assert "network:     unet, preset lite" in info.output
    latest = CliRunner().invoke(app, ["models", "info", "ixi"]).output
    assert "bundled:     seqinv/weights/ixi (" in latest


def test_a_moved_tag_cannot_change_a_version_pinned_by_commit_and_content(published, monkeypatch, tmp_path):
    hub, repo = published["hub"], "seqinv/test-tags"
    first = _files(tmp_path / "first")
    commit1 = hub.add_files(repo, first)
    by_tag = PublishedModel(
        "tinytag", "1.0", "task", "arc", repo, "v1.0", _sha(first[WEIGHTS_NAME]), "t",
        config_sha256=_sha(first[CONFIG_NAME]),
    )  # fmt: skip
    hub.tag(repo, "v1.0", hub.add_folder(repo, tmp_path / "second"))  # v1.0 now names another model
    _pin(monkeypatch, by_tag)
    with pytest.raises(WeightsError, match=rf"{repo}@\w+/model.safetensors is .* the catalogue expects"):
        load_model("tinytag")
    _pin(monkeypatch, dataclasses.replace(by_tag, commit=commit1))
    model, source = load_model("tinytag")
    assert source.revision == commit1 and _same_weights(model, published["models"][0])
    assert source.sha256 == by_tag.sha256


def test_a_bundled_config_that_is_not_the_published_one_is_refused(entry, monkeypatch, tmp_path):
    bundle_model(tmp_path / "first", "tinyreg")
    config = tmp_path / "weights" / "tinyreg" / CONFIG_NAME
    _pin(monkeypatch, dataclasses.replace(entry, config_sha256=_sha(config.read_bytes())))
    assert load_model("tinyreg")[1].kind == "bundled"
    config.write_bytes(_swap_labels(config.read_bytes()))
    # never a fallback to the Hub (which serves the right files here)
    with pytest.raises(WeightsError, match=r"bundled \S*config.json has sha256 .* reinstall seqinv"):
        load_model("tinyreg")


def test_every_bundled_version_loads_with_no_network_at_all(fake_hub, monkeypatch):
    connects = []
    connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket, "connect", lambda sock, address: connects.append(address) or connect(sock, address)
    )
    for ref in [e.ref for e in catalogue.CATALOGUE if e.bundled] + catalogue.names():
        _, source = load_model(ref)
        assert source.kind == "bundled" and source.note == "", ref
    assert SeqInvEncoder.from_pretrained("seqinv").source.kind == "bundled"
    assert fake_hub.connections == 0 and connects == []


def test_the_hub_is_asked_for_unbundled_revisions_and_explicit_downloads(entry, published, tmp_path):
    from seqinv.cli import app

    bundle_model(tmp_path / "first", "tinyreg")
    hub, (commit1, commit2) = published["hub"], published["commits"]
    model, source = load_model("tinyreg", revision=commit2)  # not the pinned revision: not the bundle
    assert (source.kind, source.revision) == ("hub", commit2) and _same_weights(model, published["models"][1])
    with pytest.raises(
        WeightsError, match=r"revision '\w+' is not the published revision .* no bundled copy"
    ):
        load_model("tinyreg", revision=commit2, prefer="bundled")
    hub.connections = 0
    result = CliRunner().invoke(app, ["models", "download", "tinyreg"])
    assert result.exit_code == 0 and f"model tinyreg@1.0: hub {REPO} (rev {commit1}" in result.output
    assert hub.connections > 0


@pytest.mark.parametrize(
    "model_id", ["org/..", "org/na me", "org/-name", "org/na--me", "org/name.git", "o" * 97 + "/name"]
)
def test_a_malformed_hub_id_is_one_clear_error_before_any_request(fake_hub, model_id):
    message = rf"model {re.escape(repr(model_id))} is not a valid Hub repo id: expected org/name"
    with pytest.raises(WeightsError, match=message):
        load_model(model_id)
    with pytest.raises(WeightsError, match=message):
        sources.fetch_from_hub(model_id)
    assert fake_hub.connections == 0


def test_a_malformed_hub_id_on_the_command_line_is_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "seqinv", "models", "download", "org/na me"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: model 'org/na me' is not a valid Hub repo id")
    assert len(done.stderr.strip().splitlines()) == 1


# ---- issue #32: the wheel bundles the default of each name; older versions come from the Hub ----------


def test_the_package_holds_the_default_of_each_name_and_no_older_version():
    folders = sorted(p.name for p in sources.BUNDLED_ROOT.iterdir() if p.is_dir())
    assert folders == sorted(catalogue.names())  # no `name@version` folder in the package
    for entry in catalogue.CATALOGUE:
        assert (sources.bundled_folder(entry) is not None) == entry.bundled, entry.ref


@pytest.mark.parametrize("entry", [e for e in catalogue.CATALOGUE if not e.bundled], ids=lambda e: e.ref)
def test_an_older_version_loads_from_the_hub_at_its_pinned_tag(published_hub, entry):
    model, source = load_model(entry.ref)
    assert (source.kind, source.location, source.version) == ("hub", entry.repo_id, entry.version)
    assert source.sha256 == entry.sha256 and model.config.task_name == entry.task
    assert ("GET", f"/{entry.repo_id}/resolve/{entry.revision}/{WEIGHTS_NAME}") in published_hub.requests
    assert (repository_copy(entry) / "README.md").is_file()  # the card published with it


def test_an_older_version_offline_is_one_error_naming_it_and_how_to_get_it(published_hub, monkeypatch):
    _go_offline(monkeypatch)
    expected = (
        r"^model 'ixi@1\.0' is not bundled with seqinv \(the wheel ships ixi@2\.0, loaded as 'ixi'\), "
        r"is not in the Hub cache \(\S+\) and offline mode is on .*; get it where there is network: "
        r"`seqinv models download ixi@1\.0` \(Hub repo seqinv/seqinv-lite-ixi @ v1\.0\)"
    )
    with pytest.raises(WeightsError, match=expected):
        load_model("ixi@1.0")
    assert published_hub.connections == 0
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert load_model("ixi@1.0")[1].kind == "hub"  # fills the cache
    _go_offline(monkeypatch)
    model, source = load_model("ixi@1.0")  # then offline works, from the cache
    assert source.kind == "cache" and source.sha256 == resolve("ixi@1.0").sha256


def test_an_older_version_offline_on_the_command_line_is_one_error_line(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    argv = ["segment", "--example", "--model", "ixi@1.0", "-o", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-m", "seqinv", *argv],
        capture_output=True,
        text=True,
        env=env,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(errors) == 1 and errors[0].startswith("error: model 'ixi@1.0' is not bundled with seqinv")
    assert "`seqinv models download ixi@1.0`" in errors[0]
    assert not [p for p in (tmp_path / "o").rglob("*") if p.is_file()]  # nothing written
