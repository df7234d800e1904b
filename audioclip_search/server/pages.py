"""The web page and its static files (bundled, offline) as a router."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .errors import ApiError, one_line

WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "docs.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

pages = APIRouter(include_in_schema=False)


def load_web() -> dict[str, tuple[bytes, str]]:
    """The bundled web files, read once when the app is made."""
    root = resources.files("audioclip_search") / "web"
    return {name: (root.joinpath(name).read_bytes(), ctype) for name, ctype in WEB_FILES.items()
            if root.joinpath(name).is_file()}


def web_file(request: Request, name: str) -> Response:
    web = request.app.state.web
    if name not in web:
        raise ApiError(404, f"no such file: {one_line(name, 80)}")
    data, ctype = web[name]
    return Response(data, media_type=ctype, headers={"Cache-Control": "no-cache"})


@pages.get("/")
async def page(request: Request) -> Response:
    return web_file(request, "index.html")


@pages.get("/docs")
async def docs(request: Request) -> Response:
    return web_file(request, "docs.html")


@pages.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    return web_file(request, name)


@pages.get("/favicon.ico")
async def favicon(request: Request) -> Response:
    return web_file(request, "favicon.svg")


@pages.get("/api")
async def api_root() -> JSONResponse:
    return JSONResponse({"openapi": "/openapi.json", "docs": "/docs", "health": "/api/health"})
