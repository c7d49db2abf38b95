"""Conditional writes: the only coordination primitives a store needs besides whole-object PUTs.

Several processes on several machines write one store with no lock server. Everything they must
agree on goes through two operations on single objects:

* :func:`create_if_absent` — publish an object only if nothing exists at that key (the slot
  manifest's segments, store metadata, write leases). Exactly one of several concurrent creators
  wins; the others get ``False`` and read the winner's object.
* :func:`replace_if_version` — replace an object only if it is still the version read by
  :func:`read_versioned` (compare-and-swap: capacity growth, ``index.parquet`` rewrites, group
  attributes). A writer that lost the race re-reads and retries; no update is ever lost.

Backends:

========  ==========================================================================================
local     ``create``: write a temp file, then ``os.link`` it to the key (fails if the key exists;
          atomic on POSIX file systems and NFS). ``replace``: under ``flock`` on ``_s2r/cas.lock``,
          compare (inode, mtime, size), then rename a temp file over the key.
s3        ``PutObject`` with ``If-None-Match: *`` / ``If-Match: <ETag>`` (AWS S3 since 2024, MinIO,
          moto); a 412 is a lost race, a 409 (concurrent conditional writes) is retried.
memory    fsspec's in-process memory file system (tests): a process-wide lock.
========  ==========================================================================================

Any other protocol raises :class:`ConditionalWriteUnsupportedError` naming these (GCS has the same
primitives, ``ifGenerationMatch``; not wired up or tested here).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .urls import StoreLocation

__all__ = [
    "ConditionalWriteUnsupportedError",
    "create_if_absent",
    "read_versioned",
    "replace_if_version",
    "supports_conditional_writes",
]

SUPPORTED_PROTOCOLS = ("file", "s3", "s3a", "memory")
_CAS_LOCK = "_s2r/cas.lock"
_MEMORY_LOCK = threading.RLock()
_CONFLICT_RETRIES = 8


class ConditionalWriteUnsupportedError(NotImplementedError):
    """The store's protocol offers no create-if-absent / compare-and-swap this module can use."""


def supports_conditional_writes(loc: StoreLocation) -> bool:
    return loc.protocol in SUPPORTED_PROTOCOLS


def _unsupported(loc: StoreLocation) -> ConditionalWriteUnsupportedError:
    return ConditionalWriteUnsupportedError(
        f"{loc.url}: writing a store needs atomic create-if-absent and compare-and-swap PUTs, which s2r "
        f"implements for {', '.join(p + '://' for p in SUPPORTED_PROTOCOLS[1:])} and local paths (also NFS), "
        f"not for {loc.protocol}://; write to one of those (reading works from any fsspec URL)"
    )


# -- local ---------------------------------------------------------------------------------------
def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")


def _write_tmp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _local_create(path: Path, data: bytes) -> bool:
    tmp = _write_tmp(path, data)
    try:
        os.link(tmp, path)  # atomic; EEXIST when another creator won
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _local_version(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _local_read(path: Path) -> tuple[bytes | None, Any]:
    try:
        with open(path, "rb") as fh:
            return fh.read(), _local_version(os.fstat(fh.fileno()))
    except FileNotFoundError:
        return None, None


def _local_replace(loc: StoreLocation, path: Path, data: bytes, version: Any) -> bool:
    lock_path = Path(loc.path(_CAS_LOCK))
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = _local_version(os.stat(path))
        except FileNotFoundError:
            return False
        if current != version:
            return False
        tmp = _write_tmp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- s3 ------------------------------------------------------------------------------------------
def _s3_error_code(e: BaseException) -> str:
    cause = e.__cause__ if e.__cause__ is not None else e
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _s3_put(loc: StoreLocation, rel: str, data: bytes, condition: dict[str, str]) -> bool:
    fs = loc.fs
    bucket, key, _ = fs.split_path(loc.path(rel))
    for attempt in range(_CONFLICT_RETRIES):
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            return True
        except FileExistsError:
            return False
        except (OSError, FileNotFoundError) as e:
            code = _s3_error_code(e)
            if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                return False
            if code in ("ConditionalRequestConflict", "409") and attempt + 1 < _CONFLICT_RETRIES:
                time.sleep(0.05 * (attempt + 1))  # S3: another conditional write to this key is in flight
                continue
            raise
        finally:
            fs.invalidate_cache(loc.path(rel))
    return False


async def _s3_get_async(fs: Any, bucket: str, key: str) -> tuple[bytes, str]:
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    body = resp["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    return data, resp["ETag"]


def _s3_read(loc: StoreLocation, rel: str) -> tuple[bytes | None, Any]:
    from fsspec.asyn import sync

    fs = loc.fs
    bucket, key, _ = fs.split_path(loc.path(rel))
    try:
        return sync(fs.loop, _s3_get_async, fs, bucket, key)
    except FileNotFoundError:
        return None, None


# -- memory (tests) ------------------------------------------------------------------------------
def _memory_read(loc: StoreLocation, rel: str) -> tuple[bytes | None, Any]:
    data = loc.read_bytes(rel)
    return data, None if data is None else hashlib.sha256(data).hexdigest()


# -- public --------------------------------------------------------------------------------------
def create_if_absent(loc: StoreLocation, rel: str, data: bytes) -> bool:
    """Publish ``data`` at ``rel`` unless an object exists there; True if this call created it.
    Readers see the whole object or none of it."""
    if loc.is_local:
        return _local_create(Path(loc.path(rel)), data)
    if loc.protocol in ("s3", "s3a"):
        return _s3_put(loc, rel, data, {"IfNoneMatch": "*"})
    if loc.protocol == "memory":
        with _MEMORY_LOCK:
            if loc.exists(rel):
                return False
            loc.fs.pipe_file(loc.path(rel), data)
            return True
    raise _unsupported(loc)


def read_versioned(loc: StoreLocation, rel: str) -> tuple[bytes | None, Any]:
    """``(content, version)`` read together; ``(None, None)`` if absent. Pass the version to
    :func:`replace_if_version`."""
    if loc.is_local:
        return _local_read(Path(loc.path(rel)))
    if loc.protocol in ("s3", "s3a"):
        return _s3_read(loc, rel)
    if loc.protocol == "memory":
        with _MEMORY_LOCK:
            return _memory_read(loc, rel)
    raise _unsupported(loc)


def replace_if_version(loc: StoreLocation, rel: str, data: bytes, version: Any) -> bool:
    """Write ``data`` at ``rel`` only if the object there is still ``version`` (``None``: only if
    there is none); True if written. False means another writer changed it: read it again."""
    if version is None:
        return create_if_absent(loc, rel, data)
    if loc.is_local:
        return _local_replace(loc, Path(loc.path(rel)), data, version)
    if loc.protocol in ("s3", "s3a"):
        return _s3_put(loc, rel, data, {"IfMatch": version})
    if loc.protocol == "memory":
        with _MEMORY_LOCK:
            if _memory_read(loc, rel)[1] != version:
                return False
            loc.fs.pipe_file(loc.path(rel), data)
            return True
    raise _unsupported(loc)
