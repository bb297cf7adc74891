"""Published seqinv models: names → Hub repos, pinned revisions, weight hashes, bundled copies.

Resolution order of `load_model(name_or_path)`:

1. an explicit local folder (holding config.json + model.safetensors) or a file inside one;
2. a registry name (`seqinv`, `ixi`, ...) or a Hub repo id (`org/name`): the Hub, or its local cache when
   the Hub is unreachable, `HF_HUB_OFFLINE=1` is set or `local_files_only=True`. Reaching the Hub fails
   fast (`SEQINV_HUB_TIMEOUT_S`, default 5 s);
3. for registry names only: the copy bundled in the wheel (`seqinv/weights/<name>/`), used when the Hub
   and its cache cannot provide the model (the returned `ModelSource.note` says why).

`prefer="hub"` stops after step 2 (errors are raised), `prefer="bundled"` goes straight to step 3.
A registry entry's sha256 is checked against the weight file from the Hub (at the pinned revision) and
against the bundled copy; a mismatch is always an error, never a fallback.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seqinv.errors import ParameterError, WeightsError
from seqinv.models.hub import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_from_folder,
    file_sha256,
    read_config,
)

if TYPE_CHECKING:
    from torch import nn

HUB_ORG = "seqinv"
#: Folder of the weights shipped in the wheel, one sub-folder per registry name.
BUNDLED_ROOT = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_HUB_TIMEOUT_S = 5.0
PREFER = ("auto", "hub", "bundled")


@dataclass(frozen=True)
class PublishedModel:
    """One published model. `sha256` is the hash of its model.safetensors at `revision` (None: unchecked).

    `kind` is "encoder" (a SeqInvEncoder) or "task" (a full SeqInvUNet, encoder included).
    """

    name: str
    kind: str
    repo_id: str
    revision: str
    sha256: str | None
    bundled: str | None
    description: str

    @property
    def bundled_path(self) -> Path | None:
        return BUNDLED_ROOT / self.bundled if self.bundled else None


# sha256 of each published model.safetensors (the bundled copy and the Hub file are the same file).
# `bundle_model` prints the value to put here; a name missing here is not hash-checked.
WEIGHTS_SHA256: dict[str, str] = {
    "seqinv": "df7eb633fea99f98a5da29d2c7a2395ad7982b07ee9e4259e83d6512fc18339b",
    "seqaug": "fdf4513434b54d4337fab3297fcb789e7ff5e1c479ee6d1fe95ab9ff0d8308da",
    "base": "318b6d01b6927b6fbeae0ab21ec32b18fc66258809686248e44e4dc35ec194d1",
    "denoise": "8cd8fe5783de02334faeb892c5aff70bca76d5ab952b17c8ec05df7f33aed3a1",
    "ixi": "d8001e3167b5357feb4f714493cf46287024f09d897be8e5ef5ef7f11575d809",
    "arc": "94f025a573aacbd7942e9d8e6c25adbc28b4d3398f9955bfd3985b045f1c00a4",
}


def _entry(name, kind, repo, description, sha256=None, revision="main", bundled=True):
    sha256 = sha256 or WEIGHTS_SHA256.get(name)
    return PublishedModel(
        name, kind, f"{HUB_ORG}/{repo}", revision, sha256, name if bundled else None, description
    )


# To publish or bundle new weights: `bundle_model(folder, name)` copies them into seqinv/weights/<name>/
# and prints the sha256 to paste here; after `push_to_hub`, pin `revision` to the returned commit id.
PUBLISHED: dict[str, PublishedModel] = {
    m.name: m
    for m in (
        _entry(
            "seqinv",
            "encoder",
            "seqinv-lite-encoder",
            "SeqInv encoder: two different simulated sequences per pair",
        ),
        _entry("seqaug", "encoder", "seqaug-lite-encoder", "SeqAug encoder: one random sequence per pair"),
        _entry("base", "encoder", "base-lite-encoder", "Base encoder: MPRAGE-like views only"),
        _entry(
            "ixi", "task", "seqinv-lite-ixi", "tissue segmentation (background, CSF, GM, WM), any contrast"
        ),
        _entry(
            "arc", "task", "seqinv-lite-arc", "stroke lesion segmentation (background, lesion); research only"
        ),
        _entry(
            "denoise",
            "task",
            "seqinv-lite-denoise",
            "denoising (predicts the noise; output = input - noise)",
        ),
    )
}


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from: kind "local" | "hub" | "cache" | "bundled"."""

    kind: str
    location: str
    revision: str | None
    sha256: str
    name: str
    note: str = ""

    def describe(self) -> str:
        """One line for the CLI, e.g. `model ixi: bundled seqinv/weights/ixi (rev main, sha256 1a2b…)`."""
        revision = self.revision or "-"
        line = f"model {self.name}: {self.kind} {self.location} (rev {revision}, sha256 {self.sha256[:12]})"
        return line + (f"; {self.note}" if self.note else "")


def resolve(name: str) -> PublishedModel:
    """The registry entry for `name` (case-insensitive); unknown names get a "did you mean"."""
    if name in PUBLISHED:
        return PUBLISHED[name]
    if name.lower() in PUBLISHED:
        return PUBLISHED[name.lower()]
    raise WeightsError(_unknown_name_message(name))


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(PUBLISHED), n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"unknown model {name!r}; {hint}published models: {', '.join(PUBLISHED)} (see `seqinv models list`), "
        "or give a local model folder or a Hub repo id like org/name"
    )


def _is_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "~", "/")) or os.sep in text or text.endswith((".json", ".safetensors"))


def _local_folder(text: str) -> Path | None:
    path = Path(text).expanduser()
    if path.is_file():
        return path.parent
    if path.is_dir() and ((path / CONFIG_NAME).exists() or text not in PUBLISHED):
        return path
    return None


def load_model(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    prefer: str = "auto",
    model_class: type | None = None,
) -> tuple[nn.Module, ModelSource]:
    """Load a model strictly (see the module docstring for the order); returns `(model, source)`.

    The model is in eval mode and carries `.source`. `model_class=SeqInvEncoder` on a task model gives
    its encoder.
    """
    if prefer not in PREFER:
        raise ParameterError(f"prefer={prefer!r}; expected one of {', '.join(PREFER)}")
    text = str(name_or_path)
    # a bare registry name ("ixi") means the published model even when the working directory happens to
    # hold a folder of that name (an IXI dataset, a run); write ./ixi for the folder
    bare_name = (text in PUBLISHED or text.lower() in PUBLISHED) and not isinstance(name_or_path, Path)
    folder = None if bare_name else _local_folder(text)
    if folder is not None:
        if not (folder / WEIGHTS_NAME).is_file():
            raise WeightsError(f"model folder {folder} has no {WEIGHTS_NAME}; it is not a saved seqinv model")
        source = ModelSource("local", str(folder), None, file_sha256(folder / WEIGHTS_NAME), folder.name)
        return _attach(build_from_folder(folder, model_class), source)
    if text in PUBLISHED or text.lower() in PUBLISHED:
        return _load_published(
            resolve(text), revision, cache_dir, local_files_only, token, prefer, model_class
        )
    if _is_repo_id(text) and not Path(text).expanduser().exists():
        if prefer == "bundled":
            raise WeightsError(
                f"{text!r} is not a registry name, so there is no bundled copy; use prefer='auto'"
            )
        folder, kind, commit, note = fetch_from_hub(text, revision, cache_dir, local_files_only, token)
        source = ModelSource(kind, text, commit, file_sha256(folder / WEIGHTS_NAME), text, note)
        return _attach(build_from_folder(folder, model_class), source)
    if _looks_like_path(text):
        raise WeightsError(
            f"model folder {text} not found; give a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    raise WeightsError(_unknown_name_message(text))


def _load_published(entry, revision, cache_dir, local_files_only, token, prefer, model_class):
    note = ""
    if prefer != "bundled":
        try:
            folder, kind, commit, note = fetch_from_hub(
                entry.repo_id, revision or entry.revision, cache_dir, local_files_only, token, name=entry.name
            )
        except WeightsError as err:
            if prefer == "hub" or not _has_bundled(entry):
                raise
            note = "Hub copy not available: " + str(err).split("; ")[0]
        else:
            sha = file_sha256(folder / WEIGHTS_NAME)
            pinned = revision in (None, entry.revision)
            if entry.sha256 and pinned and sha != entry.sha256:
                raise WeightsError(
                    f"sha256 of {entry.repo_id}@{commit}/{WEIGHTS_NAME} is {sha}, but the registry expects "
                    f"{entry.sha256} for model {entry.name!r}; the download is corrupt or the repo changed: "
                    f"delete it from the Hub cache and download again, or upgrade seqinv"
                )
            source = ModelSource(kind, entry.repo_id, commit, sha, entry.name, note)
            return _attach(build_from_folder(folder, model_class), source)
    return _load_bundled(entry, model_class, note)


def _has_bundled(entry: PublishedModel) -> bool:
    path = entry.bundled_path
    return path is not None and (path / WEIGHTS_NAME).is_file()


def _load_bundled(entry: PublishedModel, model_class, note: str):
    if not _has_bundled(entry):
        raise WeightsError(
            f"model {entry.name!r} has no bundled copy in this installation; download it on a machine with "
            f"network: `seqinv models download {entry.name}` (Hub repo {entry.repo_id})"
        )
    folder = entry.bundled_path
    sha = file_sha256(folder / WEIGHTS_NAME)
    if entry.sha256 and sha != entry.sha256:
        raise WeightsError(
            f"bundled {folder / WEIGHTS_NAME} has sha256 {sha}, but the registry expects {entry.sha256}; "
            "the installation is damaged: reinstall seqinv"
        )
    location = f"seqinv/weights/{entry.bundled}"
    source = ModelSource("bundled", location, entry.revision, sha, entry.name, note)
    return _attach(build_from_folder(folder, model_class), source)


def _attach(model, source: ModelSource):
    model.source = source
    return model, source


# ---- Hub access -----------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline(local_files_only: bool = False) -> bool:
    """Offline when asked to, or HF_HUB_OFFLINE is set (read now, not at import)."""
    from huggingface_hub import constants

    return local_files_only or _env_true("HF_HUB_OFFLINE") or constants.is_offline_mode()


def hub_cache_dir(cache_dir: str | Path | None = None) -> str | None:
    """`cache_dir`, else HF_HUB_CACHE / HF_HOME/hub read now, else huggingface_hub's default (None)."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hub_timeout_s() -> float:
    value = os.environ.get("SEQINV_HUB_TIMEOUT_S")
    try:
        return float(value) if value else DEFAULT_HUB_TIMEOUT_S
    except ValueError as err:
        raise ParameterError(f"SEQINV_HUB_TIMEOUT_S={value!r} is not a number of seconds") from err


def _is_network_error(err: Exception) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(err, (OfflineModeIsEnabled, OSError, TimeoutError)) or type(err).__module__.startswith(
        "httpx"
    )


def _http_error(err: Exception, repo_id: str, revision: str, filename: str) -> WeightsError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return WeightsError(
            f"Hub repository {repo_id} is gated; accept its terms on the Hub and pass a token"
        )
    if isinstance(err, RepositoryNotFoundError):
        return WeightsError(
            f"Hub repository {repo_id} not found (or private: pass token= or run `hf auth login`)"
        )
    if isinstance(err, RevisionNotFoundError):
        return WeightsError(f"revision {revision!r} not found in Hub repository {repo_id}; check --revision")
    if isinstance(err, EntryNotFoundError):
        return WeightsError(
            f"Hub repository {repo_id}@{revision} has no {filename}; it is not a seqinv model repo"
        )
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return WeightsError(f"Hub request for {repo_id}@{revision}/{filename} failed: {first_line}")


def fetch_from_hub(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME),
    name: str | None = None,
) -> tuple[Path, str, str, str]:
    """Download (or find in the cache) a model repo's files; returns (snapshot folder, kind, commit, note).

    kind is "hub" when the Hub answered, "cache" when the files came from the local cache only.
    Any failure is one `WeightsError`.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    revision = revision or "main"
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache = hub_cache_dir(cache_dir)
    timeout_s = _hub_timeout_s()
    offline = hub_offline(local_files_only)
    reason = "offline mode is on (HF_HUB_OFFLINE or local_files_only)" if offline else ""
    if not offline:  # a short probe, so an unreachable Hub costs seconds, not huggingface_hub's retries
        url = hf_hub_url(repo_id, WEIGHTS_NAME, revision=revision, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=timeout_s, token=token, endpoint=endpoint)
        except HfHubHTTPError as err:
            raise _http_error(err, repo_id, revision, WEIGHTS_NAME) from err
        except Exception as err:
            if not _is_network_error(err):
                raise
            offline = True
            reason = f"the Hub at {endpoint or 'huggingface.co'} is unreachable ({type(err).__name__})"
    paths = {}
    for filename in filenames:
        try:
            paths[filename] = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache,
                local_files_only=offline,
                token=token,
                endpoint=endpoint,
                etag_timeout=timeout_s,
            )
        except LocalEntryNotFoundError as err:
            raise WeightsError(
                f"{repo_id}@{revision}/{filename} is not in the Hub cache ({cache or 'default'}) and "
                f"{reason}; fill the cache where there is network: `seqinv models download {name or repo_id}`"
            ) from err
        except HfHubHTTPError as err:
            raise _http_error(err, repo_id, revision, filename) from err
        except Exception as err:
            if _is_network_error(err):
                raise WeightsError(f"Hub download of {repo_id}@{revision}/{filename} failed: {err}") from err
            raise
    folder = Path(paths[filenames[-1]]).parent
    commit = folder.name
    note = f"{reason}: used the Hub cache" if offline else ""
    return folder, "cache" if offline else "hub", commit, note


# ---- bundling ---------------------------------------------------------------------------------------


def bundle_model(model_dir: str | Path, name: str, weights_root: str | Path | None = None) -> str:
    """Copy a saved model into `seqinv/weights/<name>/` (after a strict load) and return its sha256.

    Prints the sha256 to put into `PUBLISHED[name]` in this file; until it is there, the bundled and
    downloaded copies are not hash-checked.
    """
    entry = resolve(name)
    source = Path(model_dir)
    model = build_from_folder(source)
    wanted = "unet" if entry.kind == "task" else "encoder"
    if model.config.arch != wanted:
        raise WeightsError(
            f"model {name!r} must be a {wanted} model, but {source} holds a {model.config.arch}"
        )
    target = Path(weights_root or BUNDLED_ROOT) / (entry.bundled or name)
    target.mkdir(parents=True, exist_ok=True)
    for filename in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if (source / filename).is_file():
            shutil.copyfile(source / filename, target / filename)
    read_config(target)
    sha = file_sha256(target / WEIGHTS_NAME)
    print(f"bundled {name} in {target} ({(target / WEIGHTS_NAME).stat().st_size / 1e6:.1f} MB)")
    print(f'set WEIGHTS_SHA256["{name}"] = "{sha}" in seqinv/models/registry.py')
    return sha
