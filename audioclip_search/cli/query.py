"""`acsearch query`: search the database by words, sounds and pictures, any modality to any."""

from __future__ import annotations

import json
from pathlib import Path

import typer
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

#: Other matching windows of a file shown under it in the table (all of them are in --json).
MAX_WINDOWS_SHOWN = 3


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)}:{sec:04.1f}"


@guarded
def query_command(
    text: list[str] = typer.Option(None, "--text", "-t", help="Words to search for (repeatable)."),
    audio: list[Path] = typer.Option(None, "--audio", "-a", help="A sound file as the query (repeatable)."),
    image: list[Path] = typer.Option(None, "--image", "-i", help="A picture as the query (repeatable)."),
    target: str = typer.Option("all", "--target", help="What to find: audio, image, text or all."),
    k: int = typer.Option(10, "-k", "--top", min=1, max=10_000, help="How many files (windows with --per-window)."),
    per_window: bool = typer.Option(False, "--per-window",
                                    help="One result per window/row instead of one per file."),
    where: str = typer.Option(None, "--where", help="SQL filter on the rows, e.g. \"duration > 5\"."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per result line."),
    db: str = db_option(),
    model: str = model_option(),
    arch: str = arch_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    table_set: str = table_set_option(),
) -> None:
    """Find sounds, pictures and texts. Several query parts combine by normalised-embedding sum."""
    from ..index import Index
    from ..indexer.heal import refresh_vector_indexes

    if not (text or audio or image):
        raise fail("give at least one of --text, --audio, --image", code=2)
    if target not in ("audio", "image", "text", "all"):
        raise fail(f"--target must be audio, image, text or all (got {target!r})", code=2)
    idx = Index.open(db, model, arch=arch, device=device, precision=precision, table_set=table_set,
                     create=False, read_only=True)
    refresh_vector_indexes(idx.store, quiet=True)  # an index run that never built it must not leave none
    hits = idx.search(text=text or None, audio=audio or None, image=image or None, target=target, k=k, where=where,
                      per_window=per_window)
    for modality, missing in getattr(hits, "skipped", {}).items():
        err_console.print(f"note: the filter was not applied to the {modality} table (no column "
                          f"{', '.join(missing)}); it gives no results", soft_wrap=True)
    if as_json:
        for hit in hits:
            print(json.dumps(hit.as_dict(), ensure_ascii=False))
        return
    if not hits:
        out_console.print("no results (is the database empty for this target?)")
        return
    table = Table(show_edge=False)
    for col in ("rank", "score", "modality", "path", "time", "caption"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left",
                         overflow="fold" if col == "path" else "ellipsis")
    for hit in hits:
        span = f"{_fmt_time(hit.start)}-{_fmt_time(hit.end)}" if hit.start is not None else ""
        caption = hit.caption or (hit.text[:80] if hit.text else "") or ", ".join(hit.labels)
        path = hit.path + "".join(f"\n= {p}" for p in hit.paths[1:])  # same content elsewhere
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.modality, path, span, caption)
        for w in hit.windows[:MAX_WINDOWS_SHOWN]:
            table.add_row("", f"{w.score:.4f}", "", "", f"{_fmt_time(w.start)}-{_fmt_time(w.end)}", "")
        if len(hit.windows) > MAX_WINDOWS_SHOWN:
            table.add_row("", "", "", "", f"+{len(hit.windows) - MAX_WINDOWS_SHOWN} windows", "")
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("query")(query_command)
