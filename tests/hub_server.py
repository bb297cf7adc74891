"""A tiny Hugging Face Hub look-alike on 127.0.0.1 for tests (nothing reaches the internet).

Serves `/{repo_id}/resolve/{revision}/{filename}` (GET and HEAD) with the headers huggingface_hub
checks (ETag, X-Repo-Commit, Content-Length) and its `X-Error-Code` 404s (RepoNotFound,
RevisionNotFound, EntryNotFound), plus `/api/models/{repo_id}/revision/{revision}`. `connections`
counts the TCP connections accepted, so a test can tell "no network at all" from "no request".
`published_hub` serves the repository's `hub/` folder: every published version the wheel does not bundle,
at its pinned tag, as the real Hub holds it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

#: The repository's copies of the published versions the wheel does not bundle (`hub/<name>@<version>/`).
HUB_COPIES = Path(__file__).resolve().parents[1] / "hub"


def repository_copy(entry) -> Path:
    """The files of a published version in this repository: its bundled folder (the default of its name,
    `seqinv/weights/<name>/`), else its Hub copy (`hub/<name>@<version>/`)."""
    from seqinv.models import sources

    return sources.bundled_folder(entry) or HUB_COPIES / entry.ref


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self._server = _CountingServer(self, ("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add_folder(self, repo_id: str, folder: str | Path, branch: str = "main") -> str:
        """Publish every file of `folder` as a new commit on `branch`; returns the commit id."""
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return self.add_files(repo_id, files, branch)

    def add_files(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        commit = hashlib.sha1(f"{repo_id}{len(repo['commits'])}{sorted(files)}".encode()).hexdigest()
        repo["commits"][commit] = dict(files)
        repo["refs"][branch] = commit
        return commit

    def tag(self, repo_id: str, name: str, commit: str) -> None:
        """Point tag `name` at `commit` (the Hub resolves tags and branches alike)."""
        self.repos[repo_id]["refs"][name] = commit

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _CountingServer(ThreadingHTTPServer):
    def __init__(self, hub: FakeHub, address, handler) -> None:
        self.hub = hub
        super().__init__(address, handler)

    def verify_request(self, request, client_address) -> bool:  # once per accepted connection
        self.hub.connections += 1
        return True


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _error(self, code: str, commit: str | None = None) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/") :], body)
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error("RepoNotFound")
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            commit, files = found
            if filename not in files:
                return self._error("EntryNotFound", commit)
            data = files[filename]
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _lookup(self, repo_id: str, revision: str):
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error("RepoNotFound")
                return None
            commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
            if commit is None:
                self._error("RevisionNotFound")
                return None
            return commit, repo["commits"][commit]

        def _api(self, rest: str, body: bool) -> None:
            parts = rest.split("/")
            repo_id = "/".join(parts[:2])
            revision = parts[3] if len(parts) > 3 and parts[2] == "revision" else "main"
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            commit, files = found
            data = json.dumps(
                {"id": repo_id, "sha": commit, "siblings": [{"rfilename": name} for name in sorted(files)]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@pytest.fixture(scope="session")
def fake_hub_server():
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture
def fake_hub(fake_hub_server, tmp_path, monkeypatch):
    """The fake Hub with HF_ENDPOINT pointed at it and a Hub cache in tmp_path; repos reset per test."""
    from huggingface_hub import constants

    fake_hub_server.repos.clear()
    fake_hub_server.requests.clear()
    fake_hub_server.connections = 0
    monkeypatch.setenv("HF_ENDPOINT", fake_hub_server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("SEQINV_HUB_TIMEOUT_S", "3")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub reads these at import; patch them too for calls that do not take `endpoint=`
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub_server.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        fake_hub_server.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    return fake_hub_server


@pytest.fixture
def published_hub(fake_hub):
    """`fake_hub` serving every published version that is not bundled from `hub/`, at its pinned tag (and
    its pinned commit name, where the catalogue records one), so `load_model("ixi@1.0")` goes through
    huggingface_hub exactly as with the real Hub."""
    from seqinv.models import catalogue

    for entry in catalogue.CATALOGUE:
        if entry.bundled:
            continue
        commit = fake_hub.add_folder(entry.repo_id, HUB_COPIES / entry.ref)
        fake_hub.tag(entry.repo_id, entry.revision, commit)
        if entry.commit:
            fake_hub.tag(entry.repo_id, entry.commit, commit)
    fake_hub.requests.clear()
    fake_hub.connections = 0
    return fake_hub
