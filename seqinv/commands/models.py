"""`seqinv models list|info|download`: the registry of published models on the command line."""

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

    from seqinv.models.hub import WEIGHTS_NAME
    from seqinv.models.registry import hub_cache_dir

    found = try_to_load_from_cache(
        repo_id, WEIGHTS_NAME, cache_dir=hub_cache_dir(cache_dir), revision=revision
    )
    return Path(found).parent if isinstance(found, str) else None


@models_app.command("list")
def list_models() -> None:
    """Published models: name, kind, Hub repo, revision, whether a copy ships with this install."""
    from seqinv.models.registry import PUBLISHED, _has_bundled

    rows = [("name", "kind", "hub repo", "revision", "bundled", "description")]
    for entry in PUBLISHED.values():
        bundled = "yes" if _has_bundled(entry) else "no"
        rows.append((entry.name, entry.kind, entry.repo_id, entry.revision, bundled, entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])


@models_app.command("info")
def info(
    name: str = typer.Argument(..., help="Registry name, e.g. ixi (see `seqinv models list`)."),
    cache_dir: str = typer.Option(
        None, help="Hub cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface)."
    ),
) -> None:
    """Where a model lives, its pinned revision and sha256, and its input contract (no network)."""
    from seqinv.models.hub import WEIGHTS_NAME, read_config
    from seqinv.models.registry import _has_bundled, resolve

    entry = resolve(name)
    typer.echo(f"name:        {entry.name} ({entry.kind}) - {entry.description}")
    typer.echo(f"hub repo:    {entry.repo_id} @ {entry.revision}")
    typer.echo(f"sha256:      {entry.sha256 or 'not pinned'}")
    bundled = entry.bundled_path if _has_bundled(entry) else None
    if bundled:
        size_mb = (bundled / WEIGHTS_NAME).stat().st_size / 1e6
        typer.echo(f"bundled:     seqinv/weights/{entry.bundled} ({size_mb:.1f} MB)")
    else:
        typer.echo("bundled:     no")
    cached = _cached_folder(entry.repo_id, entry.revision, cache_dir)
    typer.echo(f"hub cache:   {cached or f'no (run `seqinv models download {entry.name}`)'}")
    folder = bundled or cached
    if folder is None:
        return
    config = read_config(folder)
    typer.echo(f"network:     {config.arch}, preset {config.preset}, widths {list(config.features)}")
    typer.echo(f"task:        {config.task}, outputs {config.out_channels} {config.labels or ''}".rstrip())
    typer.echo(
        f"input:       {list(config.spacing_mm)} mm, patch {list(config.patch_size)}, {config.normalization}"
    )


@models_app.command("download")
def download(
    name: str = typer.Argument(..., help="Registry name (e.g. ixi) or Hub repo id (org/name)."),
    revision: str = typer.Option(
        None, help="Branch, tag or commit (default: the registry's pinned revision)."
    ),
    cache_dir: str = typer.Option(
        None, help="Hub cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface)."
    ),
    token: str = typer.Option(None, help="Hub token for private repos (default: the saved login)."),
) -> None:
    """Download into the Hub cache and verify (strict load, sha256); HF_HUB_OFFLINE=1 then works."""
    from seqinv.errors import WeightsError
    from seqinv.models.hub import CARD_NAME
    from seqinv.models.registry import PUBLISHED, fetch_from_hub, load_model, resolve

    _, source = load_model(name, revision=revision, cache_dir=cache_dir, token=token, prefer="hub")
    repo_id = resolve(name).repo_id if name.lower() in PUBLISHED else name
    with contextlib.suppress(WeightsError):  # the model card is documentation only
        fetch_from_hub(repo_id, source.revision, cache_dir, False, token, filenames=(CARD_NAME,))
    typer.echo(source.describe())
    if source.kind == "cache":
        typer.echo("note: the Hub was not reached; the copy already in the cache was verified")
    else:
        typer.echo(f"saved in the Hub cache; offline use: HF_HUB_OFFLINE=1 seqinv ... --model {name}")
