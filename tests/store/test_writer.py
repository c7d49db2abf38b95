"""DatasetWriter / open_dataset round trips, validation, growth, index schema, fast shard reads."""

from __future__ import annotations

import datetime as dt
import json
import numpy as np
import pyarrow.parquet as pq
import pytest

from s2r_data.citymodel import CLASSES
from s2r_data.store import (
    INDEX_SCHEMA,
    DatasetWriter,
    IndexRowError,
    SampleExistsError,
    SampleValidationError,
    StoreMismatchError,
    compact,
    open_dataset,
    verify,
)
from s2r_data.store.shardio import ShardedArrayReader
from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose, write_synthetic_dataset

H, W = 32, 64


def _write(w, image_id, k, **row):
    p = synthetic_panorama(H, W, k)
    return w.write_sample(image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                          {"pose": synthetic_pose(image_id, k), **row})


def test_round_trip_and_index(tmp_path):
    url = tmp_path / "ds"
    with DatasetWriter(url, height=H, width=W, city="testcity", initial_capacity=1, chunk_px=16) as w:
        for k in range(3):
            _write(w, f"id{k}", k, sequence_id="seqA", captured_at=dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc))
        assert w.has("id1") and not w.has("id9")
        assert w.existing_ids() == {"id0", "id1", "id2"}
    ds = open_dataset(url)
    assert len(ds) == 3 and ds.image_ids == ["id0", "id1", "id2"]
    for i in range(3):
        p = synthetic_panorama(H, W, i)
        np.testing.assert_array_equal(ds.read(i, "sim"), p.sim)
        np.testing.assert_array_equal(ds.read(i, "label"), p.label)
        np.testing.assert_array_equal(ds.read(i, "real"), p.real)
        np.testing.assert_array_equal(ds.read(i, "mask"), np.concatenate([p.sky_mask, p.valid_mask]).astype(np.uint8))
    # region + channel-list reads
    p = synthetic_panorama(H, W, 1)
    np.testing.assert_array_equal(ds.read(1, "sim", [6, 0], slice(3, 9), slice(50, 64)), p.sim[[6, 0], 3:9, 50:64])
    assert ds.read(1, "sim", level=1).shape == (7, H // 2, W // 2)
    # capacity grew geometrically from 1
    assert ds.group["sim"].shape[0] >= 3
    # the index: explicit schema, readable with plain pyarrow, pose columns filled
    compact(url)
    t = pq.read_table(url / "index.parquet")
    assert t.schema.equals(INDEX_SCHEMA, check_metadata=False)
    assert t.schema.metadata[b"schema_version"] == b"1"
    row = ds.row(2)
    R = np.asarray(row["R_world_to_cam_opensfm"]).reshape(3, 3)
    np.testing.assert_allclose(R, synthetic_pose("id2", 2).R_world_to_cam_opensfm)
    assert row["zarr_index"] == 2 and row["city"] == "testcity" and row["split"] is None
    assert row["captured_at"] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    assert row["heading_deg"] == pytest.approx(74.0)
    attrs = ds.attrs
    assert [c["name"] for c in attrs["classes"]] == [c.name for c in CLASSES]
    assert [c["name"] for c in attrs["arrays"]["sim"]["channels"]][6] == "depth_m"
    assert verify(url).ok


def test_validation_names_the_bad_input(tmp_path):
    p = synthetic_panorama(H, W, 0)
    pose = synthetic_pose("a", 0)
    with DatasetWriter(tmp_path / "ds", height=H, width=W, city="c") as w:
        def bad(match, **over):
            args = dict(sim=p.sim, label=p.label, real=p.real, sky_mask=p.sky_mask, valid_mask=p.valid_mask)
            row = over.pop("row", {"pose": pose})
            args.update(over)
            with pytest.raises((SampleValidationError, IndexRowError), match=match):
                w.write_sample("a", row=row, **args)

        bad("sim has shape", sim=p.sim[:6])
        nan = p.sim.copy()
        nan[4, 3, 3] = np.nan
        bad(r"non-finite values in channels \[4\]", sim=nan)
        bad("overflows float16", sim=np.where(p.sky_mask, 0, 1e6).astype(np.float32) * np.ones((7, 1, 1), np.float32))
        bad("real must be uint8", real=p.real.astype(np.float32))
        lab = p.label.copy()
        lab[0, -1, -1] = 42
        bad("label: values", label=lab)
        depth = p.sim.copy()
        depth[6][p.sky_mask[0]] = 5.0
        bad("depth ≠ 0 at .* sky pixels", sim=depth)
        bad("sky channel disagrees", sky_mask=~p.sky_mask)
        bad("unknown index columns", row={"pose": pose, "colour": "red"})
        bad("needs 'pose'", row={})
        assert w.existing_ids() == set()  # nothing was written
    assert len(open_dataset(tmp_path / "ds")) == 0


def test_exists_and_mismatch(tmp_path):
    url = tmp_path / "ds"
    with DatasetWriter(url, height=H, width=W, city="c") as w:
        slot = _write(w, "x", 0)
        with pytest.raises(SampleExistsError):
            _write(w, "x", 0)
        p = synthetic_panorama(H, W, 0)
        assert w.write_sample("x", p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                              {"pose": synthetic_pose("x", 0)}, exist_ok=True) == slot
    with pytest.raises(StoreMismatchError, match="height"):
        DatasetWriter(url, height=2 * H, width=2 * W, city="c")
    with pytest.raises(StoreMismatchError, match="city"):
        DatasetWriter(url, height=H, width=W, city="other")
    with pytest.raises(IndexRowError, match="file name"):
        with DatasetWriter(url, height=H, width=W, city="c") as w:
            _write(w, "../evil", 1)


def test_compact_is_idempotent_and_readers_see_fragments(tmp_path):
    url = tmp_path / "ds"
    write_synthetic_dataset(url, 3, height=H)
    before = open_dataset(url).index
    assert len(list((url / "index.d").iterdir())) == 3
    assert compact(url) == 3 and compact(url) == 3
    assert not list((url / "index.d").iterdir())
    after = open_dataset(url).index
    assert before.column("image_id").to_pylist() == after.column("image_id").to_pylist()
    write_synthetic_dataset(url, 1, height=H, ids=["late"])  # fragment beside a compacted index
    assert open_dataset(url).image_ids[-1] == "late"


def test_fast_shard_reader_matches_zarr(tmp_path):
    url = tmp_path / "ds"
    write_synthetic_dataset(url, 2, height=64, chunk_px=16)
    ds = open_dataset(url)
    rng = np.random.default_rng(0)
    for name in ("sim", "label", "real", "mask", "sim_l1", "real_l1"):
        fast = ShardedArrayReader(str(url / "data.zarr" / name))
        assert fast.supported, fast.reason
        arr = ds.group[name]
        cy, cx = fast.chunk_hw
        nr, nc = fast.grid_hw
        for _ in range(5):
            rows = sorted(rng.choice(nr, size=rng.integers(1, nr + 1), replace=False).tolist())
            c0 = int(rng.integers(0, nc))
            cols = [(c0 + j) % nc for j in range(int(rng.integers(1, nc + 1)))]  # wraps the seam
            got = fast.read_chunks(1, rows, cols)
            want = np.concatenate([np.concatenate([arr[1, :, r * cy:(r + 1) * cy, c * cx:(c + 1) * cx] for c in cols], axis=2) for r in rows], axis=1)
            np.testing.assert_array_equal(got, want)
            blocks = fast.read_blocks(1, rows, cols)
            np.testing.assert_array_equal(blocks.transpose(2, 0, 3, 1, 4).reshape(got.shape), got)
        # an unwritten sample reads as fill value (no shard file)
        assert not fast.read_chunks(ds.group[name].shape[0] - 1 + 10, [0], [0]).any()


def test_read_box_cuts_and_reuses_repeated_columns(tmp_path):
    """read_box = read_chunks cut to a box, for any channels, also when a chunk column repeats
    (the loader's full-width reads append column 0 to wrap the seam: copied, not decoded again)."""
    url = tmp_path / "ds"
    write_synthetic_dataset(url, 2, height=64, chunk_px=16)
    rng = np.random.default_rng(3)
    for name in ("sim", "real", "mask"):
        fast = ShardedArrayReader(str(url / "data.zarr" / name))
        C, (cy, cx), (nr, nc) = fast.shape[1], fast.chunk_hw, fast.grid_hw
        for k in range(12):
            rows = list(range(int(rng.integers(0, nr - 1)), nr))
            cols = list(range(nc)) + [0] if k % 2 else [(5 + j) % nc for j in range(3)]
            region = fast.read_chunks(1, rows, cols)
            y0, x0 = int(rng.integers(0, cy)), (0 if k % 4 == 1 else int(rng.integers(0, cx)))
            y1 = int(rng.integers(y0 + 1, region.shape[1] + 1))
            x1 = region.shape[2] - int(rng.integers(0, 3)) if k % 2 else int(rng.integers(x0 + 1, region.shape[2] + 1))
            box = (y0, y1, x0, x1)
            np.testing.assert_array_equal(fast.read_box(1, rows, cols, box), region[:, y0:y1, x0:x1])
            ch = [C - 1] if k % 3 else [0, C - 1]
            np.testing.assert_array_equal(fast.read_box(1, rows, cols, box, channels=ch), region[ch, y0:y1, x0:x1])
        decoded = []
        real_decode = fast._decode_chunk
        fast._decode_chunk = lambda raw, dst: (decoded.append(1), real_decode(raw, dst))
        fast.read_box(1, [0], list(range(nc)), (0, cy, 0, nc * cx))
        n_plain = len(decoded)
        full = fast.read_box(1, [0], list(range(nc)) + [0], (0, cy, 0, nc * cx + 1))
        del fast._decode_chunk
        assert len(decoded) == 2 * n_plain  # the repeated column 0 was copied, not decoded again
        np.testing.assert_array_equal(full[:, :, -1], full[:, :, 0])
        with pytest.raises(IndexError, match="out of range"):
            fast.read_box(1, [0], [0], (0, 4, 0, 4), channels=[C])


def test_cli_info_and_verify(tmp_path, capsys):
    from s2r_data.store.__main__ import main

    url = tmp_path / "ds"
    write_synthetic_dataset(url, 2, height=H)
    assert main(["info", str(url)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 2
    assert info["alignment"]["scored"] == 0 and info["alignment"]["status"] == {"not_aligned": 2}  # never aligned
    assert main(["verify", "--no-progress", str(url)]) == 0
    assert "0 problems" in capsys.readouterr().out
    assert main(["compact", str(url)]) == 0

    (url / "index.parquet").write_bytes(b"PAR1 torn")  # a damaged index: a message naming the store and verify, no traceback
    capsys.readouterr()
    assert main(["info", str(url)]) == 2
    err = capsys.readouterr().err
    assert str(url) in err and "cannot read the store" in err and "s2r_data.store verify" in err
    assert main(["info", str(tmp_path / "missing")]) == 2


def test_reads_through_fsspec_urls(tmp_path):
    """A finished store copied to another filesystem (here fsspec's memory://) reads the same,
    through zarr and through the direct shard reader used for crops."""
    import fsspec

    url = tmp_path / "ds"
    write_synthetic_dataset(url, 2, height=H)
    fs = fsspec.filesystem("memory")
    fs.put(str(url), "/s2r-test-ds", recursive=True)
    try:
        remote, local = open_dataset("memory://s2r-test-ds"), open_dataset(url)
        assert remote.image_ids == local.image_ids
        np.testing.assert_array_equal(remote.read(1, "real"), local.read(1, "real"))
        got = remote.read_chunks(1, "sim", 1, [0], [0])
        np.testing.assert_array_equal(got, local.read_chunks(1, "sim", 1, [0], [0]))
        assert remote.fast_reader("sim") is not None
    finally:
        fs.rm("/s2r-test-ds", recursive=True)


def test_a_store_with_the_legacy_slot_log_keeps_its_slots(tmp_path):
    """Stores written before the slot manifest allocated under a lock into ``_s2r/slots.log``; the
    first allocation imports it (and the committed rows) as manifest segment 0: committed samples
    and allocated-but-uncommitted ids keep their slots, and a torn last line (a crash while
    appending) is never read as an allocation (it could name a slot another image owns)."""
    import shutil

    url = tmp_path / "ds"
    with DatasetWriter(url, height=H, width=W, city="c") as w:
        _write(w, "a", 0)
        _write(w, "b", 1)
    shutil.rmtree(url / "_s2r" / "slots")  # as the earlier code left it: a log, no manifest
    (url / "_s2r" / "slots.log").write_bytes(b"a 0 ;\nb 1 ;\nx 2 ;\nc 0")  # x: crashed before its commit
    assert verify(url).ok
    with DatasetWriter(url, height=H, width=W, city="c") as w:
        assert _write(w, "c", 2) == 3  # after x's slot, not slot 0 from the torn line
        assert _write(w, "x", 3) == 2  # the crashed id reuses its slot
    segments = sorted(p.name for p in (url / "_s2r" / "slots").iterdir())
    assert segments == ["00000000.json", "00000001.json"]
    ds = open_dataset(url)
    assert dict(zip(ds.image_ids, ds.index.column("zarr_index").to_pylist())) == {"a": 0, "b": 1, "x": 2, "c": 3}
    assert verify(url).ok


@pytest.mark.parametrize("fault", ["dropped", "corrupted"])
def test_write_time_verification_catches_a_bad_write(tmp_path, monkeypatch, fault):
    """The writer reads every sample back before committing it: a storage fault (a shard write
    that silently went missing, or bytes changed on the way) leaves the sample uncommitted with an
    error naming the array, and a rerun writes it properly."""
    import zarr.storage

    from s2r_data.store import SampleWriteError

    url = tmp_path / "ds"
    real_set = zarr.storage.LocalStore.set

    async def faulty_set(self, key, value, *a, **kw):
        if "real/c/1/" in (self.root / key).as_posix():
            if fault == "dropped":
                return None
            raw = bytearray(value.to_bytes())
            raw[len(raw) // 3] ^= 0xFF
            value = type(value).from_bytes(bytes(raw))
        return await real_set(self, key, value, *a, **kw)

    with DatasetWriter(url, height=H, width=W, city="c") as w:
        _write(w, "ok", 0)
        with monkeypatch.context() as m:
            m.setattr(zarr.storage.LocalStore, "set", faulty_set)
            with pytest.raises(SampleWriteError, match=r"image bad: real at zarr_index 1 .* not committed"):
                _write(w, "bad", 1)
        assert not w.has("bad")
        assert verify(url).ok  # nothing damaged was committed
        assert _write(w, "bad", 1) == 1  # the rerun reuses the slot
    ds = open_dataset(url)
    assert ds.image_ids == ["ok", "bad"]
    np.testing.assert_array_equal(ds.read(1, "real"), synthetic_panorama(H, W, 1).real)


def test_compact_leaves_index_parquet_complete(tmp_path, monkeypatch):
    """After compact, index.parquet alone lists every committed sample (plain readers read only
    it), even when a writer commits while the compaction runs; the group attributes hold the count."""
    import json

    import s2r_data.store.index as index_mod

    url = tmp_path / "ds"
    write_synthetic_dataset(url, 3, height=H)
    attrs = json.loads((url / "data.zarr" / "zarr.json").read_text())["attributes"]["s2r_dataset"]
    assert attrs["committed_samples"] == 0 and "slot" in attrs["sample_axis"]
    write_synthetic_dataset(url, 1, height=H, ids=["late"])
    held_back = tmp_path / "late.parquet"
    (url / "index.d" / "late.parquet").rename(held_back)  # its arrays are written, its commit not yet
    real_remove = index_mod.StoreLocation.remove

    def remove_then_commit(self, rel):  # another process commits "late" during the compaction
        real_remove(self, rel)
        if held_back.exists():
            held_back.rename(url / "index.d" / "late.parquet")  # the writer's commit: an atomic rename

    monkeypatch.setattr(index_mod.StoreLocation, "remove", remove_then_commit)
    assert compact(url) == 4
    assert sorted(pq.read_table(url / "index.parquet").column("image_id").to_pylist()) == ["late", "s0_0000", "s0_0001", "s0_0002"]
    assert not [n for n in (url / "index.d").iterdir() if not n.name.startswith(".")]
    attrs = json.loads((url / "data.zarr" / "zarr.json").read_text())["attributes"]["s2r_dataset"]
    assert attrs["committed_samples"] == 4
