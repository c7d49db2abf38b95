import numpy as np
import pytest

from s2r_data.render.sim_passes import SimPasses, SimPassesError, load_sim_passes, save_sim_passes


def _passes(h=4, w=8) -> SimPasses:
    rng = np.random.default_rng(0)
    return SimPasses(
        diffcol=rng.uniform(0, 1, (3, h, w)).astype(np.float16),
        normal=rng.uniform(-1, 1, (3, h, w)).astype(np.float16),
        depth_m=rng.uniform(0, 50, (1, h, w)).astype(np.float32),
        label=rng.integers(0, 7, (1, h, w)).astype(np.uint8),
        sky_mask=rng.uniform(size=(1, h, w)) > 0.5,
        meta={"image_id": "x1", "outside_bounds": False, "render_time_s": 0.5},
    )


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, compress):
    p = _passes()
    save_sim_passes(tmp_path / "x1.npz", p, compress=compress)
    q = load_sim_passes(tmp_path / "x1.npz")
    for name in ("diffcol", "normal", "depth_m", "label", "sky_mask"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
    assert q.meta == p.meta and q.image_id == "x1" and (q.height, q.width) == (4, 8)
    sim = q.sim7()
    assert sim.shape == (7, 4, 8) and sim.dtype == np.float16
    np.testing.assert_array_equal(sim[6], p.depth_m[0].astype(np.float16))
    assert [f.name for f in tmp_path.iterdir()] == ["x1.npz"]  # no partial left behind


def test_validation_names_the_array():
    p = _passes()
    with pytest.raises(SimPassesError, match="depth_m"):
        SimPasses(p.diffcol, p.normal, p.depth_m.astype(np.float16), p.label, p.sky_mask)
    with pytest.raises(SimPassesError, match="pixel-aligned"):
        SimPasses(p.diffcol, p.normal, p.depth_m[:, :2], p.label, p.sky_mask)


def test_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(SimPassesError, match="delete it and render again"):
        load_sim_passes(tmp_path / "bad.npz")
    with pytest.raises(SimPassesError, match="does not exist"):
        load_sim_passes(tmp_path / "missing.npz")


@pytest.mark.parametrize("durable", [False, True])
def test_fsync_only_when_durable_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch, durable):
    import os

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    save_sim_passes(tmp_path / "x1.npz", _passes(), durable=durable)
    assert bool(synced) == durable
    assert load_sim_passes(tmp_path / "x1.npz").image_id == "x1"

    def half_then_fail(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_sim_passes(tmp_path / "x2.npz", _passes(), durable=durable)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x1.npz"]


def test_a_truncated_output_is_unreadable_not_silently_short(tmp_path):
    """What a non-durable write can leave after an OS crash: a cut file → an error (re-rendered)."""
    path = save_sim_passes(tmp_path / "x1.npz", _passes(64, 128))
    data = path.read_bytes()
    for cut in (0, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(SimPassesError, match="render again"):
            load_sim_passes(path)
