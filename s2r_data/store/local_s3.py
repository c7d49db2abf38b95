"""An S3-compatible server on 127.0.0.1 for tests, benchmarks and trying a remote store offline.

Uses moto's standalone server (``moto[server]``, a test dependency). Deployments use a real
object store (AWS S3, or MinIO: docs/deployments.md); nothing else in s2r imports this module.

    with local_s3_server() as s3:          # sets AWS_* and AWS_ENDPOINT_URL_S3 in os.environ
        url = s3.url("paris/dataset.zarr")  # "s3://s2r/paris/dataset.zarr"
        subprocess.run(..., env=s3.env())   # children reach it the same way
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterator

__all__ = ["LocalS3", "local_s3_server"]


@dataclass(frozen=True)
class LocalS3:
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key.strip('/')}"

    def env(self) -> dict[str, str]:
        """The variables botocore/s3fs read (``AWS_ENDPOINT_URL_S3``: botocore ≥ 1.31)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forget_s3_clients() -> None:
    """fsspec caches filesystem instances (with their endpoint and credentials): close their
    connections, then drop them. Dropped unclosed, each one's aiohttp session would be collected
    unclosed and asyncio would log "Unclosed client session" as an ERROR, once per thread that used
    a store: fsspec caches an instance per thread, and zarr's are asynchronous ones (connected in
    zarr's event loop, without s3fs's close-at-collection hook)."""
    try:
        import s3fs
        from fsspec.asyn import sync
        from zarr.core.sync import sync as zarr_sync
    except ImportError:  # pragma: no cover - s3fs is what makes s3:// URLs work at all
        return
    for fs in list(s3fs.S3FileSystem._cache.values()):  # fsspec's instance cache (what clear_instance_cache empties)
        client = getattr(fs, "_s3creator", None)  # set once the instance has connected
        if client is None:
            continue
        try:
            if fs.asynchronous:
                zarr_sync(client.__aexit__(None, None, None), timeout=10)
            else:
                sync(fs.loop, client.__aexit__, None, None, None, timeout=10)
        except Exception:  # noqa: BLE001 - closing is best effort (the server may be gone)
            pass
    s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def local_s3_server(bucket: str = "s2r", *, secret_access_key: str = "s2r-local-secret") -> Iterator[LocalS3]:
    """Start moto's S3 server on a free port, create ``bucket``, point this process's AWS
    environment at it (restored afterwards) and yield where it is."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = LocalS3(f"http://127.0.0.1:{port}", bucket, "s2r-local-key", secret_access_key)
    saved = {k: os.environ.get(k) for k in s3.env()}
    os.environ.update(s3.env())
    _forget_s3_clients()
    try:
        import fsspec

        try:
            fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
        except FileExistsError:  # moto keeps one in-memory backend per process, shared by its servers
            pass
        yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_s3_clients()
        server.stop()
