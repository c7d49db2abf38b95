"""verify() finds injected corruption and names the image."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from s2r_data.store import compact, open_dataset, verify
from s2r_data.store.synthetic import write_synthetic_dataset


def _fresh(tmp_path, name):
    url = tmp_path / name
    ids = write_synthetic_dataset(url, 3, height=32, chunk_px=16)
    return url, ids


def _cli_verify(url) -> int:
    return subprocess.run([sys.executable, "-m", "s2r_data.store", "verify", "--no-progress", str(url)],
                          capture_output=True, text=True, timeout=60).returncode


def test_clean_store_verifies(tmp_path):
    url, _ = _fresh(tmp_path, "ok")
    rep = verify(url)
    assert rep.ok and rep.n_samples == 3, rep.summary()


def test_corruptions_are_found_by_image_id(tmp_path):
    url, ids = _fresh(tmp_path, "bad")
    g = zarr.open_group(str(url / "data.zarr"), mode="r+")
    # 1. garbage bytes in sample 1's sim shard
    shard = url / "data.zarr" / "sim" / "c" / "1" / "0" / "0" / "0"
    shard.write_bytes(b"\x00garbage" * 100)
    # 2. a NaN in sample 2's depth
    sim = g["sim"][2]
    sim[6, 5, 5] = np.nan
    g["sim"][2] = sim
    # 3. sample 0's label no longer matches its sky mask at level 1
    lab = g["label_l1"][0]
    lab[0] = np.where(lab[0] == 0, 5, lab[0])
    g["label_l1"][0] = lab
    rep = verify(url)
    assert not rep.ok
    assert [str(p) for p in verify(url, workers=2).problems] == [str(p) for p in rep.problems]
    msgs = {p.image_id: str(p) for p in rep.problems}
    assert rep.bad_ids == set(ids), rep.summary()
    assert "cannot read" in msgs[ids[1]]
    assert any("non-finite" in p.message for p in rep.problems if p.image_id == ids[2])
    assert any("level 1" in p.message for p in rep.problems if p.image_id == ids[0])
    assert _cli_verify(url) == 1


def test_index_duplicates_and_missing_photo(tmp_path):
    url, ids = _fresh(tmp_path, "dup")
    compact(url)
    # a second image claiming sample 0's zarr_index (e.g. a hand-edited index)
    t = open_dataset(url).index
    import pyarrow as pa

    from s2r_data.store.index import write_index_table
    from s2r_data.store.urls import location

    row = t.slice(0, 1)
    row = row.set_column(0, "image_id", pa.array(["intruder"]))
    write_index_table(location(url), "index.d/intruder.parquet", row)
    # sample 2's photo shard removed
    shutil.rmtree(url / "data.zarr" / "real" / "c" / "2")
    rep = verify(url)
    bad = {p.image_id for p in rep.problems}
    assert {"intruder", ids[0], ids[2]} <= bad, rep.summary()
    assert any("shares zarr_index 0" in p.message for p in rep.problems)
    assert any("real: shard missing" in p.message for p in rep.problems)


def _damage(url, ids, kind):
    """Damage a fresh, compacted 3-sample store in one way; returns the text the report must hold."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    z = url / "data.zarr"
    if kind == "array_missing":
        shutil.rmtree(z / "mask")
        return "arrays missing: mask"
    if kind == "group_metadata_garbage":
        (z / "zarr.json").write_bytes(b"{not json")
        return "cannot open the Zarr group"
    if kind == "group_attributes_gone":
        (z / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        return "no 's2r_dataset' attributes"
    if kind == "group_metadata_deleted":
        (z / "zarr.json").unlink()
        return "partial copy"
    if kind == "array_metadata_garbage":
        (z / "sim" / "zarr.json").write_bytes(b"\x00\x01")
        return "array sim: cannot open"
    if kind == "array_wrong_dtype":
        zarr.create_array(str(z / "label"), shape=(4, 1, 32, 64), dtype="float32", overwrite=True)
        return "array label: shape (4, 1, 32, 64) dtype float32"
    if kind == "arrays_shrunk":
        for name in ("sim", "label", "real", "mask", "sim_l1", "label_l1", "real_l1", "mask_l1"):
            zarr.open_array(str(z / name), mode="r+").resize((1,) + zarr.open_array(str(z / name)).shape[1:])
        return "outside the arrays' 1 slots"
    if kind == "index_garbage":
        (url / "index.parquet").write_bytes(b"PAR1 garbage")
        return "index file index.parquet is unreadable"
    if kind == "fragment_wrong_schema":
        pq.write_table(pa.table({"x": [1]}), url / "index.d" / "odd.parquet")
        return "index file index.d/odd.parquet is unreadable"
    if kind == "empty_folder":
        shutil.rmtree(url)
        url.mkdir()
        return "no Zarr group"
    raise AssertionError(kind)


DAMAGE = ["array_missing", "group_metadata_garbage", "group_attributes_gone", "group_metadata_deleted",
          "array_metadata_garbage", "array_wrong_dtype", "arrays_shrunk", "index_garbage", "fragment_wrong_schema",
          "empty_folder"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_store_is_reported_never_raised(tmp_path, capsys, kind):
    from s2r_data.store.__main__ import main

    url, ids = _fresh(tmp_path, kind)
    compact(url)
    expected = _damage(url, ids, kind)
    rep = verify(url)
    assert not rep.ok
    assert expected in rep.summary(), rep.summary()
    assert not any("verify could not finish" in p.message for p in rep.problems), rep.summary()
    capsys.readouterr()
    assert main(["verify", "--no-progress", str(url)]) == 1  # the command reports; no traceback
    assert expected in capsys.readouterr().out
