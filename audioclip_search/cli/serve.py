"""`acsearch serve`: the web page and JSON API over an index, on uvicorn (model loaded once)."""

from __future__ import annotations

import typer

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


@guarded
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on. Anything but loopback exposes the index to the network."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    db: str = db_option(),
    model: str = model_option(),
    arch: str = arch_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    table_set: str = table_set_option(),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", min=0.01,
                                        help="Largest uploaded query file (MiB); bigger requests get 413."),
    max_query_seconds: float = typer.Option(180.0, "--max-query-seconds", min=1.0,
                                            help="Longest uploaded query sound (seconds)."),
    cors_origin: list[str] = typer.Option(None, "--cors-origin",
                                          help="Allow this origin to call the API from a browser (repeatable; "
                                               "'*' for any). CORS is off by default."),
    allowed_host: list[str] = typer.Option(None, "--allowed-host",
                                           help="Host header value to accept (repeatable). Default: loopback "
                                                "names when bound to loopback, any otherwise."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, "
                                                              "info, debug."),
) -> None:
    """Serve the search page at http://HOST:PORT/ and the JSON API under /api (schema: /openapi.json)."""
    try:
        import uvicorn

        from ..server.app import create_app
    except ImportError as exc:
        raise fail(f"acsearch serve needs the 'serve' extra ({exc.name} is missing): "
                   "pip install 'audioclip-search[serve]'") from None
    from ..index import Index
    from ..indexer.heal import refresh_vector_indexes
    from ..server.settings import MB, ServerSettings

    settings = ServerSettings(host=host, port=port, max_upload_bytes=int(max_upload_mb * MB),
                              max_query_seconds=max_query_seconds, cors_origins=tuple(cors_origin or ()),
                              allowed_hosts=tuple(allowed_host) if allowed_host else None)
    if not settings.loopback:
        err_console.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this machine can "
                          "search the index and play or view every indexed file", soft_wrap=True)
    idx = Index.open(db, model, arch=arch, device=device, precision=precision, table_set=table_set,
                     create=False, read_only=True)
    refresh_vector_indexes(idx.store, quiet=True)  # an index run that never built it must not leave none
    err_console.print(f"loading model {idx.model_name} ...")
    app = create_app(idx, settings)
    service = app.state.service
    counts = ", ".join(f"{service.count(m)} {m}" for m in ("audio", "image", "text"))
    shown = f"[{host}]" if ":" in host else host
    out_console.print(f"serving {counts} rows at http://{shown}:{port}/  (API schema: /openapi.json, docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, proxy_headers=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
