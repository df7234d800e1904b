"""Settings of the web server: where it listens and the limits it enforces."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MB = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """Everything `create_app` needs besides the index. All limits are enforced per request.

    - ``max_upload_bytes``: a request body (an uploaded query file plus form fields) larger than
      this is refused with 413 while it is being read, before the rest is received.
    - ``max_query_seconds`` / ``max_image_pixels``: an uploaded query sound longer than this, or
      picture larger than this, is refused (422) before it is embedded.
    - ``cors_origins``: empty = CORS off (same-origin only); else those origins may call the API
      (``"*"`` allows any).
    - ``allowed_hosts``: ``Host`` header values accepted; ``None`` = the loopback names when bound to
      a loopback address (protects a local server from DNS rebinding), any host otherwise.
    - ``model_threads``: torch's intra-op threads of the threads that run the model, when it is on
      the CPU (``None``: torch's default, every core). A query is a small batch, and a team of threads
      waits for its slowest member: on a busy 2-core machine one thread served text queries at
      concurrency 4 ten times faster than two (``benchmarks/serve_load.py``: 253 vs 23 req/s).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 50 * MB
    max_query_seconds: float = 180.0
    max_image_pixels: int = 50_000_000
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None
    default_k: int = 12
    max_k: int = 200
    max_text_chars: int = 1000
    max_where_chars: int = 2000
    thumb_size: int = 320
    thumb_max_size: int = 1024
    thumb_cache_items: int = 512
    thumb_cache_bytes: int = 64 * MB
    text_batch: int = 32
    model_threads: int | None = 1
    warm_up: bool = True
    title: str = "AudioCLIP Search"

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.max_upload_bytes < 1024:
            raise ValueError("max_upload_bytes must be at least 1024")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError("default_k must be between 1 and max_k")
        if not 16 <= self.thumb_size <= self.thumb_max_size:
            raise ValueError("thumb_size must be between 16 and thumb_max_size")
        if self.text_batch < 1:
            raise ValueError("text_batch must be >= 1")
        if self.model_threads is not None and self.model_threads < 1:
            raise ValueError("model_threads must be >= 1 (or None)")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def trusted_hosts(self) -> list[str]:
        """Host header values to accept (``["*"]`` = any)."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts) or ["*"]
        if self.loopback:
            return sorted({*LOOPBACK_HOSTS, self.host.strip("[]").lower()})
        return ["*"]
