"""Where a dataset lives: a local directory or any fsspec URL (``s3://…``, ``memory://…``).

Directory layout under the URL::

    data.zarr/            Zarr v3 group (arrays sim, label, real, mask and pyramid levels *_l<k>)
    index.parquet         compacted index (s2r_data.store.index)
    index.d/<id>.parquet  per-sample index fragments = commit markers
    _s2r/slots/<n>.json   slot manifest: append-only segments, each created if absent (s2r_data.store.slots)
    _s2r/lock             fcntl lock file (local stores only)
    _s2r/cas.lock         serialises local compare-and-swap writes (s2r_data.store.conditional)
    _s2r/busy/*.lock      per-image write locks (local: 256 hash buckets; object stores: leases <id>.json)
    _s2r/slots.log        legacy slot log of stores written before the manifest (imported once)

Remote URLs use fsspec with its listing cache off: several processes add files under one prefix,
and a cached listing would hide them. Credentials and endpoints come from the environment
(``AWS_*``, ``AWS_ENDPOINT_URL_S3``, ``FSSPEC_S3_*``) or ``fsspec.config.conf``, never from the URL.
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

        return fsspec.filesystem(self.protocol, use_listings_cache=False)

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

    def stamp(self, rel: str) -> tuple | None:
        """A value that changes whenever the object at ``rel`` is replaced (None: absent): local
        (inode, mtime, size); remote the ETag (or modification time and size)."""
        try:
            if self.is_local:
                st = os.stat(self.path(rel))
                return (st.st_ino, st.st_mtime_ns, st.st_size)
            info = self.fs.info(self.path(rel))
        except FileNotFoundError:
            return None
        etag = info.get("ETag") or info.get("etag")
        return (etag,) if etag else (str(info.get("LastModified") or info.get("mtime") or info.get("created")), info.get("size"))

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
