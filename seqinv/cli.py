"""Thin typer app over the public API. Heavy imports stay inside command bodies."""

from __future__ import annotations

import sys

import typer

from seqinv import __version__
from seqinv.errors import SeqInvError

app = typer.Typer(
    name="seqinv",
    help="Sequence-invariant 3D brain MRI: segment, denoise, embed and simulate any contrast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqinv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    """seqinv command-line interface."""


def _register() -> None:
    """Each area registers its commands from its own module; heavy imports stay inside the commands."""
    from seqinv.commands import infer, models, simulate

    for module in (simulate, models, infer):
        module.register(app)
    # Extensions (the bundled training package's `seqinv train` / `seqinv evaluate`) register through the
    # "seqinv.commands" entry point, so the runtime never imports them by name.
    from importlib.metadata import entry_points

    for entry in entry_points(group="seqinv.commands"):
        try:
            register = entry.load()
        except ModuleNotFoundError:
            continue
        register(app)


_register()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2; Ctrl-C and SIGTERM
    one line and exit 130 / 143."""
    from seqinv.interrupts import Interrupted, signals_raise

    try:
        with signals_raise():  # Ctrl-C / SIGTERM: finished outputs kept, none half-written
            app()
    except SeqInvError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Interrupted as stop:
        typer.echo(
            f"interrupted ({stop.name}); finished outputs are complete, rerun with --skip-existing "
            "to do the rest",
            err=True,
        )
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
