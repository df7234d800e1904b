"""`acsearch info`: what is in the database: tables, rows, model, vector indexes."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from .common import db_option, guarded, out_console, table_set_option


@guarded
def info_command(
    db: str = db_option(),
    table_set: str = table_set_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Tables, row counts, the model that filled them, index type and size."""
    from ..store import Store

    store = Store.open(db, create=False, table_set=table_set, read_only=True)
    info = store.info()
    if as_json:
        out_console.print_json(json.dumps(info, default=str))
        return
    out_console.print(f"database [bold]{store.uri}[/] (table set {table_set})")
    model = info.get("model") or {}
    out_console.print(f"model: {model.get('model', '-')}  sha256 {str(model.get('model_sha256', '-'))[:16]}  "
                      f"dim {model.get('dim', '-')}  arch {model.get('arch') or '-'}")
    table = Table(show_edge=False)
    for col in ("table", "rows", "version", "vector index", "index size", "LanceDB indexes"):
        table.add_column(col)
    for name, t in (info.get("tables") or {}).items():
        vi = t.get("vector_index") or {}
        size = vi.get("index_bytes")
        if isinstance(size, dict):  # {"ram": ..., "disk_extra": ...}
            size = size.get("ram", 0) + size.get("disk_extra", 0)
        table.add_row(t.get("table", name), str(t.get("rows", "-")), str(t.get("version", "-")),
                      str(vi.get("kind", "none")), f"{size / 1e6:.1f} MB" if size else "-",
                      ", ".join(t.get("lancedb_indexes") or []) or "-")
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
