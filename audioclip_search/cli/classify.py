"""`acsearch classify FILE --labels ...`: zero-shot classification of a sound or picture."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .common import arch_option, device_option, fail, guarded, model_option, out_console, precision_option


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
) -> None:
    """Probabilities of each label, as the paper's zero-shot classification."""
    from ..encoder import Encoder
    from ..index import DEFAULT_MODEL, ENV_MODEL
    from ..search import QueryEmbedder

    if "{}" not in template:
        raise fail("--template must contain {} where the label goes", code=2)
    names = [x.strip() for x in labels.split(",") if x.strip()]
    import os

    from ..classify import classify

    encoder = Encoder.from_pretrained(model or os.environ.get(ENV_MODEL) or DEFAULT_MODEL, device=device,
                                      precision=precision, arch=arch)
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


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)
