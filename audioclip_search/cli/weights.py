"""`acsearch weights`: list, download, verify and locate the named checkpoints."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from ..errors import CheckpointError

app = typer.Typer(
    help="List, download, verify and locate model checkpoints (cached in $ACSEARCH_CACHE_DIR, "
         "else ~/.cache/audioclip-search).",
    no_args_is_help=True,
)

_CACHE_DIR_HELP = "Checkpoint cache folder (default: $ACSEARCH_CACHE_DIR, else ~/.cache/audioclip-search)."


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """A CheckpointError becomes one line on stderr and exit status 1, not a traceback."""
    try:
        yield
    except CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted (a partial download is kept and will be resumed)", err=True)
        raise typer.Exit(130) from None


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _cache_state(path: Path, size: int) -> str:
    if path.is_file():
        actual = path.stat().st_size
        return "yes" if actual == size else f"wrong size ({actual} B)"
    part = path.with_name(path.name + ".part")
    if part.is_file():
        return f"partial ({min(100, part.stat().st_size * 100 // size)}%)"
    return "no"


@app.command("list")
def list_cmd(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """Show the registered checkpoints and whether each one is in the cache."""
    from rich.console import Console
    from rich.table import Table

    from ..checkpoints import DEFAULT_CHECKPOINT, cached_path, list_checkpoints
    from ..checkpoints import cache_dir as resolve_cache_dir

    with _errors():
        table = Table(title="Checkpoints", caption=f"cache: {resolve_cache_dir(cache_dir)}   "
                                                   f"default: {DEFAULT_CHECKPOINT}")
        for column in ("name", "arch", "kind", "size", "cached"):
            table.add_column(column, no_wrap=True)
        table.add_column("path", overflow="fold")
        for entry in list_checkpoints():
            path = cached_path(entry, cache_dir)
            table.add_row(entry.name, entry.arch, entry.kind, _human(entry.size),
                          _cache_state(path, entry.size), str(path))
        Console().print(table)


@app.command("download")
def download_cmd(
    name: str = typer.Argument(..., help="A registered checkpoint name (see `acsearch weights list`)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    force: bool = typer.Option(False, "--force", help="Download again even if a good copy is cached."),
    timeout: float = typer.Option(30.0, "--timeout", min=1.0, help="Network timeout in seconds."),
) -> None:
    """Download a checkpoint into the cache (resuming a partial download), verify it, print its path."""
    from ..checkpoints import download_checkpoint

    with _errors():
        path = download_checkpoint(name, cache_dir, progress=not quiet, force=force, timeout=timeout)
        typer.echo(str(path))


@app.command("verify")
def verify_cmd(
    name_or_path: str = typer.Argument(..., metavar="NAME|PATH",
                                       help="A registered name (checks its cached file) or a file."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected sha256 (default: the registry's)."),
) -> None:
    """Hash the whole file and compare with the registered sha256; exit 1 on a mismatch."""
    from ..checkpoints import verify_checkpoint

    with _errors():
        result = verify_checkpoint(name_or_path, cache_dir, expected_sha256=sha256)
    label = result.entry.name if result.entry is not None else "file"
    if result.ok is None:
        typer.echo(f"{result.sha256}  {result.path}  (not a registered checkpoint: nothing to compare with)")
        return
    if not result.ok:
        detail = f"expected sha256 {result.expected_sha256}, got {result.sha256}"
        if result.expected_size is not None and result.expected_size != result.size:
            detail = f"expected {result.expected_size} bytes, got {result.size}; " + detail
        typer.echo(f"error: {label}: {result.path} is corrupt or not this checkpoint: {detail}", err=True)
        raise typer.Exit(1)
    typer.echo(f"OK  {label}  {result.sha256}  {result.path}")


@app.command("path")
def path_cmd(
    name: str = typer.Argument(..., help="A registered checkpoint name."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """Print where the checkpoint lives in the cache (whether or not it is downloaded)."""
    from ..checkpoints import cached_path, get_entry

    with _errors():
        typer.echo(str(cached_path(get_entry(name), cache_dir).absolute()))
