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
``k``, ``where`` (an SQL filter on the rows, e.g. ``duration > 4``) and ``label`` (rows tagged so).
Files are only ever served by row id: the path comes from the index, never from the request.
"""

from __future__ import annotations

import re
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from .._version import __version__
from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError
from ..image import IMAGE_EXTENSIONS
from ..index import Index
from ..search import Hit
from ..store import MODALITIES, sql_str
from ..store import index_manifest as _index_manifest
from .errors import ApiError, install_error_handlers, one_line
from .guards import BodyLimit, HostGuard, PathGuard, SecurityHeaders
from .media import content_type_for, file_response, local_file
from .service import SearchService
from .settings import ServerSettings
from .uploads import check_upload, save_upload, temp_files

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "docs.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _load_web() -> dict[str, tuple[bytes, str]]:
    root = resources.files("audioclip_search") / "web"
    return {name: (root.joinpath(name).read_bytes(), ctype) for name, ctype in WEB_FILES.items()
            if root.joinpath(name).is_file()}


def _check_id(item_id: str | None, modality: str | None = None) -> str:
    if not item_id or not ID_RE.match(item_id):
        raise ApiError(404, f"no {modality or ''} item with id {one_line(item_id, 80)!r}".replace("  ", " "))
    return item_id


def _check_modality(modality: str | None, allowed: tuple[str, ...] = MODALITIES) -> str:
    if modality not in allowed:
        raise ApiError(404, f"unknown modality {one_line(modality, 40)!r}: use {', '.join(allowed)}")
    return modality


def _targets(target: str) -> str | list[str]:
    parts = [t.strip().lower() for t in (target or "all").split(",") if t.strip()]
    if not parts or "all" in parts:
        return "all"
    bad = [t for t in parts if t not in MODALITIES]
    if bad:
        raise ApiError(400, f"unknown target {one_line(', '.join(bad), 80)!r}: use all, audio, image or text")
    return parts[0] if len(parts) == 1 else list(dict.fromkeys(parts))


def _display_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def hit_json(hit: Hit, duration: float | None = None) -> dict:
    out = hit.as_dict()
    m, i = hit.modality, hit.id
    out["name"] = _display_name(hit.path)
    out["duration"] = duration
    urls = {"item": f"/api/items/{m}/{i}", "similar": f"/api/similar/{m}/{i}", "media": f"/api/media/{m}/{i}"}
    if m == "audio" and hit.start is not None:
        fragment = f"#t={hit.start:.2f}" + (f",{hit.end:.2f}" if hit.end is not None else "")
        urls["play"] = urls["media"] + fragment
    if m == "image":
        urls["thumbnail"] = f"/api/thumbnails/{i}"
    out["urls"] = urls
    return out


def _row_json(modality: str, row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "embedding"}
    for key, value in list(out.items()):
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    out["modality"] = modality
    out["name"] = _display_name(str(row.get("path", "")))
    return out


def create_app(index: Index, settings: ServerSettings | None = None) -> FastAPI:
    """The app over ``index``. Loads the model now (once), and warms it up unless told not to."""
    settings = settings or ServerSettings()
    service = SearchService(index, settings)
    if settings.warm_up:
        service.warm_up()
    web = _load_web()

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
    install_error_handlers(app)
    api = APIRouter(prefix="/api")

    def where_clause(where: str | None, label: str | None) -> str | None:
        parts = []
        if where and where.strip():
            if len(where) > settings.max_where_chars:
                raise ApiError(400, f"filter longer than {settings.max_where_chars} characters")
            parts.append(f"({where.strip()})")
        if label and label.strip():
            try:
                parts.append(f"array_has(labels, {sql_str(label.strip())})")
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        return " AND ".join(parts) or None

    def plan(target: str, k: int, where: str | None, label: str | None) -> dict:
        """Checks the cheap parameters before any embedding work."""
        return {"targets": _targets(target), "where_sql": where_clause(where, label), "k": k,
                "echo": {"target": target, "k": k, "where": where or None, "label": label or None}}

    def run_search(vectors: list, query: dict, options: dict, t0: float) -> dict:
        if not vectors:
            raise ApiError(400, "give a query: text (q), an audio or image file, or an item id")
        hits = service.search(vectors, options["targets"], options["k"], options["where_sql"])
        durations = service.durations([h.id for h in hits if h.modality == "audio"])
        query.update(options["echo"])
        return {"query": query, "count": len(hits), "took_ms": round((time.perf_counter() - t0) * 1000, 2),
                "results": [hit_json(h, durations.get(h.id)) for h in hits]}

    def item_part(item_id: str | None, item_modality: str | None, vectors: list, query: dict) -> None:
        if item_id is None and item_modality is None:
            return
        modality = _check_modality(item_modality or "")
        item_id = _check_id(item_id, modality)
        vectors.append(service.item_vector(modality, item_id))
        query["item"] = {"modality": modality, "id": item_id}

    def text_part(q: str | None, vectors: list, query: dict) -> None:
        if q is not None and q.strip():
            vectors.append(service.text_vector(q))
            query["text"] = q

    k_query = Query(settings.default_k, ge=1, le=settings.max_k, description="How many results.")
    target_doc = "What to find: all, audio, image, text, or a comma list."

    @api.get("/health", summary="Liveness: the model is loaded and the store is open")
    def health() -> dict:
        return {"status": "ok", "model_loaded": True, "version": __version__}

    @api.get("/info", summary="Model, row counts and limits")
    def info() -> dict:
        tables = {}
        for m in MODALITIES:
            rows = service.count(m)
            manifest = _index_manifest(service.store, m) if rows else None
            tables[m] = {"rows": rows, "vector_index": (manifest or {}).get("kind")}
        enc = service.encoder
        return {
            "title": settings.title,
            "version": __version__,
            "model": {"name": enc.info.model_name, "display_name": _display_name(enc.info.model_name),
                      "sha256": enc.info.model_sha256, "dim": enc.info.embed_dim, "device": str(enc.device),
                      "precision": enc.precision},
            "store": {"uri": service.store.uri, "table_set": service.store.table_set},
            "tables": tables,
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_k": settings.max_k,
                       "default_k": settings.default_k, "max_query_seconds": settings.max_query_seconds,
                       "audio_extensions": list(AUDIO_EXTENSIONS), "image_extensions": list(IMAGE_EXTENSIONS)},
            "stats": {"text_batches": service.texts.batches, "texts_embedded": service.texts.texts,
                      "thumbnail_cache": service.thumbs.stats()},
        }

    @api.get("/search", summary="Search by text and/or by an indexed item")
    def search_get(
        q: str | None = Query(None, description="Words describing what to find."),
        item_id: str | None = Query(None, description="An indexed item's id as (part of) the query."),
        item_modality: str | None = Query(None, description="The modality of item_id: audio, image or text."),
        target: str = Query("all", description=target_doc),
        k: int = k_query,
        where: str | None = Query(None, description="SQL filter on rows, e.g. duration > 4."),
        label: str | None = Query(None, description="Only rows with this label."),
    ) -> dict:
        t0 = time.perf_counter()
        options = plan(target, k, where, label)
        vectors: list = []
        query: dict = {}
        item_part(item_id, item_modality, vectors, query)
        text_part(q, vectors, query)
        return run_search(vectors, query, options, t0)

    @api.post("/search", summary="Search with an uploaded sound or picture (multipart form)")
    def search_post(
        request: Request,
        q: str | None = Form(None, description="Words describing what to find."),
        audio: UploadFile | None = File(None, description="A sound file as the query."),
        image: UploadFile | None = File(None, description="A picture as the query."),
        item_id: str | None = Form(None),
        item_modality: str | None = Form(None),
        target: str = Form("all", description=target_doc),
        k: int = Form(settings.default_k, ge=1, le=settings.max_k),
        where: str | None = Form(None),
        label: str | None = Form(None),
    ) -> dict:
        t0 = time.perf_counter()
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise ApiError(415, f"send the query as multipart/form-data (got {ctype or 'no content type'!r})")
        uploads = [(kind, f) for kind, f in (("audio", audio), ("image", image))
                   if f is not None and (f.filename or f.size)]
        checked = [(kind, f, check_upload(kind, f.filename, f.content_type)) for kind, f in uploads]
        options = plan(target, k, where, label)
        vectors: list = []
        query: dict = {}
        item_part(item_id, item_modality, vectors, query)
        text_part(q, vectors, query)
        with temp_files() as paths:
            for kind, upload, suffix in checked:
                path = save_upload(upload.file, suffix, settings.max_upload_bytes)
                paths.append(path)
                try:
                    vectors.append(service.audio_vector(path) if kind == "audio" else service.image_vector(path))
                except InputError as exc:
                    raise ApiError(422, f"cannot use the uploaded {kind} file {upload.filename!r}: {exc.reason}") \
                        from None
                query[kind] = upload.filename
        return run_search(vectors, query, options, t0)

    @api.get("/similar/{modality}/{item_id}", summary="Find similar: an indexed item is the query")
    def similar(modality: str, item_id: str, target: str = Query("all", description=target_doc),
                k: int = k_query, where: str | None = None, label: str | None = None) -> dict:
        t0 = time.perf_counter()
        modality = _check_modality(modality)
        item_id = _check_id(item_id, modality)
        options = plan(target, k, where, label)
        query: dict = {"item": {"modality": modality, "id": item_id}}
        return run_search([service.item_vector(modality, item_id)], query, options, t0)

    @api.get("/items/{modality}/{item_id}", summary="One indexed item's metadata")
    def item(modality: str, item_id: str) -> dict:
        modality = _check_modality(modality)
        row = service.row(modality, _check_id(item_id, modality))
        out = _row_json(modality, row)
        out["urls"] = hit_json(Hit(0, 0.0, modality, item_id, str(row.get("path", "")), row.get("start"),
                                   row.get("end")), row.get("duration"))["urls"]
        return out

    @api.head("/media/{modality}/{item_id}", include_in_schema=False)
    @api.get("/media/{modality}/{item_id}", summary="The indexed file (by row id), with HTTP range requests")
    def media(request: Request, modality: str, item_id: str) -> Response:
        modality = _check_modality(modality)
        row = service.row(modality, _check_id(item_id, modality))
        path = local_file(str(row.get("path", "")))
        if path is None:
            raise ApiError(404, "this item's file is not a local file")
        try:
            return file_response(path, request.headers.get("range"), request.headers.get("if-range"),
                                 method=request.method, media_type=content_type_for(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ApiError(404, "the indexed file is no longer there (re-index?)") from None
        except PermissionError:
            raise ApiError(404, "the indexed file cannot be read") from None

    @api.get("/thumbnails/{item_id}", summary="A picture's thumbnail (in-memory LRU cache)")
    def thumbnail(request: Request, item_id: str,
                  size: int = Query(settings.thumb_size, ge=16, le=settings.thumb_max_size),
                  format: str = Query("auto", pattern="^(auto|jpeg|png)$",  # noqa: A002
                                      description="auto: PNG for pictures with transparency, else JPEG.")) -> Response:
        row = service.row("image", _check_id(item_id, "image"))
        path = local_file(str(row.get("path", "")))
        if path is None:
            raise ApiError(404, "this item's file is not a local file")
        try:
            thumb = service.thumbs.get(path, size, format, settings.max_image_pixels * 4)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            raise ApiError(404, "the indexed file is no longer there (re-index?)") from None
        except ValueError as exc:
            raise ApiError(422, f"cannot make a thumbnail: {one_line(exc, 200)}") from None
        headers = {"ETag": thumb.etag, "Cache-Control": "private, max-age=3600"}
        if request.headers.get("if-none-match") == thumb.etag:
            return Response(status_code=304, headers=headers)
        return Response(thumb.data, media_type=thumb.media_type, headers=headers)

    app.include_router(api)

    # ------------------------------------------------------------------ the web page (offline)
    def web_file(name: str) -> Response:
        if name not in web:
            raise ApiError(404, f"no such file: {one_line(name, 80)}")
        data, ctype = web[name]
        return Response(data, media_type=ctype, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return web_file("index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return web_file("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return web_file(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return web_file("favicon.svg")

    @app.get("/api", include_in_schema=False)
    def api_root() -> JSONResponse:
        return JSONResponse({"openapi": "/openapi.json", "docs": "/docs", "health": "/api/health"})

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
