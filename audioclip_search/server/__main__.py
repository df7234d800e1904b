"""`python -m audioclip_search.server [OPTIONS]`: the same as `acsearch serve [OPTIONS]`."""

import typer

from ..cli.serve import serve_command

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(serve_command)

if __name__ == "__main__":
    app(prog_name="python -m audioclip_search.server")
