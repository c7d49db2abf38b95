"""Store creation is complete or absent: a crash at any step of creating the Zarr group leaves a
store that the next writer completes (or creates afresh), and verify reports, never crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from s2r_data.store import DatasetWriter, open_dataset, verify
from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose

H = 16

# Creates a store and writes ids; KILL_AFTER=<path suffix>: SIGKILL itself right after the zarr
# metadata document at that path (e.g. "data.zarr/zarr.json", the group's) was stored.
_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import zarr.storage
    from s2r_data.store import DatasetWriter
    from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose

    kill_after = os.environ.get("KILL_AFTER")
    if kill_after:
        real_set = zarr.storage.LocalStore.set
        async def set_then_die(self, key, value, *a, **kw):
            await real_set(self, key, value, *a, **kw)
            if (self.root / key).as_posix().endswith(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)
        zarr.storage.LocalStore.set = set_then_die
    url, H = sys.argv[1], int(sys.argv[2])
    with DatasetWriter(url, height=H, width=2 * H, city="c", chunk_px=8) as w:
        for k, image_id in enumerate(sys.argv[3:]):
            p = synthetic_panorama(H, 2 * H, k)
            w.write_sample(image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                           {"pose": synthetic_pose(image_id, k)}, exist_ok=True)
            print("wrote", image_id, flush=True)
    """
)


def _run(script, url, ids, kill_after=None):
    env = dict(os.environ)
    env.pop("KILL_AFTER", None)
    if kill_after:
        env["KILL_AFTER"] = kill_after
    return subprocess.run([sys.executable, str(script), str(url), str(H), *ids], capture_output=True, text=True,
                          env=env, timeout=180)


def _check(url, ids):
    ds = open_dataset(url)
    assert ds.image_ids == ids
    for i in range(len(ids)):
        np.testing.assert_array_equal(ds.read(i, "real"), synthetic_panorama(H, 2 * H, i).real)
    rep = verify(url)
    assert rep.ok, rep.summary()


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["data.zarr/zarr.json", "data.zarr/sim/zarr.json", "data.zarr/mask_l1/zarr.json"])
def test_kill_during_store_creation_then_rerun(tmp_path, kill_after):
    """The issue's moment: killed right after the group's zarr.json (or one array's) was written.
    Before the fix the group came first and every later write failed with ArrayNotFoundError."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    url = tmp_path / "ds"
    ids = ["a", "b", "c"]
    r = _run(script, url, ids, kill_after)
    assert r.returncode == -signal.SIGKILL, r.stderr
    rep = verify(url)  # reports, never raises
    assert not rep.ok or rep.n_samples == 0, rep.summary()
    r = _run(script, url, ids)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("wrote") == 3
    _check(url, ids)


class _Crash(RuntimeError):
    """Stands in for a kill at one exact step (nothing below catches it)."""


def _metadata_writes(monkeypatch, crash_at: int | None) -> list[str]:
    """Record the zarr metadata documents written; raise _Crash right after the ``crash_at``-th."""
    written: list[str] = []
    real_set = zarr.storage.LocalStore.set

    async def set_(self, key, value, *a, **kw):
        await real_set(self, key, value, *a, **kw)
        if key.endswith("zarr.json"):
            written.append((self.root / key).as_posix())
            if crash_at is not None and len(written) == crash_at:
                raise _Crash(written[-1])

    monkeypatch.setattr(zarr.storage.LocalStore, "set", set_)
    return written


def _open_writer(url):
    return DatasetWriter(url, height=H, width=2 * H, city="c", chunk_px=8, initial_capacity=2)


def _write(w, image_id, k):
    p = synthetic_panorama(H, 2 * H, k)
    return w.write_sample(image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                          {"pose": synthetic_pose(image_id, k)})


def test_crash_after_every_creation_step_leaves_no_group_or_a_complete_store(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        steps = _metadata_writes(m, None)
        _open_writer(tmp_path / "probe").close()
    assert steps[-1].endswith("data.zarr/zarr.json"), "the group's metadata must be written last"
    assert len(steps) == 9  # 8 arrays (4 + pyramid level 1) + the group
    for k in range(1, len(steps) + 1):
        url = tmp_path / f"ds{k}"
        with monkeypatch.context() as m:
            _metadata_writes(m, k)
            with pytest.raises(_Crash):
                _open_writer(url)
        group_written = (url / "data.zarr" / "zarr.json").exists()
        assert group_written == (k == len(steps))
        rep = verify(url)
        if not group_written:
            assert not rep.ok and "interrupted" in rep.summary(), rep.summary()
        with _open_writer(url) as w:  # the next writer completes the store
            assert [_write(w, f"i{j}", j) for j in range(3)] == [0, 1, 2]
        _check(url, ["i0", "i1", "i2"])


def _group_first_store(url, present: list[str]):
    """What the old writer (group first, then arrays) left when killed after ``present`` arrays."""
    with _open_writer(url):
        pass
    for name in os.listdir(url / "data.zarr"):
        if name not in present and (url / "data.zarr" / name).is_dir():
            shutil.rmtree(url / "data.zarr" / name)


def test_store_with_group_but_missing_arrays_is_reported_and_completed(tmp_path):
    url = tmp_path / "old"
    _group_first_store(url, ["sim", "label"])
    rep = verify(url)
    assert not rep.ok
    assert any("missing" in p.message and "mask" in p.message and "real_l1" in p.message for p in rep.problems), rep.summary()
    from s2r_data.store.__main__ import main

    assert main(["verify", "--no-progress", str(url)]) == 1
    with _open_writer(url) as w:
        _write(w, "x", 0)
        _write(w, "y", 1)
    _check(url, ["x", "y"])
    meta = json.loads((url / "data.zarr" / "mask" / "zarr.json").read_text())
    assert meta["shape"][1:] == [2, H, 2 * H]
