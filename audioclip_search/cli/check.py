"""`acsearch check`: verify a database (and `--repair` what can be repaired without re-encoding)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from .common import db_option, err_console, fail, guarded, out_console, table_set_option


@guarded
def check_command(
    db: str = db_option(),
    table_set: str = table_set_option(),
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed without re-encoding, and say what."),
    wait: bool = typer.Option(False, "--wait", help="With --repair: wait for a running writer instead of stopping."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Duplicate ids, (path, window) duplicates, rows without a file state, a missing or stale FAISS
    index, orphaned temporary files. Exit status 0 when healthy (or all repaired), 1 otherwise."""
    from ..store import Store
    from ..store.check import check_database
    from ..store.lock import DatabaseBusyError, writer_lock
    from ..store.storage import StorageError, check_writable, storage_errors

    try:
        store = Store.open(db, create=False, table_set=table_set, read_only=not repair)
        with storage_errors(store.uri):
            if repair:
                check_writable(store.uri)
                with writer_lock(store.uri, wait=wait):
                    report = check_database(store, repair=True)
            else:
                report = check_database(store)
    except (StorageError, DatabaseBusyError) as exc:
        raise fail(str(exc), code=2) from None
    if as_json:
        out_console.print_json(json.dumps(report.as_dict(), default=str))
    elif report.ok:
        rows = ", ".join(f"{n} {t}" for t, n in report.tables.items()) or "no tables"
        out_console.print(f"{report.uri} (table set {report.table_set}): healthy ({rows})")
    else:
        table = Table(title=f"acsearch check {report.uri}", show_edge=False)
        for col in ("problem", "where", "count", "detail", "repair"):
            table.add_column(col, overflow="fold")
        for p in report.problems:
            table.add_row(p.kind, p.where, str(p.count), p.detail, p.repaired or ("-" if repair else "--repair"))
        out_console.print(table)
    if report.unrepaired:
        if not repair:
            err_console.print(f"{len(report.problems)} problem(s) found; run with --repair to fix them")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
