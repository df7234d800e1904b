"""`acsearch eval`: the paper's evaluations (zero-shot, querying, fine-tuned) on a dataset.

    acsearch eval --dataset esc50 --root /data/ESC-50 --task zeroshot
    acsearch eval --dataset us8k --root /data/UrbanSound8K --task querying --folds 1,2
    acsearch eval --dataset esc50 --root /data/ESC-50 --task finetuned \\
        --checkpoint-pattern 'runs/esc50/fold{fold}/best.pt'
    acsearch eval --dataset manifest --manifest my_sounds.csv --task querying

Prints a table with our figures beside the paper's, and writes ``report.json`` and PNG plots to
``--out`` (default ``./acsearch-eval/<dataset>-<task>``).
"""

from __future__ import annotations

from pathlib import Path

import typer

TASKS = ("zeroshot", "querying", "finetuned")
DATASETS = ("esc50", "us8k", "manifest")


def parse_folds(text: str | None) -> list[int] | None:
    """'1,2' or '1-3' or '1,3-5' -> [1, 2, ...]; None/empty -> None (every fold)."""
    if text is None or not text.strip():
        return None
    folds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                folds.extend(range(lo, hi + 1))
            else:
                folds.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"{text!r}: use fold numbers like 1,2 or 1-5", param_hint="--folds") from None
    return list(dict.fromkeys(folds))


def register(app: typer.Typer) -> None:
    """Add the `eval` command to ``app``."""

    @app.command("eval")
    def eval_cmd(
        dataset: str = typer.Option(..., "--dataset", "-d", help="esc50, us8k or manifest."),
        root: Path | None = typer.Option(None, "--root", help="Dataset folder (official layout), or the folder "
                                         "holding manifest.csv/.jsonl for --dataset manifest."),
        manifest: Path | None = typer.Option(None, "--manifest", help="CSV/JSONL manifest of paths + labels "
                                             "(paths relative to it) for --dataset manifest."),
        task: str = typer.Option(..., "--task", "-t", help="zeroshot, querying or finetuned."),
        model: str = typer.Option("audioclip-full", "--model", "-m", help="Registered checkpoint name or a file "
                                  "(zeroshot and querying)."),
        arch: str | None = typer.Option(None, "--arch", help="Model architecture of a checkpoint file "
                                        "(e.g. audioclip-rn50, audioclip-tiny)."),
        folds: str | None = typer.Option(None, "--folds", help="Folds to evaluate, e.g. 1,2 or 1-5 (default: all)."),
        template: str = typer.Option("{}", "--template", help="Prompt template for label texts; '{}' is the "
                                     "class name (the official default)."),
        checkpoint_pattern: str | None = typer.Option(None, "--checkpoint-pattern", help="finetuned: fold k's "
                                                      "checkpoint, with {fold}, e.g. 'runs/esc50/fold{fold}/best.pt'."),
        scope: str = typer.Option("fold", "--scope", help="querying: 'fold' ranks within each fold, 'all' over "
                                  "the chosen folds together."),
        clip_seconds: float | None = typer.Option(None, "--clip-seconds", help="manifest: centre pad/crop length "
                                                  "(default: the longest clip, at most 10 s)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Clips decoded and encoded per step."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default "
                                        "./acsearch-eval/<dataset>-<task>)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the embedding cache."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of the table."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Evaluate a model as in the AudioCLIP paper: zero-shot or fine-tuned accuracy, or querying scores."""
        import json

        from rich.console import Console

        from ..datasets import DatasetError, open_dataset
        from ..errors import CheckpointError
        from ..evaluation import build_report, print_report, run_finetuned, run_querying, run_zeroshot, write_json
        from ..evaluation.plots import write_plots

        err = Console(stderr=True)

        from .common import ERROR_EXIT_STATUS

        def fail(message: str) -> None:
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(ERROR_EXIT_STATUS)

        dataset_key = dataset.lower()
        if dataset_key not in DATASETS:
            raise typer.BadParameter(f"{dataset!r}: use one of {', '.join(DATASETS)}", param_hint="--dataset")
        task_key = task.lower().replace("-", "").replace("_", "")
        if task_key not in TASKS:
            raise typer.BadParameter(f"{task!r}: use one of {', '.join(TASKS)}", param_hint="--task")
        if scope not in ("fold", "all"):
            raise typer.BadParameter(f"{scope!r}: use fold or all", param_hint="--scope")
        if task_key == "finetuned" and not checkpoint_pattern:
            raise typer.BadParameter("--task finetuned needs --checkpoint-pattern, e.g. "
                                     "'runs/esc50/fold{fold}/best.pt'", param_hint="--checkpoint-pattern")
        if dataset_key != "manifest" and root is None:
            raise typer.BadParameter(f"--dataset {dataset_key} needs --root DIR", param_hint="--root")
        fold_list = parse_folds(folds)
        try:
            ds = open_dataset(dataset_key, root, manifest=manifest, clip_seconds=clip_seconds)
            out_dir = out if out is not None else Path("acsearch-eval") / f"{ds.name}-{task_key}"
            progress = not (quiet or as_json)
            if task_key == "finetuned":
                assert checkpoint_pattern is not None
                result = run_finetuned(ds, checkpoint_pattern, folds=fold_list, template=template, arch=arch,
                                       device=device, precision=precision, batch_size=batch_size,
                                       cache=not no_cache, progress=progress)
            else:
                from ..encoder import Encoder

                try:
                    encoder = Encoder.from_pretrained(model, device=device, precision=precision, arch=arch)
                except (RuntimeError, ValueError) as exc:  # impossible device or precision
                    fail(str(exc))
                if task_key == "zeroshot":
                    result = run_zeroshot(encoder, ds, folds=fold_list, template=template, batch_size=batch_size,
                                          cache=not no_cache, progress=progress)
                else:
                    result = run_querying(encoder, ds, folds=fold_list, template=template, scope=scope,
                                          batch_size=batch_size, cache=not no_cache, progress=progress)
            if arch is not None:
                result.settings["arch"] = arch
            result.settings["dataset_root"] = str((root or ds.root).absolute())
            out_dir.mkdir(parents=True, exist_ok=True)
            plots, why = write_plots(result, out_dir)
            notes = [why] if why else []
            files = ["report.json", *(p.name for p in plots)]
            report = build_report(result, out_dir, files=files, notes=notes)
            write_json(report, out_dir / "report.json")
        except (DatasetError, CheckpointError, ValueError) as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": "))
        if why:
            err.print(f"[yellow]warning:[/yellow] {why}")
        if result.failures:
            err.print(f"[yellow]warning:[/yellow] {len(result.failures)} file(s) could not be read and were "
                      f"excluded (see {out_dir / 'report.json'})")
        if as_json:
            typer.echo(json.dumps(report, indent=2, allow_nan=False))
        else:
            print_report(report, Console())
