"""`seqinv models list|info|download`: the catalogue of published models on the command line."""

from __future__ import annotations

import contextlib

import typer

models_app = typer.Typer(
    name="models",
    help="List, inspect and download the published seqinv models.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _cached_folder(repo_id: str, revision: str, cache_dir: str | None):
    """Snapshot folder of a cached model (no network), or None."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    from seqinv.models.sources import hub_cache_dir
    from seqinv.models.weights import WEIGHTS_NAME

    found = try_to_load_from_cache(
        repo_id, WEIGHTS_NAME, cache_dir=hub_cache_dir(cache_dir), revision=revision
    )
    return Path(found).parent if isinstance(found, str) else None


@models_app.command("list")
def list_models() -> None:
    """Published models, one row per version: name, version, kind, task, Hub repo, pinned revision."""
    from seqinv.models import catalogue
    from seqinv.models.sources import bundled_folder

    rows = [("name", "version", "kind", "task", "hub repo", "revision", "sha256", "bundled", "description")]
    for name in catalogue.names():
        for e in catalogue.versions(name):
            bundled = "yes" if bundled_folder(e) else "no"
            sha = (e.sha256 or "not pinned")[:12]
            rows.append((e.name, e.version, e.kind, e.task, e.repo_id, e.revision, sha, bundled))
            rows[-1] += (e.description,)
    widths = [max(len(row[i]) for row in rows) for i in range(8)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:8], widths, strict=True)) + "  " + row[8])
    typer.echo("a bare name loads its newest version; name@version (e.g. ixi@1.0) picks one")


@models_app.command("info")
def info(
    name: str = typer.Argument(..., help="Published name, e.g. ixi or ixi@1.0 (see `seqinv models list`)."),
    cache_dir: str = typer.Option(
        None, help="Hub cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface)."
    ),
) -> None:
    """Where a model lives, its pinned revision and sha256s, and its input contract (no network)."""
    from seqinv.models.catalogue import resolve
    from seqinv.models.sources import bundled_folder, bundled_name, pin_mismatch
    from seqinv.models.weights import WEIGHTS_NAME, read_config

    entry = resolve(name)
    typer.echo(f"name:        {entry.ref} ({entry.kind}, task {entry.task}) - {entry.description}")
    commit = f" (commit {entry.commit})" if entry.commit else ""
    typer.echo(f"hub repo:    {entry.repo_id} @ {entry.revision}{commit}")
    typer.echo(f"sha256:      {entry.sha256 or 'not pinned'}")
    typer.echo(f"config:      sha256 {entry.config_sha256 or 'not pinned'}")
    bundled = bundled_folder(entry)
    if bundled:
        size_mb = (bundled / WEIGHTS_NAME).stat().st_size / 1e6
        typer.echo(f"bundled:     seqinv/weights/{bundled_name(entry)} ({size_mb:.1f} MB)")
    else:
        typer.echo("bundled:     no")
    cached = _cached_folder(entry.repo_id, entry.hub_revision, cache_dir)
    if cached and pin_mismatch(entry, cached):  # never show the contract of files that would be refused
        typer.echo(f"hub cache:   {cached} is not the published version; delete it and download again")
        cached = None
    else:
        typer.echo(f"hub cache:   {cached or f'no (run `seqinv models download {entry.ref}`)'}")
    folder = bundled or cached
    if folder is None:
        return
    config = read_config(folder)
    typer.echo(f"network:     {config.arch}, preset {config.preset}, widths {list(config.features)}")
    outputs = f"{config.out_channels} {config.labels or ''}".rstrip()
    typer.echo(f"task:        {config.output_kind}, outputs {outputs}")
    typer.echo(
        f"input:       {list(config.spacing_mm)} mm, patch {list(config.patch_size)}, {config.normalization}"
    )


@models_app.command("download")
def download(
    name: str = typer.Argument(..., help="Published name (ixi, ixi@1.0) or Hub repo id (org/name)."),
    revision: str = typer.Option(
        None, help="Branch, tag or commit (default: the catalogue's pinned revision)."
    ),
    cache_dir: str = typer.Option(
        None, help="Hub cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface)."
    ),
    token: str = typer.Option(None, help="Hub token for private repos (default: the saved login)."),
) -> None:
    """Download into the Hub cache and verify (strict load, sha256 of weights and config), even for a
    bundled version (which loads without the Hub anyway); HF_HUB_OFFLINE=1 then works."""
    from seqinv.errors import WeightsError
    from seqinv.models import catalogue
    from seqinv.models.factory import load_model
    from seqinv.models.sources import fetch_from_hub
    from seqinv.models.weights import CARD_NAME

    _, source = load_model(name, revision=revision, cache_dir=cache_dir, token=token, prefer="hub")
    repo_id = catalogue.resolve(name).repo_id if catalogue.is_published(name) else name
    with contextlib.suppress(WeightsError):  # the model card is documentation only
        fetch_from_hub(repo_id, source.revision, cache_dir, False, token, filenames=(CARD_NAME,))
    typer.echo(source.describe())
    if source.kind == "cache":
        typer.echo("note: the Hub was not reached; the copy already in the cache was verified")
    else:
        typer.echo(f"saved in the Hub cache; offline use: HF_HUB_OFFLINE=1 seqinv ... --model {name}")
