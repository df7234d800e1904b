"""Options and error handling shared by the CLI verbs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from ..errors import AudioClipSearchError

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


#: Exit status of a known failure (any ``AudioClipSearchError``), as for usage errors (typer): 2.
ERROR_EXIT_STATUS = 2


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def guarded(fn: F) -> F:
    """Known failures become one clear line and ``ERROR_EXIT_STATUS`` instead of a traceback.

    Known: every ``AudioClipSearchError`` (the product's errors all derive from it), and the
    built-in errors a bad argument raises (missing file, bad value, unknown key).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (AudioClipSearchError, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
            raise fail(one_line(exc), ERROR_EXIT_STATUS) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
