"""Conditional writes on every backend the store supports (local, S3 via a local S3 server,
fsspec memory): exactly one of many concurrent creators wins, compare-and-swap never loses an
update, unsupported protocols are refused by name."""

from __future__ import annotations

import threading
import uuid

import pytest

from s2r_data.store.conditional import (
    ConditionalWriteUnsupportedError,
    create_if_absent,
    read_versioned,
    replace_if_version,
)
from s2r_data.store.urls import location


@pytest.fixture(scope="module")
def s3():
    from s2r_data.store.local_s3 import local_s3_server

    with local_s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3", "memory"])
def loc(request, tmp_path):
    if request.param == "local":
        return location(tmp_path / "store")
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        return location(s3.url(f"cond-{uuid.uuid4().hex}"))
    return location(f"memory://cond-{uuid.uuid4().hex}")


def _race(n: int, fn) -> list:
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_exactly_one_concurrent_creator_wins(loc):
    won = _race(6, lambda i: create_if_absent(loc, "_s2r/x/seg.json", f"writer {i}".encode()))
    assert won.count(True) == 1
    data, version = read_versioned(loc, "_s2r/x/seg.json")
    assert data == f"writer {won.index(True)}".encode() and version is not None
    assert not create_if_absent(loc, "_s2r/x/seg.json", b"late")
    assert read_versioned(loc, "_s2r/x/absent") == (None, None)


def test_compare_and_swap_loses_no_update(loc):
    assert create_if_absent(loc, "counter", b"0")

    def add_five(_):
        for _ in range(5):
            while True:
                data, version = read_versioned(loc, "counter")
                if replace_if_version(loc, "counter", str(int(data) + 1).encode(), version):
                    break

    _race(4, add_five)
    assert read_versioned(loc, "counter")[0] == b"20"
    _, stale = read_versioned(loc, "counter")
    assert replace_if_version(loc, "counter", b"21", stale)
    assert not replace_if_version(loc, "counter", b"99", stale)  # changed since it was read
    assert read_versioned(loc, "counter")[0] == b"21"


def test_unsupported_protocol_is_refused_naming_the_supported_ones():
    loc = location("ftp://host/path/ds.zarr")
    with pytest.raises(ConditionalWriteUnsupportedError, match=r"ftp://.*s3://"):
        create_if_absent(loc, "x", b"1")
