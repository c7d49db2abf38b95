"""A dataset reads with plain zarr + pyarrow, following docs/dataset.md, with no s2r import:
exactly the committed samples, none of the unused or uncommitted slots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from s2r_data.store import compact, open_dataset
from s2r_data.store.synthetic import synthetic_panorama, write_synthetic_dataset

H = 32
DOC = Path(__file__).resolve().parents[2] / "docs" / "dataset.md"

# appended to the documented reader: dump what it read, and prove nothing of s2r was imported
_HARNESS = textwrap.dedent(
    """
    import sys
    import numpy as np

    root, out = sys.argv[1], sys.argv[2]
    group = open_arrays(root)
    index = read_committed_index(root)
    ids = index["image_id"].to_pylist()
    samples = [read_sample(group, z) for z in index["zarr_index"].to_pylist()]
    np.savez(out, ids=np.array(ids), slots=group["sim"].shape[0],
             committed_attr=group.attrs["s2r_dataset"]["committed_samples"],
             **{f"{k}_{i}": v for i, s in enumerate(samples) for k, v in s.items()},
             **{f"real_l1_{i}": read_sample(group, z, level=1)["real"] for i, z in enumerate(index["zarr_index"].to_pylist())})
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("s2r_data", "s2r_train", "flows"))
    assert not leaked, leaked
    """
)


def _documented_reader() -> str:
    text = DOC.read_text()
    section = text[text.index("## Reading with plain zarr + pyarrow"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def read_plainly(tmp_path, url, env=None) -> dict:
    """Run the reader of docs/dataset.md on ``url`` (a folder or an fsspec URL) in a fresh
    interpreter that imports nothing of s2r; returns what it read (ids, slots, every sample)."""
    script = tmp_path / "plain_reader.py"
    script.write_text(_documented_reader() + _HARNESS)
    out = tmp_path / "read.npz"
    # -I: isolated mode (no PYTHONPATH, no user site): the project is importable only via the venv
    r = subprocess.run([sys.executable, "-I", str(script), str(url), str(out)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def _expected(k: int):
    p = synthetic_panorama(H, 2 * H, k)
    return p, np.concatenate([p.sky_mask, p.valid_mask]).astype(np.uint8)


def test_plain_zarr_and_pyarrow_read_exactly_the_committed_samples(tmp_path):
    url = tmp_path / "ds"
    ids = write_synthetic_dataset(url, 5, height=H)  # ids s0_0000.., content seed k
    # an uncommitted write: arrays in slot 5, commit marker never written (a crashed writer)
    write_synthetic_dataset(url, 6, height=H, ids=ids + ["crashed"])
    (url / "index.d" / "crashed.parquet").unlink()
    (url / "index.d" / ".late.parquet.0123.partial.parquet").write_bytes(b"half a temp file")
    assert compact(url) == 5
    # committed after the compaction: only in a fragment
    write_synthetic_dataset(url, 1, height=H, ids=["late"], seed=7)  # content seed 7 * 100_003
    committed = ids + ["late"]
    assert sorted(open_dataset(url).image_ids) == sorted(committed)

    got = read_plainly(tmp_path, url)
    assert list(got["ids"]) == committed  # sorted by slot: 0..4, then "late" in slot 6
    assert int(got["slots"]) > len(committed)  # more slots than samples
    assert int(got["committed_attr"]) == 5  # at the last compaction
    for i, image_id in enumerate(committed):
        k = 7 * 100_003 if image_id == "late" else i
        p, mask = _expected(k)
        np.testing.assert_array_equal(got[f"sim_{i}"], p.sim, err_msg=image_id)
        np.testing.assert_array_equal(got[f"label_{i}"], p.label, err_msg=image_id)
        np.testing.assert_array_equal(got[f"real_{i}"], p.real, err_msg=image_id)
        np.testing.assert_array_equal(got[f"mask_{i}"], mask, err_msg=image_id)
        assert got[f"real_l1_{i}"].shape == (3, H // 2, H)

    # after compaction, index.parquet alone is complete and the attribute agrees
    assert compact(url) == 6
    t = pq.read_table(url / "index.parquet")
    assert sorted(t.column("image_id").to_pylist()) == sorted(committed)
    attrs = json.loads((url / "data.zarr" / "zarr.json").read_text())["attributes"]["s2r_dataset"]
    assert attrs["committed_samples"] == t.num_rows == 6
    assert list(read_plainly(tmp_path, url)["ids"]) == committed
