"""`acsearch serve`: a local web server (FastAPI on uvicorn) over an index, with a web page.

    from audioclip_search.index import Index
    from audioclip_search.server import ServerSettings, create_app
    app = create_app(Index.open("./acsearch.lancedb", read_only=True, create=False), ServerSettings())

See `app.py` for the endpoints. Needs the `serve` extra (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: importing settings must not need FastAPI
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
