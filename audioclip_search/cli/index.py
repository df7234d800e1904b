"""`acsearch index PATH...`: embed new and changed files into the database."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..fileio import atomic_write_text
from ..indexer.paths import display_path
from ..progress import make_progress

if TYPE_CHECKING:
    from ..indexer.pipeline import IndexOptions

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
    captions: str = typer.Option(None, "--captions", help="CSV or JSONL manifest: path + caption and/or labels "
                                 "(a local file or an object URI such as s3://bucket/captions.csv)."),
    prune: bool = typer.Option(False, "--prune", help="Drop rows of files under PATHS that disappeared."),
    hop: float = typer.Option(2.5, "--hop", min=0.1,
                              help="Hop between 5 s audio windows, seconds (2.5 = 50 % overlap)."),
    table_set: str = table_set_option(),
    log: Path = typer.Option(None, "--log", help="Where to list failed files (default <db>/index-errors.log)."),
    vector_index: bool = typer.Option(True, "--vector-index/--no-vector-index", help="Update the FAISS index after."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    commit_every: int = typer.Option(256, "--commit-every", min=1, hidden=True,
                                     help="Commit at least every N files (also every 30 s)."),
    wait: bool = typer.Option(False, "--wait", help="If another process is writing to the database, wait for "
                                                    "it to finish instead of stopping."),
    engine: str = typer.Option("local", "--engine", help="local: this process; ray: decode and encode on a Ray "
                               "cluster (pip install \"audioclip-search[ray]\"), commits stay here."),
    ray_address: str = typer.Option(None, "--ray-address", show_default="$RAY_ADDRESS, else a local Ray",
                                    help="--engine ray: the cluster to run on (ray://host:10001 or host:6379)."),
    encoders: int = typer.Option(1, "--encoders", min=1, help="--engine ray: encoder actors (one model each)."),
    gpus_per_encoder: float = typer.Option(None, "--gpus-per-encoder", min=0.0,
                                           show_default="1 when the cluster has GPUs, else 0",
                                           help="--engine ray: GPUs per encoder actor (0.5: two actors share one)."),
) -> None:
    """Index sounds, pictures and texts; re-running encodes only new or changed files."""
    from ..fsio import is_object_uri
    from ..indexer.pipeline import ENGINES, IndexOptions
    from ..indexer.windows import WindowSpec
    from ..store.lock import DatabaseBusyError
    from ..store.storage import StorageError

    if engine not in ENGINES:
        raise fail(f"--engine must be {' or '.join(ENGINES)}, not {engine!r}", code=2)
    if engine == "ray":
        from ..indexer.distributed.engine import require_ray

        require_ray()  # before the model loads: a missing extra is one line, at once
    missing = [p for p in paths if not is_object_uri(p) and not os.path.lexists(os.path.expanduser(p))]
    if missing and len(missing) == len(paths):
        raise fail(f"no such file or folder: {', '.join(map(display_path, missing))}", code=2)
    if model and Path(model).expanduser().is_file():  # a file: bind by content, label by absolute path
        model = str(Path(model).expanduser().resolve())
    options = IndexOptions(captions=captions, prune=prune, workers=workers, batch_size=batch_size,
                           window=WindowSpec(hop_seconds=hop), build_vector_index=vector_index,
                           commit_files=commit_every, wait_for_lock=wait, engine=engine, ray_address=ray_address,
                           encoders=encoders, gpus_per_encoder=gpus_per_encoder)
    try:
        _run(paths, db, model, arch, device, precision, table_set, options, log, as_json)
    except (StorageError, DatabaseBusyError) as exc:
        raise fail(str(exc), code=2) from None


def _run(paths: list[str], db: str | None, model: str | None, arch: str | None, device: str, precision: str,
         table_set: str, options: IndexOptions, log: Path | None, as_json: bool) -> None:
    """Open, lock, check, load the model, index: the order that refuses early what would fail late."""
    from ..index import Index
    from ..store import resolve_uri
    from ..store.lock import writer_lock
    from ..store.storage import check_writable, storage_errors

    uri = resolve_uri(db)
    check_writable(uri)  # creates a missing local database folder
    with storage_errors(uri):
        idx = Index.open(db, model, arch=arch, device=device, precision=precision, table_set=table_set)

    def waiting(holder) -> None:  # noqa: ANN001 - store.lock.Holder
        err_console.print(f"waiting for {holder.describe()} to finish writing {uri} ...", soft_wrap=True)

    with storage_errors(uri), writer_lock(uri, wait=options.wait_for_lock, on_wait=waiting):
        _index(idx, paths, options, log, as_json)


def _index(idx, paths: list[str], options: IndexOptions, log: Path | None, as_json: bool) -> None:  # noqa: ANN001
    with err_console.status("loading the model..."):
        encoder = idx.encoder
    info = encoder.info
    idx.store.bind_model(info.model_name, info.model_sha256, info.embed_dim,
                         arch=getattr(encoder.model.config, "name", None))  # refuse another model before encoding
    err_console.print(f"model {idx.model_name} on {encoder.device} ({encoder.precision}); database {idx.store.uri}")
    progress = make_progress("files", quiet=as_json, console=err_console)
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
        atomic_write_text(log_path, "".join(f"{p}\t{r}\n" for p, r in report.failed))
    if as_json:
        out_console.print_json(json.dumps(report.as_dict()))
    else:
        _print_summary(report, log_path)
    if report.failed:
        raise typer.Exit(1)


def _print_summary(report, log_path: Path) -> None:  # noqa: ANN001
    table = Table(title="acsearch index", show_edge=False)
    for col in ("", "indexed files", "rows", "unchanged", "pruned", "recaptioned", "removed"):
        table.add_column(col, justify="right" if col else "left")
    for m in ("audio", "image", "text"):
        table.add_row(m, str(report.indexed[m]), str(report.rows[m]), str(report.unchanged[m]), str(report.pruned[m]),
                      str(report.recaptioned[m]), str(report.removed[m]))
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
