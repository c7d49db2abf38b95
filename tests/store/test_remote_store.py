"""The store on an S3-compatible server (moto on 127.0.0.1), no file locks: writers in several
processes at once, a writer killed between its arrays and its commit, per-image leases, verify,
compact and split assignment on the remote store."""

from __future__ import annotations

import signal
import time
import uuid

import numpy as np
import pytest

from s2r_data.store import DatasetWriter, SampleExistsError, StoreSpec, compact, open_dataset, verify
from s2r_data.store.claims import image_claim, lease_holder
from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose, write_synthetic_dataset
from s2r_data.store.urls import location
from s2r_data.store.writer import SampleBusyError, SlotMismatchError, allocate_slots

from .test_crash_concurrency import _WRITER, _check_content, _run

H = 32


@pytest.fixture(scope="module")
def s3():
    from s2r_data.store.local_s3 import local_s3_server

    with local_s3_server() as server:
        yield server


@pytest.fixture()
def url(s3):
    return s3.url(f"remote-{uuid.uuid4().hex}/dataset.zarr")


def _write(w, image_id, k, **kw):
    p = synthetic_panorama(H, 2 * H, k)
    return w.write_sample(image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask, {"pose": synthetic_pose(image_id, k)}, **kw)


def test_round_trip_verify_compact_and_splits_on_s3(url):
    from s2r_train.splits import assign_splits

    ids = write_synthetic_dataset(url, 4, height=H, n_sequences=2)
    with DatasetWriter(url, height=H, width=2 * H, city="synthetic") as w:
        assert w.has(ids[0]) and not w.has("nope")
        with pytest.raises(SampleExistsError):
            _write(w, ids[0], 0)
    rep = verify(url)
    assert rep.ok and rep.n_samples == 4 and rep.n_checked == 4, rep.summary()
    assert compact(url) == 4
    loc = location(url)
    assert not [n for n in loc.list_dir("index.d") if n.endswith(".parquet")]
    counts = assign_splits(url, [0.5, 0.5, 1], seed=0)
    assert counts["train"] + counts["val"] == 4
    ds = open_dataset(url)
    assert sorted(ds.image_ids) == sorted(ids)
    assert set(ds.index.column("split").to_pylist()) <= {"train", "val"}
    np.testing.assert_array_equal(ds.read(2, "real"), synthetic_panorama(H, 2 * H, int(ds.image_ids[2][-4:])).real)
    assert ds.fast_reader("sim") is not None  # byte-range reads of the shards over S3
    from s2r_data.store.__main__ import main as store_cli

    assert store_cli(["verify", "--no-progress", url]) == 0 and store_cli(["compact", url]) == 0


def test_writers_use_the_slots_the_coordinator_allocated(url):
    spec = StoreSpec(H, 2 * H, "c", 1, 256)
    slots = allocate_slots(url, ["z9", "a1"], spec=spec, owner="flow-run-1")
    with DatasetWriter(url, height=H, width=2 * H, city="c", owner="flow-run-1") as w:
        assert _write(w, "a1", 1, slot=slots["a1"]) == 1
        with pytest.raises(SlotMismatchError, match="slot manifest .* says 0"):
            _write(w, "z9", 0, slot=5)
        with pytest.raises(SlotMismatchError, match="allocated no slot"):
            _write(w, "new", 2, slot=2)
    assert open_dataset(url).index.column("zarr_index").to_pylist() == [1]


@pytest.mark.slow
def test_two_writer_processes_at_once_on_s3(url, s3, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    ids_a = [f"p_{k}" for k in range(0, 10, 2)]
    ids_b = [f"q_{k}" for k in range(1, 10, 2)]
    env = s3.env()
    procs = [_run(script, url, ids, wait=False, env=env) for ids in (ids_a, ids_b + ids_a[:2])]  # overlap too
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    _check_content(url, ids_a + ids_b)
    rep = verify(url)
    assert rep.ok, rep.summary()


@pytest.mark.slow
def test_killed_writer_then_rerun_on_s3(url, s3, tmp_path):
    """SIGKILL after a sample's arrays, before its commit: invisible, verify passes, and a rerun by
    another owner writes it into the same slot once the dead writer's lease has expired."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.replace("city=\"c\", initial_capacity=1", "city=\"c\", initial_capacity=1, lease_s=10"))
    ids = [f"a_{k}" for k in range(4)]
    r = _run(script, url, ids, env={**s3.env(), "CRASH_AT": "2"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    _check_content(url, ids[:2])
    assert verify(url).ok
    assert lease_holder(location(url), "a_2") is not None  # the dead writer's lease
    r = _run(script, url, ids, env=s3.env())
    assert r.returncode == 0, r.stderr
    assert lease_holder(location(url), "a_2") is None
    _check_content(url, ids)
    assert open_dataset(url).index.column("zarr_index").to_pylist() == [0, 1, 2, 3]
    assert verify(url).ok


def test_leases_exclude_other_owners_and_let_the_same_owner_take_over(url):
    write_synthetic_dataset(url, 1, height=H, ids=["seed"])
    loc = location(url)
    with image_claim(loc, "x", "run-A", lease_s=60) as a:
        assert a
        with image_claim(loc, "x", "run-B", lease_s=60) as b:
            assert not b  # a live lease of another owner
        with image_claim(loc, "x", "run-A", lease_s=60) as again:
            assert again  # the same owner (a re-run task of the same flow run)
    assert lease_holder(loc, "x") is None  # released
    with image_claim(loc, "y", "run-A", lease_s=0.5):
        time.sleep(0.8)
        with image_claim(loc, "y", "run-B", lease_s=60) as b:
            assert b  # expired: taken over
            assert lease_holder(loc, "y")["owner"] == "run-B"
    with image_claim(loc, "z", "run-A", lease_s=60):
        with DatasetWriter(url, height=H, width=2 * H, city="synthetic", owner="run-B", busy_wait_s=1.0) as w:
            with pytest.raises(SampleBusyError, match="image z: another writer holds its lease"):
                _write(w, "z", 3)
            assert not w.has("z")


def test_shard_cache_reads_the_same_and_downloads_each_shard_once(url, tmp_path, monkeypatch):
    write_synthetic_dataset(url, 2, height=H, chunk_px=16)
    cache = tmp_path / "cache"
    plain = open_dataset(url)
    cached = open_dataset(url, cache_dir=cache)
    box = (3, 29, 5, 40)
    for i in range(2):
        for array in ("sim", "real", "label"):
            want = plain.read_box(i, array, 0, [0, 1], [0, 1, 2], box)
            np.testing.assert_array_equal(cached.read_box(i, array, 0, [0, 1], [0, 1, 2], box), want)
    assert len(list(cache.glob("*.shard"))) == 6  # one download per sample and array
    expected = plain.read_box(1, "real", 0, [0, 1], [0, 1, 2], box)
    fs = location(url).fs
    calls = []
    monkeypatch.setattr(type(fs), "cat_file", lambda self, *a, **kw: calls.append(a) or b"")
    monkeypatch.setenv("S2R_SHARD_CACHE_DIR", str(cache))
    again = open_dataset(url)  # another reader (another process would be the same) finds the copies
    np.testing.assert_array_equal(again.read_box(1, "real", 0, [0, 1], [0, 1, 2], box), expected)
    assert calls == []


def test_concurrent_compactions_and_split_assignment_lose_no_row(url):
    """Compactions and a split assignment at once (two flow runs finishing together): each
    rewrite of index.parquet is a compare-and-swap, so none undoes another's merge."""
    import pyarrow.parquet as pq

    from s2r_train.splits import assign_splits

    from .test_conditional import _race

    ids = write_synthetic_dataset(url, 6, height=H, n_sequences=3)
    jobs = [lambda: compact(url), lambda: compact(url), lambda: assign_splits(url, [0.5, 0.5, 0], seed=0)]
    _race(len(jobs), lambda i: jobs[i]())
    loc = location(url)
    with loc.fs.open(loc.path("index.parquet"), "rb") as f:
        rows = pq.read_table(f).column("image_id").to_pylist()
    assert sorted(rows) == sorted(ids)
    assert not [n for n in loc.list_dir("index.d") if n.endswith(".parquet")]
    assert verify(url).ok
