"""Pure-ASGI guards in front of the app: Host check, path sanity, body size limit, security headers.

They are plain ASGI middleware (no dependence on a particular FastAPI/Starlette release):

- :class:`HostGuard`: only the configured ``Host`` names are served (a server bound to loopback
  answers ``localhost``/``127.0.0.1``/``::1`` only, which defeats DNS-rebinding pages).
- :class:`PathGuard`: a request path with a ``..`` segment, a backslash, a NUL, an empty segment
  or an encoded slash/dot-dot (even double-encoded) is refused with 400 before routing.
- :class:`BodyLimit`: a body larger than the limit is refused with 413: at once when
  ``Content-Length`` says so, otherwise as soon as the bytes received pass the limit.
- :class:`SecurityHeaders`: ``nosniff``, no referrer, no framing, and a same-origin CSP on pages.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

_BAD_PATH = re.compile(r"(^|/)\.\.?(/|$)|\\|\x00|//")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit (FastAPI re-raises HTTPExceptions
    raised while it parses a body, so this reaches the JSON error handler as a 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body too large: the limit is {limit / 1024 / 1024:.4g} MiB")


async def _send_error(send: Send, scope: Scope, receive: Receive, status: int, message: str) -> None:
    response = error_response(status, message, headers={"Connection": "close"} if status == 413 else None)
    await response(scope, receive, send)


def host_of(header: str) -> str:
    """The host part of a Host header: ``[::1]:8000`` -> ``::1``, ``Example.com:80`` -> ``example.com``."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.any = "*" in allowed
        self.allowed = {h.strip("[]").lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.any:
            host = host_of(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                await _send_error(send, scope, receive, 400, f"Host {host!r} is not served here")
                return
        await self.app(scope, receive, send)


def path_is_safe(path: str) -> bool:
    """False for traversal-looking paths, also after one or two rounds of %-decoding."""
    candidates = {path}
    decoded = path
    for _ in range(2):
        decoded = unquote(decoded)
        candidates.add(decoded)
    return not any(_BAD_PATH.search(p) for p in candidates)


class PathGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or b""
            raw_text = raw.decode("latin-1").split("?", 1)[0] if raw else ""
            if not (path_is_safe(scope.get("path", "")) and path_is_safe(raw_text)):
                await _send_error(send, scope, receive, 400, "path not allowed")
                return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _send_error(send, scope, receive, 400, "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await _send_error(send, scope, receive, 413, BodyTooLarge(self.max_bytes).detail)
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised outside FastAPI's body parsing (e.g. a raw stream read)
            if started:
                raise
            await _send_error(send, scope, receive, 413, exc.detail)


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope.get("path", "").startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", CSP)
                if is_api:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
