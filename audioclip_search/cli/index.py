"""`acsearch index PATH...`: embed new and changed files into the database."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import (
    arch_option,
    db_option,
    device_option,
    err_console,
    fail,
    guarded,
    model_option,
    out_console,
    precision_option,
    table_set_option,
)


class _Rate(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: ANN001, ANN201
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} files/s" if speed else "   -- files/s", style="progress.data.speed")


def _error_log_path(store, explicit: Path | None) -> Path:  # noqa: ANN001
    if explicit is not None:
        return explicit
    local = store.local_path
    return (local / "index-errors.log") if local is not None else Path("acsearch-index-errors.log")


@guarded
def index_command(
    paths: list[str] = typer.Argument(..., help="Files and folders to index (recursively); also s3://, gs://, "
                                      "az:// prefixes (credentials/endpoint from the usual environment)."),
    db: str = db_option(),
    model: str = model_option(),
    arch: str = arch_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = typer.Option(None, "--batch-size", min=1,
                                   help="Items per model call (default: sized to the device)."),
    workers: int = typer.Option(None, "--workers", min=0, show_default="auto: 0 on CPU, up to 8 on GPU",
                                help="Decoding worker processes (0: decode in the main process)."),
    captions: Path = typer.Option(None, "--captions", help="CSV or JSONL manifest: path + caption and/or labels."),
    prune: bool = typer.Option(False, "--prune", help="Drop rows of files under PATHS that disappeared."),
    hop: float = typer.Option(2.5, "--hop", min=0.1,
                              help="Hop between 5 s audio windows, seconds (2.5 = 50 % overlap)."),
    table_set: str = table_set_option(),
    log: Path = typer.Option(None, "--log", help="Where to list failed files (default <db>/index-errors.log)."),
    vector_index: bool = typer.Option(True, "--vector-index/--no-vector-index", help="Update the FAISS index after."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    commit_every: int = typer.Option(256, "--commit-every", min=1, hidden=True,
                                     help="Commit at least every N files (also every 30 s)."),
) -> None:
    """Index sounds, pictures and texts; re-running encodes only new or changed files."""
    from ..fsio import is_object_uri
    from ..index import Index
    from ..indexer.pipeline import IndexOptions
    from ..indexer.windows import WindowSpec

    missing = [p for p in paths if not is_object_uri(p) and not Path(p).expanduser().exists()]
    if missing and len(missing) == len(paths):
        raise fail(f"no such file or folder: {', '.join(map(str, missing))}", code=2)
    idx = Index.open(db, model, arch=arch, device=device, precision=precision, table_set=table_set)
    options = IndexOptions(captions=captions, prune=prune, workers=workers, batch_size=batch_size,
                           window=WindowSpec(hop_seconds=hop), build_vector_index=vector_index,
                           commit_files=commit_every)
    with err_console.status("loading the model..."):
        encoder = idx.encoder
    err_console.print(f"model {idx.model_name} on {encoder.device} ({encoder.precision}); database {idx.store.uri}")
    progress = Progress(TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)
    tasks: dict[str, int] = {}

    def hook(modality: str, done: int, total: int) -> None:
        if modality not in tasks:
            tasks[modality] = progress.add_task(modality, total=total)
        progress.update(tasks[modality], completed=done)

    with progress:
        report = idx.add(paths, options, progress=hook)
    log_path = _error_log_path(idx.store, log)
    if report.failed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(f"{p}\t{r}\n" for p, r in report.failed), encoding="utf-8")
    if as_json:
        out_console.print_json(json.dumps(report.as_dict()))
    else:
        _print_summary(report, log_path)
    if report.failed:
        raise typer.Exit(1)


def _print_summary(report, log_path: Path) -> None:  # noqa: ANN001
    table = Table(title="acsearch index", show_edge=False)
    for col in ("", "indexed files", "rows", "unchanged", "pruned"):
        table.add_column(col, justify="right" if col else "left")
    for m in ("audio", "image", "text"):
        table.add_row(m, str(report.indexed[m]), str(report.rows[m]), str(report.unchanged[m]), str(report.pruned[m]))
    out_console.print(table)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.stage_seconds.items() if v > 0.05)
    out_console.print(f"done in {report.total_seconds:.1f}s ({stages})")
    if report.failed:
        err_console.print(f"[yellow]{len(report.failed)} file(s) failed[/] (listed in {log_path}):")
        for path, reason in report.failed[:20]:
            err_console.print(f"  {path}: {reason}", soft_wrap=True)
        if len(report.failed) > 20:
            err_console.print(f"  ... and {len(report.failed) - 20} more")


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
