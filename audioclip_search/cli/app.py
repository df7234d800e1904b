"""The `acsearch` entry point: registers one module per verb."""

from __future__ import annotations

from importlib import import_module

import typer

from .._version import __version__

app = typer.Typer(
    name="acsearch",
    help="Search sounds, pictures and captions from any of the three with AudioCLIP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, sub-app name or None for a plain command module that registers itself)
_SUBAPPS = [("weights", "weights")]
_COMMANDS: list[str] = ["index", "query", "classify", "info", "check", "eval", "serve", "train", "merge"]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"acsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Search sounds, pictures and captions from any of the three with AudioCLIP."""


def _register() -> None:
    for module, name in _SUBAPPS:
        sub = import_module(f".{module}", __package__)
        app.add_typer(sub.app, name=name)
    for module in _COMMANDS:
        import_module(f".{module}", __package__).register(app)


def main() -> None:
    _register()
    app()
