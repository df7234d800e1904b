"""`acsearch merge DB... --into OUT`: fold databases indexed separately with one model into one."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from .common import err_console, fail, guarded, out_console, table_set_option


@guarded
def merge_command(
    sources: list[str] = typer.Argument(..., help="Databases to fold in (paths or s3://, gs://, az:// URIs)."),
    into: str = typer.Option(..., "--into", help="The database to merge into (created if missing)."),
    table_set: str = table_set_option(),
    vector_index: bool = typer.Option(True, "--vector-index/--no-vector-index", help="Update the FAISS index after."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Merge shards: each file once (the newest indexed copy wins); all must share one model."""
    from ..store import Store, StoreNotFoundError
    from ..store.merge import merge_stores

    stores = []
    for uri in sources:
        try:
            stores.append(Store.open(uri, create=False, read_only=True, table_set=table_set))
        except StoreNotFoundError as exc:
            raise fail(str(exc), code=2) from None
    target = Store.open(into, table_set=table_set)
    with err_console.status("merging..."):
        report = merge_stores(stores, target, refresh_vector_index=vector_index)
    if as_json:
        out_console.print_json(json.dumps(report.as_dict()))
        return
    table = Table(title=f"acsearch merge -> {report.into}", show_edge=False)
    for col in ("", "files written", "rows written", "already newest", "in several shards"):
        table.add_column(col, justify="right" if col else "left")
    for m in ("audio", "image", "text"):
        table.add_row(m, str(report.files[m]), str(report.rows[m]), str(report.kept[m]), str(report.duplicates[m]))
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
