"""Where a model's files come from, in this order (nothing here builds a network):

1. an explicit local folder (holding config.json + model.safetensors) or a file inside one;
2. a catalogue name (`ixi`, `ixi@1.2`; seqinv/models/catalogue.py) at its pinned revision, when it is the
   newest version of its name: the copy bundled in the wheel (`seqinv/weights/<name>/`), with no network;
3. an older catalogue version (`ixi@1.0`: the wheel bundles none), another `revision`, or a Hub repo id
   (`org/name`): the Hub through huggingface_hub (`HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, a token), or its
   local cache when the Hub is unreachable, `HF_HUB_OFFLINE=1` is set or `local_files_only=True`; without
   either, one error naming the version and `seqinv models download <name@version>`.
   Reaching the Hub fails fast (`SEQINV_HUB_TIMEOUT_S`, default 5 s).

`prefer="hub"` skips step 2 (`seqinv models download`), `prefer="bundled"` allows only step 2.
A catalogue version is pinned by content: the sha256 of its model.safetensors and of its config.json
(labels, spacing, normalisation) are checked wherever the files come from, and a mismatch is always an
error, never a fallback. On the Hub it loads its pinned commit where the catalogue records one (tags
can move), else its tag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seqinv.errors import ParameterError, WeightsError
from seqinv.models import catalogue
from seqinv.models.catalogue import PublishedModel
from seqinv.models.weights import CONFIG_NAME, WEIGHTS_NAME, file_sha256

#: Folder of the weights shipped in the wheel, one sub-folder per catalogue name.
BUNDLED_ROOT = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_HUB_TIMEOUT_S = 5.0
PREFER = ("auto", "hub", "bundled")


class HubUnavailable(WeightsError):
    """The Hub cannot be reached (or offline mode is on) and its cache lacks the files.

    `reason` says why the Hub was not asked ("offline mode is on ...", "the Hub at ... is unreachable"),
    `cache` which cache was looked in.
    """

    def __init__(self, message: str, reason: str = "", cache: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.cache = cache


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from: kind "local" | "hub" | "cache" | "bundled"."""

    kind: str
    location: str
    revision: str | None
    sha256: str
    name: str
    note: str = ""
    version: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name

    def describe(self) -> str:
        """One line for the CLI, e.g. `model ixi@1.0: bundled seqinv/weights/ixi (rev v1.0, sha256 1a2b…)`."""
        revision = self.revision or "-"
        line = f"model {self.ref}: {self.kind} {self.location} (rev {revision}, sha256 {self.sha256[:12]})"
        return line + (f"; {self.note}" if self.note else "")


def bundled_name(entry: PublishedModel) -> str:
    """Folder name of a version: `<name>` for the newest (the one bundled, `seqinv/weights/<name>/`),
    `<name>@<version>` for an older one (the wheel ships none; the repository keeps its Hub copy in
    `hub/<name>@<version>/`)."""
    newest = catalogue.latest().get(entry.name)
    return entry.name if newest is None or newest.version == entry.version else entry.ref


def bundled_folder(entry: PublishedModel) -> Path | None:
    """The bundled copy of a catalogue version, when this installation ships it."""
    folder = BUNDLED_ROOT / bundled_name(entry)
    return folder if entry.bundled and (folder / WEIGHTS_NAME).is_file() else None


def pin_mismatch(entry: PublishedModel, folder: Path) -> tuple[str, str, str] | None:
    """(file name, its sha256, the catalogue's) for the first file of `folder` that is not the published
    one; None when weights and config are both as pinned."""
    for filename, expected in ((WEIGHTS_NAME, entry.sha256), (CONFIG_NAME, entry.config_sha256)):
        if not expected:
            continue
        path = folder / filename
        found = file_sha256(path) if path.is_file() else "none (no such file)"
        if found != expected:
            return filename, found, expected
    return None


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed Hub repo id here: huggingface_hub would end in an HFValidationError traceback."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise WeightsError(
            f"model {repo_id!r} is not a valid Hub repo id: expected org/name, each part letters, digits, "
            "'-', '_' or '.' (not first or last, no '--' or '..', at most 96 characters); "
            "check the spelling, or give the path of an existing model folder"
        ) from None


def _is_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "~", "/")) or os.sep in text or text.endswith((".json", ".safetensors"))


def _local_folder(text: str) -> Path | None:
    path = Path(text).expanduser()
    if path.is_file():
        return path.parent
    if path.is_dir() and ((path / CONFIG_NAME).exists() or not catalogue.is_published(text)):
        return path
    return None


def locate(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    prefer: str = "auto",
) -> tuple[Path, ModelSource]:
    """The folder holding a model's files and where it came from (see the module docstring)."""
    if prefer not in PREFER:
        raise ParameterError(f"prefer={prefer!r}; expected one of {', '.join(PREFER)}")
    text = str(name_or_path)
    # a bare catalogue name ("ixi") means the published model even when the working directory happens to
    # hold a folder of that name (an IXI dataset, a run); write ./ixi for the folder
    bare_name = catalogue.is_published(text) and not isinstance(name_or_path, Path)
    folder = None if bare_name else _local_folder(text)
    if folder is not None:
        if not (folder / WEIGHTS_NAME).is_file():
            raise WeightsError(f"model folder {folder} has no {WEIGHTS_NAME}; it is not a saved seqinv model")
        sha = file_sha256(folder / WEIGHTS_NAME)
        return folder, ModelSource("local", str(folder), None, sha, folder.name)
    if catalogue.is_published(text):
        entry = catalogue.resolve(text)
        return _locate_published(entry, revision, cache_dir, local_files_only, token, prefer)
    if _is_repo_id(text) and not Path(text).expanduser().exists():
        check_repo_id(text)
        if prefer == "bundled":
            raise WeightsError(
                f"{text!r} is not a published model name, so there is no bundled copy; use prefer='auto'"
            )
        folder, kind, commit, note = fetch_from_hub(text, revision, cache_dir, local_files_only, token)
        return folder, ModelSource(kind, text, commit, file_sha256(folder / WEIGHTS_NAME), text, note)
    if _looks_like_path(text):
        raise WeightsError(
            f"model folder {text} not found; give a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    raise WeightsError(catalogue.unknown_name_message(text))


def _locate_published(entry: PublishedModel, revision, cache_dir, local_files_only, token, prefer):
    pinned = entry.pins(revision)
    if prefer == "bundled" and not pinned:
        raise WeightsError(
            f"revision {revision!r} is not the published revision of model {entry.ref!r} "
            f"({entry.revision}), so no bundled copy holds it; drop the revision or use prefer='auto'"
        )
    # the bundled copy is the pinned version, bit for bit (checked below): the Hub has nothing to add
    if prefer == "bundled" or (prefer == "auto" and pinned and bundled_folder(entry) is not None):
        return _locate_bundled(entry)
    hub_revision = entry.hub_revision if pinned else revision  # a pinned commit, not its movable tag
    try:
        folder, kind, commit, note = fetch_from_hub(
            entry.repo_id, hub_revision, cache_dir, local_files_only, token, name=entry.ref
        )
    except HubUnavailable as err:
        raise HubUnavailable(_unavailable_message(entry, hub_revision, err), err.reason, err.cache) from err
    if pinned:
        _check_hub_copy(entry, folder, commit, kind)
    sha = (pinned and entry.sha256) or file_sha256(folder / WEIGHTS_NAME)  # checked equal just above
    return folder, ModelSource(kind, entry.repo_id, commit, sha, entry.name, note, entry.version)


def _unavailable_message(entry: PublishedModel, revision: str, err: HubUnavailable) -> str:
    """One error for a catalogue version that is neither bundled nor in the Hub cache, naming the version
    and how to get it."""
    shipped = catalogue.latest().get(entry.name)
    if entry.bundled:
        bundle = ""
    elif shipped is not None and shipped.bundled:
        bundle = f"is not bundled with seqinv (the wheel ships {shipped.ref}, loaded as {entry.name!r}), "
    else:
        bundle = "is not bundled with seqinv, "
    return (
        f"model {entry.ref!r} {bundle}is not in the Hub cache ({err.cache}) and {err.reason}; "
        f"get it where there is network: `seqinv models download {entry.ref}` (Hub repo {entry.repo_id} "
        f"@ {revision}), then run offline with that Hub cache (HF_HUB_CACHE)"
    )


def _check_hub_copy(entry: PublishedModel, folder: Path, commit: str, kind: str) -> None:
    mismatch = pin_mismatch(entry, folder)
    if mismatch is None:
        return
    filename, found, expected = mismatch
    what = "was downloaded" if kind == "hub" else "is in the Hub cache"
    raise WeightsError(
        f"sha256 of {entry.repo_id}@{commit}/{filename} is {found}, but the catalogue expects {expected} "
        f"for model {entry.ref!r}: the copy that {what} is not the published version (corrupt, or the repo "
        f"changed), so it is refused; delete {folder.parents[1]} and run "
        f"`seqinv models download {entry.ref}`, or upgrade seqinv"
    )


def _locate_bundled(entry: PublishedModel) -> tuple[Path, ModelSource]:
    folder = bundled_folder(entry)
    if folder is None:
        shipped = catalogue.latest().get(entry.name)
        which = f" (this installation bundles {shipped.ref})" if shipped and shipped.bundled else ""
        raise WeightsError(
            f"model {entry.ref!r} has no bundled copy in this installation{which}; download it on a machine "
            f"with network: `seqinv models download {entry.ref}` (Hub repo {entry.repo_id})"
        )
    mismatch = pin_mismatch(entry, folder)
    if mismatch is not None:
        filename, found, expected = mismatch
        raise WeightsError(
            f"bundled {folder / filename} has sha256 {found}, but the catalogue expects {expected} for model "
            f"{entry.ref!r}; the installation is damaged: reinstall seqinv"
        )
    sha = entry.sha256 or file_sha256(folder / WEIGHTS_NAME)  # checked equal just above
    location = f"seqinv/weights/{bundled_name(entry)}"
    return folder, ModelSource("bundled", location, entry.revision, sha, entry.name, "", entry.version)


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

    check_repo_id(repo_id)
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
            raise HubUnavailable(
                f"{repo_id}@{revision}/{filename} is not in the Hub cache ({cache or 'default'}) and "
                f"{reason}; fill the cache where there is network: "
                f"`seqinv models download {name or repo_id}`",
                reason,
                cache or "default",
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
