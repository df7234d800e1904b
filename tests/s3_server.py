"""A real S3-compatible server (moto's ThreadedMotoServer) on 127.0.0.1 for object-storage tests.

The AWS environment points every client (pyarrow.fs, LanceDB, boto3, child processes) at it, with
static test credentials and the instance-metadata lookup disabled, so nothing leaves loopback.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start the server, set the AWS environment; yields that environment (for subprocesses)."""
    moto_server = pytest.importorskip("moto.server")
    from audioclip_search.fsio import storage

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ALLOW_HTTP": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        storage._filesystem.cache_clear()
        try:
            yield env
        finally:
            storage._filesystem.cache_clear()
            server.stop()


def make_bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)


def upload(bucket: str, files: dict[str, Path | bytes]) -> None:
    """Put each ``key -> local file (or bytes)`` into ``bucket``."""
    import boto3

    client = boto3.client("s3")
    for key, src in files.items():
        body = src if isinstance(src, bytes) else Path(src).read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=body)
