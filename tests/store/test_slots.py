"""The slot manifest: concurrent allocators agree on one slot per image and never share a slot;
slots are positions in the segment order (any later reader computes the same); capacity growth
by compare-and-swap never shrinks."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.store import StoreSpec
from s2r_data.store.slots import SlotManifest, SlotManifestError, ensure_capacity, read_slot_manifest
from s2r_data.store.urls import location
from s2r_data.store.writer import allocate_slots

from .test_conditional import _race


@pytest.fixture(scope="module")
def s3():
    from s2r_data.store.local_s3 import local_s3_server

    with local_s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds")
    return request.getfixturevalue("s3").url(f"slots-{uuid.uuid4().hex}")


def _in_threads(fns) -> list:
    return _race(len(fns), lambda i: fns[i]())


def test_concurrent_allocators_agree(url):
    loc = location(url)
    sets = [[f"img{k}" for k in range(a, a + 6)] for a in (0, 0, 3, 10)]  # two identical, overlaps, disjoint
    results = _in_threads([lambda ids=ids: SlotManifest(loc).allocate(ids, owner="t") for ids in sets])
    union = sorted({i for ids in sets for i in ids})
    fresh = read_slot_manifest(loc)
    assert sorted(fresh.slots) == union
    assert sorted(fresh.slots.values()) == list(range(len(union)))  # no slot shared, no hole
    for ids, got in zip(sets, results):
        assert got == {i: fresh.slots[i] for i in ids}  # every allocator saw the slots everyone sees


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=8), min_size=1, max_size=6))
def test_slot_is_the_position_of_first_appearance(batches):
    loc = location(f"memory://slots-{uuid.uuid4().hex}")
    order: list[str] = []
    for batch in batches:
        ids = [f"i{k}" for k in batch]
        got = SlotManifest(loc).allocate(ids)
        for i in ids:
            if i not in order:
                order.append(i)
        assert got == {i: order.index(i) for i in ids}
    assert read_slot_manifest(loc).slots == {i: k for k, i in enumerate(order)}


def test_allocate_slots_creates_and_sizes_the_store_and_is_idempotent(url):
    spec = StoreSpec(16, 32, "c", 1, 8)
    first = allocate_slots(url, ["b", "a", "c"], spec=spec, owner="run-1", initial_capacity=1)
    assert first == {"b": 0, "a": 1, "c": 2}  # the given order
    again = _in_threads([lambda: allocate_slots(url, ["a", "d"], spec=spec, owner="run-2"),
                         lambda: allocate_slots(url, ["d", "e"], spec=spec, owner="run-3")])
    assert again[0]["a"] == 1 and again[0]["d"] == again[1]["d"] and {again[0]["d"], again[1]["e"]} == {3, 4}
    loc = location(url)
    caps = {a.name: json.loads(loc.read_bytes(f"data.zarr/{a.name}/zarr.json"))["shape"][0] for a in spec.arrays()}
    assert min(caps.values()) >= 5
    segments = read_slot_manifest(loc)
    assert segments.n_segments <= 3 and segments.end == 5


def test_concurrent_growth_never_shrinks(url):
    spec = StoreSpec(16, 32, "c", 0, 8)
    allocate_slots(url, [], spec=spec, initial_capacity=1)
    loc = location(url)
    names = [a.name for a in spec.arrays()]
    needs = [3, 17, 9, 40, 5]
    got = _in_threads([lambda n=n: ensure_capacity(loc, names, n) for n in needs])
    assert all(g >= n for g, n in zip(got, needs))
    final = ensure_capacity(loc, names, 1)
    assert final >= max(needs)


def test_a_missing_segment_is_reported_by_name(tmp_path):
    loc = location(tmp_path / "ds")
    m = SlotManifest(loc)
    m.allocate(["a"])
    m.allocate(["b"])
    m.allocate(["c"])
    (tmp_path / "ds" / "_s2r" / "slots" / "00000001.json").unlink()
    with pytest.raises(SlotManifestError, match="segment 00000001 is missing"):
        read_slot_manifest(loc)
