"""The JSON API (``/api``) as a router: every route gets the service and settings as dependencies.

Routes are plain ``def`` functions, so FastAPI runs each request's work (embedding, FAISS, LanceDB,
file reads) in its thread pool, never on the event loop; the dependencies only read ``app.state``
and are ``async`` so they cost no thread hop. Searches pin one snapshot per table version (see
:meth:`SearchEngine.search_vector`), so the rows shown are those of the version searched.
"""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from .._version import __version__
from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError
from ..image import IMAGE_EXTENSIONS
from ..search import Hit, Hits
from ..store import MODALITIES, sql_str
from ..store.filters import Filter, FilterError, parse_filter
from ..store.snapshot import Pins
from ..store.vector_index import index_manifest
from .errors import ApiError, one_line
from .media import content_type_for, file_response, local_file
from .service import SearchService
from .settings import ServerSettings
from .uploads import check_upload, save_upload, temp_files

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TARGET_DOC = "What to find: all, audio, image, text, or a comma list."
K_DOC = "How many results: files (windows/rows with per_window). Default and maximum: see /api/info."
PER_WINDOW_DOC = "One result per window/row instead of one per file."


async def get_service(request: Request) -> SearchService:
    return request.app.state.service


async def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
api = APIRouter(prefix="/api")


# ---------------------------------------------------------------------------------- helpers
def check_id(item_id: str | None, modality: str | None = None) -> str:
    if not item_id or not ID_RE.match(item_id):
        raise ApiError(404, f"no {modality or ''} item with id {one_line(item_id, 80)!r}".replace("  ", " "))
    return item_id


def check_modality(modality: str | None, allowed: tuple[str, ...] = MODALITIES) -> str:
    if modality not in allowed:
        raise ApiError(404, f"unknown modality {one_line(modality, 40)!r}: use {', '.join(allowed)}")
    return modality


def parse_targets(target: str) -> str | list[str]:
    parts = [t.strip().lower() for t in (target or "all").split(",") if t.strip()]
    if not parts or "all" in parts:
        return "all"
    bad = [t for t in parts if t not in MODALITIES]
    if bad:
        raise ApiError(400, f"unknown target {one_line(', '.join(bad), 80)!r}: use all, audio, image or text")
    return parts[0] if len(parts) == 1 else list(dict.fromkeys(parts))


def display_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def hit_json(hit: Hit, duration: float | None = None) -> dict:
    out = hit.as_dict()
    m, i = hit.modality, hit.id
    out["name"] = display_name(hit.path)
    out["duration"] = duration
    urls = {"item": f"/api/items/{m}/{i}", "similar": f"/api/similar/{m}/{i}", "media": f"/api/media/{m}/{i}"}
    if m == "audio" and hit.start is not None:
        fragment = f"#t={hit.start:.2f}" + (f",{hit.end:.2f}" if hit.end is not None else "")
        urls["play"] = urls["media"] + fragment
    if m == "image":
        urls["thumbnail"] = f"/api/thumbnails/{i}"
    out["urls"] = urls
    return out


def row_json(modality: str, row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "embedding"}
    for key, value in list(out.items()):
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    out["modality"] = modality
    out["name"] = display_name(str(row.get("path", "")))
    return out


def where_filter(where: str | None, label: str | None, settings: ServerSettings) -> Filter | None:
    """``where`` and ``label`` as one checked filter (400 naming what a filter may not contain)."""
    parts = []
    try:
        if where and where.strip():
            if len(where) > settings.max_where_chars:
                raise ApiError(400, f"filter longer than {settings.max_where_chars} characters")
            parts.append(parse_filter(where.strip()).sql)  # errors name the user's own text
        if label and label.strip():
            parts.append(f"array_has(labels, {sql_str(label.strip())})")
        return parse_filter(" AND ".join(f"({p})" for p in parts)) if parts else None
    except (FilterError, ValueError) as exc:
        raise ApiError(400, ("invalid filter: " if isinstance(exc, FilterError) else "") + one_line(exc, 400)) \
            from None


def plan(settings: ServerSettings, target: str, k: int | None, where: str | None, label: str | None,
         per_window: bool) -> dict:
    """Checks the cheap parameters before any embedding work."""
    k = settings.default_k if k is None else k
    if not 1 <= k <= settings.max_k:
        raise ApiError(422, f"k must be between 1 and {settings.max_k}")
    return {"targets": parse_targets(target), "filter": where_filter(where, label, settings), "k": k,
            "per_window": per_window,
            "echo": {"target": target, "k": k, "where": where or None, "label": label or None,
                     "per_window": per_window}}


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class ApiJSONResponse(JSONResponse):
    """Encoded in the route's worker thread: FastAPI passes a returned response through as it is,
    where a returned dict costs a second thread-pool hop (validating it against the ``dict``
    return type) and a walk of every value. Non-finite floats become ``null``, as FastAPI does."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # NaN or infinity somewhere
            return super().render(finite(content))


def run_search(service: SearchService, vectors: list, query: dict, options: dict, t0: float,
               pins: Pins | None = None) -> Response:
    if not vectors:
        raise ApiError(400, "give a query: text (q), an audio or image file, or an item id")
    hits = service.search(vectors, options["targets"], options["k"], options["filter"],
                          per_window=options["per_window"], pins=pins)
    query.update(options["echo"])
    out = {"query": query, "count": len(hits), "took_ms": round((time.perf_counter() - t0) * 1000, 2),
           "results": [hit_json(h, h.duration) for h in hits]}
    skipped = hits.skipped if isinstance(hits, Hits) else {}
    if skipped:  # tables the filter could not apply to (missing columns): they gave no results
        out["skipped"] = skipped
    return ApiJSONResponse(out)


def item_part(service: SearchService, item_id: str | None, item_modality: str | None, vectors: list,
              query: dict, pins: Pins) -> None:
    if item_id is None and item_modality is None:
        return
    modality = check_modality(item_modality or "")
    item_id = check_id(item_id, modality)
    vectors.append(service.item_vector(modality, item_id, pins))
    query["item"] = {"modality": modality, "id": item_id}


def text_part(service: SearchService, q: str | None, vectors: list, query: dict) -> None:
    if q is not None and q.strip():
        vectors.append(service.text_vector(q))
        query["text"] = q


def stored_and_text_parts(service: SearchService, item_id: str | None, item_modality: str | None,
                          q: str | None) -> tuple[list, dict, Pins]:
    """A query's stored-item and text parts: ``(vectors, query echo, the request's snapshots)``."""
    vectors: list = []
    query: dict = {}
    pins = service.pins()
    item_part(service, item_id, item_modality, vectors, query, pins)
    text_part(service, q, vectors, query)
    return vectors, query, pins


# ---------------------------------------------------------------------------------- routes
@api.get("/health", summary="Liveness: the model is loaded and the store is open")
def health() -> dict:
    return {"status": "ok", "model_loaded": True, "version": __version__}


@api.get("/info", summary="Model, row counts and limits")
def info(service: ServiceDep, settings: SettingsDep) -> dict:
    tables = {}
    for m in MODALITIES:
        rows = service.count(m)
        manifest = index_manifest(service.store, m) if rows else None
        tables[m] = {"rows": rows, "vector_index": (manifest or {}).get("kind")}
    enc = service.encoder
    return {
        "title": settings.title,
        "version": __version__,
        "model": {"name": enc.info.model_name, "display_name": display_name(enc.info.model_name),
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
    service: ServiceDep,
    settings: SettingsDep,
    q: str | None = Query(None, description="Words describing what to find."),
    item_id: str | None = Query(None, description="An indexed item's id as (part of) the query."),
    item_modality: str | None = Query(None, description="The modality of item_id: audio, image or text."),
    target: str = Query("all", description=TARGET_DOC),
    k: int | None = Query(None, description=K_DOC),
    where: str | None = Query(None, description="SQL filter on rows, e.g. duration > 4."),
    label: str | None = Query(None, description="Only rows with this label."),
    per_window: bool = Query(False, description=PER_WINDOW_DOC),
) -> Response:
    t0 = time.perf_counter()
    options = plan(settings, target, k, where, label, per_window)
    vectors, query, pins = stored_and_text_parts(service, item_id, item_modality, q)
    return run_search(service, vectors, query, options, t0, pins)


@api.post("/search", summary="Search with an uploaded sound or picture (multipart form)")
def search_post(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    q: str | None = Form(None, description="Words describing what to find."),
    audio: UploadFile | None = File(None, description="A sound file as the query."),
    image: UploadFile | None = File(None, description="A picture as the query."),
    item_id: str | None = Form(None),
    item_modality: str | None = Form(None),
    target: str = Form("all", description=TARGET_DOC),
    k: int | None = Form(None, description=K_DOC),
    where: str | None = Form(None),
    label: str | None = Form(None),
    per_window: bool = Form(False, description=PER_WINDOW_DOC),
) -> Response:
    t0 = time.perf_counter()
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(415, f"send the query as multipart/form-data (got {ctype or 'no content type'!r})")
    uploads = [(kind, f) for kind, f in (("audio", audio), ("image", image))
               if f is not None and (f.filename or f.size)]
    checked = [(kind, f, check_upload(kind, f.filename, f.content_type)) for kind, f in uploads]
    options = plan(settings, target, k, where, label, per_window)
    vectors, query, pins = stored_and_text_parts(service, item_id, item_modality, q)
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
    return run_search(service, vectors, query, options, t0, pins)


@api.get("/similar/{modality}/{item_id}", summary="Find similar: an indexed item is the query")
def similar(service: ServiceDep, settings: SettingsDep, modality: str, item_id: str,
            target: str = Query("all", description=TARGET_DOC), k: int | None = Query(None, description=K_DOC),
            where: str | None = None, label: str | None = None,
            per_window: bool = Query(False, description=PER_WINDOW_DOC)) -> Response:
    t0 = time.perf_counter()
    modality = check_modality(modality)
    item_id = check_id(item_id, modality)
    options = plan(settings, target, k, where, label, per_window)
    query: dict = {"item": {"modality": modality, "id": item_id}}
    pins = service.pins()
    return run_search(service, [service.item_vector(modality, item_id, pins)], query, options, t0, pins)


@api.get("/items/{modality}/{item_id}", summary="One indexed item's metadata")
def item(service: ServiceDep, modality: str, item_id: str) -> dict:
    modality = check_modality(modality)
    row = service.row(modality, check_id(item_id, modality))
    out = row_json(modality, row)
    out["urls"] = hit_json(Hit(0, 0.0, modality, item_id, str(row.get("path", "")), row.get("start"),
                               row.get("end")), row.get("duration"))["urls"]
    return out


@api.head("/media/{modality}/{item_id}", include_in_schema=False)
@api.get("/media/{modality}/{item_id}", summary="The indexed file (by row id), with HTTP range requests")
def media(request: Request, service: ServiceDep, modality: str, item_id: str) -> Response:
    modality = check_modality(modality)
    row = service.row(modality, check_id(item_id, modality))
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
def thumbnail(request: Request, service: ServiceDep, settings: SettingsDep, item_id: str,
              size: int | None = Query(None, description="Longest side in pixels (16 to the server's maximum)."),
              format: str = Query("auto", pattern="^(auto|jpeg|png)$",  # noqa: A002
                                  description="auto: PNG for pictures with transparency, else JPEG.")) -> Response:
    size = settings.thumb_size if size is None else size
    if not 16 <= size <= settings.thumb_max_size:
        raise ApiError(422, f"size must be between 16 and {settings.thumb_max_size}")
    row = service.row("image", check_id(item_id, "image"))
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
