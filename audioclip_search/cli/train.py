"""`acsearch train`: train or fine-tune AudioCLIP and its audio head (the paper's stages as presets).

    acsearch train --preset finetune --set data.root=/data/ESC-50 --out runs/esc50
    acsearch train --preset cooperative --set data.train=audioset.parquet --set data.val=eval.csv --out runs/coop
    acsearch train --out runs/coop --resume
    torchrun --nproc_per_node 4 -m audioclip_search.trainer --preset full --config full.yaml --out runs/full
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import typer

_HELP = """Train AudioCLIP or its audio head. Stages (presets): audio-head, audio-head-finetune,
cooperative, full, finetune, finetune-esc50-protocol. Settings come from the preset, then --config
FILE (YAML/TOML/JSON), then each --set key=value (e.g. --set optim.lr=1e-3 --set data.folds=[1,2]).
--resume continues a run in --out exactly where it stopped."""


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Known failures become a message on stderr and an exit status, not a traceback.

    A TrainingError carries its own status (missing files 2, NaN loss 3, unreadable data 4); an
    unusable checkpoint is 1; any other product error (configuration, data, input) is 2.
    """
    from ..errors import AudioClipSearchError, CheckpointError

    try:
        yield
    except AudioClipSearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = getattr(exc, "exit_code", 1 if isinstance(exc, CheckpointError) else 2)
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: continue with the same command plus --resume", err=True)
        raise typer.Exit(130) from None


def _setup_logging() -> None:
    root = logging.getLogger("audioclip_search")
    if not root.handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        root.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
        root.setLevel(logging.INFO)


def _print_presets() -> None:
    from rich.console import Console
    from rich.table import Table

    from ..trainer.config import list_presets

    table = Table(title="Training presets")
    table.add_column("preset", no_wrap=True)
    table.add_column("what")
    for name, text in list_presets().items():
        table.add_row(name, text)
    Console().print(table)


def _print_result(result, out: Path) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.stage}: {out}")
    for col in ("unit", "best by", "best", "epoch", "steps", "skipped", "best checkpoint"):
        table.add_column(col, overflow="fold")
    for u in result.units:
        value = "-" if u.best_value is None else f"{u.best_value:.4f}"
        table.add_row(u.name, u.best_metric, value, str(u.best_epoch or "-"), str(u.steps), str(u.skipped),
                      u.exports.get("best", "-"))
    console = Console()
    console.print(table)
    if any(u.fold is not None for u in result.units):
        console.print(f"evaluate with: acsearch eval --task finetuned --checkpoint-pattern "
                      f"'{out / 'fold{fold}' / 'best.pt'}'", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `train` command to `app`."""

    @app.command("train", help=_HELP)
    def train_cmd(
        preset: str | None = typer.Option(None, "--preset", help="Stage preset (see --list-presets)."),
        config: Path | None = typer.Option(None, "--config", help="Config file: .yaml, .toml or .json."),
        overrides: list[str] = typer.Option([], "--set", help="key=value override, repeatable (optim.lr=1e-3)."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (checkpoints, metrics, config)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
        device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (= --set device=...)."),
        precision: str | None = typer.Option(None, "--precision", help="auto, fp32, bf16, fp16."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
        list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
    ) -> None:
        if list_presets:
            _print_presets()
            return
        from ..trainer.config import build_config, dump_yaml
        from ..trainer.loop import prepare_config, train

        extra = list(overrides)
        if device is not None:
            extra.append(f"device={device}")
        if precision is not None:
            extra.append(f"precision={precision}")
        with _errors():
            if print_config:
                if resume and out is not None:
                    cfg, _ = prepare_config(out, preset, config, extra, resume=True)
                else:
                    cfg = build_config(preset, config, extra)
                typer.echo(dump_yaml(cfg), nl=False)
                return
            if out is None:
                typer.echo("error: --out DIR is required", err=True)
                raise typer.Exit(2)
            if not resume and preset is None and config is None:
                typer.echo("error: give --preset NAME and/or --config FILE (or --resume to continue a run)", err=True)
                raise typer.Exit(2)
            if not resume and ((out / "last.pt").exists() or any(out.glob("fold*/last.pt"))):
                typer.echo(f"error: {out} already holds a run; add --resume to continue it or choose another --out",
                           err=True)
                raise typer.Exit(2)
            cfg, notes = prepare_config(out, preset, config, extra, resume=resume)
            _setup_logging()
            for note in notes:
                if int(os.environ.get("RANK", "0")) == 0:
                    typer.echo(note, err=True)
            result = train(cfg, out, resume=resume)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
            _print_result(result, out)
