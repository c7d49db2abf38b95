"""One writer per image at a time: who may write an image's shards right now.

Two writers writing the same sample at once (two flow runs of one city, a task Dask re-runs)
would interleave whole-shard PUTs of possibly different bytes. Before writing, a writer takes
the image's claim and re-checks that the image is not committed; it releases the claim after the
commit.

* Local stores: ``fcntl.flock`` on one of 256 bucket files ``_s2r/busy/<bucket>.lock`` (released
  by the kernel when the process dies).
* Object stores: a lease object ``_s2r/busy/<image_id>.json`` ``{"owner", "expires_at"}``, created
  with :func:`~.conditional.create_if_absent`. A lease held by the same ``owner`` (e.g. the flow
  run: a batch Dask re-runs after its worker was killed) or expired (its writer died) is taken over
  by compare-and-swap; a live lease of another owner is not: the caller waits, or skips the image
  (the other writer is committing it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

from .conditional import create_if_absent, read_versioned, replace_if_version
from .urls import StoreLocation

__all__ = ["DEFAULT_LEASE_S", "image_claim", "lease_holder", "holds_lease"]

DEFAULT_LEASE_S = 120.0  # far longer than one sample's write; a dead writer's images wait this long
_BUSY_BUCKETS = 256


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lease_rel(image_id: str) -> str:
    return f"_s2r/busy/{image_id}.json"


def _lease_bytes(owner: str, lease_s: float) -> bytes:
    return json.dumps({"owner": owner, "expires_at": time.time() + lease_s, "lease_s": lease_s}).encode()


def lease_holder(loc: StoreLocation, image_id: str) -> dict | None:
    """The lease on ``image_id`` (``{"owner", "expires_at"}``) or None (object stores only)."""
    data, _ = read_versioned(loc, _lease_rel(image_id))
    return None if data is None else json.loads(data)


def _try_lease(loc: StoreLocation, image_id: str, owner: str, lease_s: float) -> bool:
    rel = _lease_rel(image_id)
    for _ in range(8):
        if create_if_absent(loc, rel, _lease_bytes(owner, lease_s)):
            return True
        data, version = read_versioned(loc, rel)
        if data is None:
            continue  # released meanwhile: create again
        try:
            held = json.loads(data)
            mine_or_dead = held.get("owner") == owner or float(held.get("expires_at", 0)) < time.time()
        except (ValueError, TypeError, AttributeError):
            mine_or_dead = True  # unreadable lease: nobody can prove they hold it
        if not mine_or_dead:
            return False
        if replace_if_version(loc, rel, _lease_bytes(owner, lease_s), version):
            return True
    return False


def holds_lease(loc: StoreLocation, image_id: str, owner: str) -> bool:
    """True while ``owner``'s lease on ``image_id`` is in place and not about to expire (a quarter
    of it, at most 5 s, left); always True on local stores, whose lock cannot be lost. Writers
    check it right before committing."""
    if loc.is_local:
        return True
    held = lease_holder(loc, image_id)
    if held is None or held.get("owner") != owner:
        return False
    margin_s = min(5.0, 0.25 * float(held.get("lease_s", 20.0)))
    return float(held.get("expires_at", 0)) > time.time() + margin_s


def _release_lease(loc: StoreLocation, image_id: str, owner: str) -> None:
    held = lease_holder(loc, image_id)
    if held is not None and held.get("owner") == owner:
        loc.remove(_lease_rel(image_id))


@contextlib.contextmanager
def image_claim(loc: StoreLocation, image_id: str, owner: str, *, lease_s: float = DEFAULT_LEASE_S) -> Iterator[bool]:
    """Hold the right to write ``image_id``; yields False (nothing held) when another owner's live
    lease holds it (object stores), True otherwise. Local stores block until the lock is free."""
    if loc.is_local:
        bucket = int(hashlib.sha1(image_id.encode()).hexdigest()[:8], 16) % _BUSY_BUCKETS
        with flock(Path(loc.path(f"_s2r/busy/{bucket:03d}.lock"))):
            yield True
        return
    got = _try_lease(loc, image_id, owner, lease_s)
    try:
        yield got
    finally:
        if got:
            _release_lease(loc, image_id, owner)
