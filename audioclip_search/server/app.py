"""The FastAPI application: JSON API under ``/api``, the web page at ``/``, API docs at ``/docs``.

Endpoints (all errors are JSON ``{"status", "error", "message"}``):

==========================================  =====================================================
``GET  /api/health``                        liveness + model loaded
``GET  /api/info``                          model, row counts, limits
``GET  /api/search``                        ``q`` text and/or ``item_id``+``item_modality``
``POST /api/search``                        multipart: ``q``, ``audio`` file, ``image`` file, item
``GET  /api/similar/{modality}/{id}``       "find similar": the stored item's embedding as query
``GET  /api/items/{modality}/{id}``         one row's metadata
``GET|HEAD /api/media/{modality}/{id}``     the indexed file itself, with HTTP range requests
``GET  /api/thumbnails/{id}``               a picture's thumbnail (``size``, ``format``)
``GET  /openapi.json``                      the OpenAPI schema; ``/docs`` renders it (offline)
==========================================  =====================================================

Common search parameters: ``target`` (``all``, ``audio``, ``image``, ``text`` or a comma list),
``k`` (files; windows/rows with ``per_window=true``), ``where`` (an SQL filter on the rows, e.g.
``duration > 4``: comparisons, AND/OR/NOT, IN, LIKE, IS NULL, array_has/array_has_any over the
table's own columns; anything else is a 400 naming what was refused) and ``label`` (rows tagged
so). A filter applies to the targets having its columns; the others are listed in ``skipped``.
Files are only ever served by row id: the path comes from the index, never from the request.

Layout: ``routes.py`` (the API router, service and settings as dependencies), ``pages.py`` (the web
page), ``guards.py`` (ASGI guards), ``service.py`` (model, batching, search). Files are streamed by
Starlette's ``FileResponse`` (``media.file_response`` decides the range). The Host guard stays
ours rather than Starlette's ``TrustedHostMiddleware``: that one answers plain text instead of the
API's JSON errors and cuts ``[::1]:8000`` at the first colon, so it refuses IPv6 loopback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from .._version import __version__
from ..index import Index
from .errors import install_error_handlers
from .guards import BodyLimit, HostGuard, PathGuard, SecurityHeaders
from .pages import load_web, pages
from .routes import api, hit_json
from .service import SearchService
from .settings import ServerSettings


def create_app(index: Index, settings: ServerSettings | None = None) -> FastAPI:
    """The app over ``index``. Loads the model now (once), and warms it up unless told not to."""
    settings = settings or ServerSettings()
    service = SearchService(index, settings)
    if settings.warm_up:
        service.warm_up()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        service.close()

    app = FastAPI(
        title=settings.title,
        version=__version__,
        description="Cross-modal search over sounds, pictures and captions with AudioCLIP. "
                    "The schema is at /openapi.json; /docs renders it without any external resource.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.web = load_web()
    install_error_handlers(app)
    app.include_router(api)
    app.include_router(pages)

    # outermost last: SecurityHeaders > HostGuard > PathGuard > CORS > BodyLimit > app
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + 256 * 1024)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["Content-Range", "Accept-Ranges", "Content-Length"])
    app.add_middleware(PathGuard)
    app.add_middleware(HostGuard, allowed=settings.trusted_hosts())
    app.add_middleware(SecurityHeaders)
    return app


__all__ = ["ServerSettings", "create_app", "hit_json"]
