"""verify() finds injected corruption and names the image."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
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
