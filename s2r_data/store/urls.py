"""Where a dataset lives: a local directory or any fsspec URL (``s3://…``, ``memory://…``).

Directory layout under the URL::

    data.zarr/            Zarr v3 group (arrays sim, label, real, mask and pyramid levels *_l<k>)
    index.parquet         compacted index (s2r_data.store.index)
    index.d/<id>.parquet  per-sample index fragments = commit markers
    _s2r/lock             fcntl lock file (local stores only)
    _s2r/slots.log        append-only "image_id zarr_index ;" slot allocation log
    _s2r/busy/*.lock      per-image write locks (256 hash buckets)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes

__all__ = ["StoreLocation", "location"]

ZARR_DIR = "data.zarr"


@dataclass(frozen=True)
class StoreLocation:
    url: str
    root: str  # local absolute path, or the fsspec path inside ``fs``
    protocol: str  # "file" for local

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def fs(self):
        if self.is_local:
            return None
        import fsspec

        return fsspec.filesystem(self.protocol)

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel)) if self.is_local else self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            if self.is_local:
                return Path(self.path(rel)).read_bytes()
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None

    def write_bytes_atomic(self, rel: str, data: bytes) -> None:
        if self.is_local:
            atomic_write_bytes(self.path(rel), data)
        else:  # object stores publish a PUT atomically
            self.fs.pipe_file(self.path(rel), data)

    def list_dir(self, rel: str) -> list[str]:
        try:
            if self.is_local:
                return os.listdir(self.path(rel))
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel), detail=False)]
        except FileNotFoundError:
            return []

    def remove(self, rel: str) -> None:
        try:
            if self.is_local:
                os.unlink(self.path(rel))
            else:
                self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def zarr_store(self, *, read_only: bool):
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.path(ZARR_DIR), read_only=read_only)
        return FsspecStore.from_url(f"{self.url.rstrip('/')}/{ZARR_DIR}", read_only=read_only)

    def array_store(self, name: str, *, read_only: bool):
        """A zarr store rooted at array ``name``'s own folder (creating an array through it writes
        no implicit parent group metadata: see :mod:`s2r_data.store.create`)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.path(f"{ZARR_DIR}/{name}"), read_only=read_only)
        return FsspecStore.from_url(f"{self.url.rstrip('/')}/{ZARR_DIR}/{name}", read_only=read_only)

    def array_url(self, name: str) -> str:
        return self.path(f"{ZARR_DIR}/{name}")


def location(url: str | os.PathLike) -> StoreLocation:
    s = os.fspath(url)
    if "://" not in s or s.startswith("file://"):
        p = s[len("file://") :] if s.startswith("file://") else s
        return StoreLocation(url=s, root=str(Path(p).expanduser().resolve()), protocol="file")
    import fsspec.core

    protocol, path = fsspec.core.split_protocol(s)
    return StoreLocation(url=s.rstrip("/"), root=path.rstrip("/"), protocol=protocol or "file")
