"""`acsearch classify FILE --labels ...`: zero-shot classification of a sound or picture."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .common import (
    arch_option,
    device_option,
    fail,
    guarded,
    model_option,
    out_console,
    precision_option,
    table_set_option,
)


@guarded
def classify_command(
    file: Path = typer.Argument(..., help="A sound or picture file."),
    labels: str = typer.Option(..., "--labels", "-l", help='Comma-separated labels, e.g. "dog,rain,siren".'),
    template: str = typer.Option("{}", "--template", help='Prompt around each label, e.g. "the sound of a {}".'),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    model: str = model_option(),
    arch: str = arch_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    db: str = typer.Option(None, "--db", envvar="ACSEARCH_DB", show_envvar=False,
                           help="Use the model (and architecture) that filled this database when --model "
                                "is not given (default $ACSEARCH_DB, if set)."),
    table_set: str = table_set_option(),
) -> None:
    """Probabilities of each label, as the paper's zero-shot classification."""
    from ..classify import classify
    from ..search import QueryEmbedder

    if "{}" not in template:
        raise fail("--template must contain {} where the label goes", code=2)
    names = [x.strip() for x in labels.split(",") if x.strip()]
    encoder = _encoder(db, table_set, model, arch, device, precision)
    predictions = classify(QueryEmbedder(encoder), file, names, template)
    if as_json:
        print(json.dumps([p.__dict__ for p in predictions]))
        return
    table = Table(title=str(file), show_edge=False)
    for col in ("label", "probability", "", "cosine"):
        table.add_column(col, justify="left" if col in ("label", "") else "right")
    for p in predictions:
        table.add_row(p.label, f"{p.probability:.4f}", "█" * int(round(p.probability * 30)), f"{p.score:.4f}")
    out_console.print(table)


def _encoder(db: str | None, table_set: str, model: str | None, arch: str | None, device: str, precision: str):  # noqa: ANN202
    """The model as `acsearch query` would pick it: --model, $ACSEARCH_MODEL, the database's binding
    (name and architecture), audioclip-full."""
    from ..encoder import Encoder
    from ..index import Index
    from ..store import StoreNotFoundError

    try:
        return Index.open(db, model, arch=arch, device=device, precision=precision, table_set=table_set,
                          create=False, read_only=True).encoder
    except StoreNotFoundError:
        if db:  # asked for a database that is not there
            raise
        return Encoder.from_pretrained(model or _default_model(), device=device, precision=precision, arch=arch)


def _default_model() -> str:
    import os

    from ..index import DEFAULT_MODEL, ENV_MODEL

    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)
