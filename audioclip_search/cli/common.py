"""Options and error handling shared by the CLI verbs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

DB_HELP = "Database directory or any URI LanceDB takes (default $ACSEARCH_DB or ./acsearch.lancedb)."
MODEL_HELP = ("Checkpoint name (acsearch weights list) or path; default $ACSEARCH_MODEL, else the model "
              "that filled the database, else audioclip-full.")


def db_option() -> Any:
    return typer.Option(None, "--db", help=DB_HELP, envvar="ACSEARCH_DB", show_envvar=False)


def model_option() -> Any:
    return typer.Option(None, "--model", "-m", help=MODEL_HELP)


def arch_option() -> Any:
    return typer.Option(None, "--arch", help="Architecture of a checkpoint file that does not record it.")


def device_option() -> Any:
    return typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")


def precision_option() -> Any:
    return typer.Option("auto", "--precision",
                        help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 (also on CPU) or fp16 (CUDA).")


def table_set_option() -> Any:
    return typer.Option("default", "--table-set",
                        help="A separate set of tables in the same database (e.g. for another model).")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def guarded(fn: F) -> F:
    """Known failures become one clear line and exit status 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..datasets import DatasetError
        from ..errors import CheckpointError, InputError
        from ..store import ModelMismatchError, StoreError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (CheckpointError, InputError, DatasetError, ModelMismatchError, StoreError, FileNotFoundError,
                ValueError, KeyError, RuntimeError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, KeyError):
                message = str(exc.args[0]) if exc.args else message
            raise fail(message) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
