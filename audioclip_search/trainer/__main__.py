"""``python -m audioclip_search.trainer ...`` is ``acsearch train ...`` (for torchrun: ``-m``)."""

from __future__ import annotations

import typer

from ..cli.train import register


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "train" a sub-command name, as in acsearch
        """AudioCLIP training."""

    import sys

    argv = sys.argv[1:]
    if not argv or argv[0] != "train":
        argv = ["train", *argv]
    app(args=argv, prog_name="python -m audioclip_search.trainer")


if __name__ == "__main__":
    main()
