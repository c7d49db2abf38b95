"""render_poses supervision: crash and hang recovery, resume, restart_every, bad input."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from s2r_data.citymodel import CityModelError
from s2r_data.poses import Pose, level_rotation_from_heading
from s2r_data.render import (
    BlenderNotInstalledError,
    FaultInjection,
    RenderSettings,
    load_sim_passes,
    render_poses,
)

from .scene_kit import Box, box_city

W = 64
SETTINGS = RenderSettings(width=W, threads=2, timeout_s=60)
BUILDING = Box("wall", (5.0, -5.0, 0.0), (9.0, 5.0, 10.0))


@pytest.fixture(scope="module")
def city_path(tmp_path_factory):
    return box_city([BUILDING], ground_half_m=50.0, footprint_boxes=[BUILDING]).save(tmp_path_factory.mktemp("city") / "city_model.npz")


def _poses(n: int, prefix: str = "p") -> list[Pose]:
    return [Pose(f"{prefix}{i}", [0.0, 0.0, 2.5], level_rotation_from_heading(37.0 * i)) for i in range(n)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.blender
@pytest.mark.slow
def test_crash_is_recovered_and_batch_resumes(city_path, tmp_path):
    poses = _poses(4)
    results = render_poses(city_path, poses, tmp_path, SETTINGS, progress=False, fault_injection=FaultInjection(crash_on=frozenset({"p1"})))
    assert [r.status for r in results] == ["ok", "failed", "ok", "ok"]
    assert "crashed" in results[1].reason and "exited with code 70" in results[1].reason
    assert results[0].worker_pid == results[1].worker_pid != results[2].worker_pid == results[3].worker_pid
    assert not _alive(results[1].worker_pid)
    assert not (tmp_path / "p1.npz").exists()
    assert all(load_sim_passes(tmp_path / f"p{i}.npz").width == W for i in (0, 2, 3))


@pytest.mark.blender
@pytest.mark.slow
def test_hang_is_killed_after_timeout(city_path, tmp_path):
    poses = _poses(3)
    settings = RenderSettings(width=W, threads=2, timeout_s=6)
    t0 = time.perf_counter()
    results = render_poses(city_path, poses, tmp_path, settings, progress=False, fault_injection=FaultInjection(hang_on=frozenset({"p1"})))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "timeout" in results[1].reason
    assert results[1].worker_pid == results[0].worker_pid != results[2].worker_pid
    assert not _alive(results[1].worker_pid)  # the hung worker was killed, not leaked
    assert time.perf_counter() - t0 < 60


@pytest.mark.blender
@pytest.mark.slow
def test_resume_skips_existing_and_rerenders_missing(city_path, tmp_path):
    first = render_poses(city_path, _poses(2), tmp_path, SETTINGS, progress=False)
    assert [r.status for r in first] == ["ok", "ok"]
    mtime = (tmp_path / "p0.npz").stat().st_mtime_ns
    (tmp_path / "p1.npz").write_bytes(b"truncated")  # a corrupt leftover is rendered again
    second = render_poses(city_path, _poses(3), tmp_path, SETTINGS, progress=False)
    assert [r.status for r in second] == ["skipped_existing", "ok", "ok"]
    assert (tmp_path / "p0.npz").stat().st_mtime_ns == mtime
    assert load_sim_passes(tmp_path / "p1.npz").width == W
    third = render_poses(city_path, _poses(3), tmp_path, SETTINGS, progress=False)
    assert {r.status for r in third} == {"skipped_existing"}
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.blender
@pytest.mark.slow
def test_restart_every_bounds_poses_per_process(city_path, tmp_path):
    settings = RenderSettings(width=W, threads=2, restart_every=2)
    results = render_poses(city_path, _poses(5), tmp_path, settings, progress=False)
    assert [r.status for r in results] == ["ok"] * 5
    pids = [r.worker_pid for r in results]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert len(set(pids)) == 3


@pytest.mark.blender
@pytest.mark.slow
def test_consecutive_failures_abort_the_rest(city_path, tmp_path):
    poses = _poses(5)
    settings = RenderSettings(width=W, threads=2, max_consecutive_failures=2)
    results = render_poses(city_path, poses, tmp_path, settings, progress=False,
                           fault_injection=FaultInjection(crash_on=frozenset(p.image_id for p in poses)))
    assert [r.status for r in results] == ["failed"] * 5
    assert all("crashed" in r.reason for r in results[:2])
    assert all("aborted after 2 consecutive failures" in r.reason for r in results[2:])


@pytest.mark.blender
def test_bad_poses_are_flagged_rendered_or_skipped(city_path, tmp_path):
    R = level_rotation_from_heading(0.0)
    poses = [
        Pose("fine", [0.0, 0.0, 2.5], R),
        Pose("in_building", [7.0, 0.0, 2.5], R),
        Pose("far_away", [500.0, 0.0, 2.5], R),
        Pose("bad/id", [0.0, 0.0, 2.5], R),
        Pose("nan_centre", [np.nan, 0.0, 2.5], R),
    ]
    skipped = render_poses(city_path, poses, tmp_path / "skip", RenderSettings(width=W, threads=2, on_bad_pose="skip"), progress=False)
    assert [r.status for r in skipped] == ["ok", "skipped_flagged", "skipped_flagged", "failed", "failed"]
    assert skipped[1].flags["inside_building"] and not skipped[1].flags["outside_bounds"]
    assert skipped[2].flags["outside_bounds"] and not skipped[2].flags["inside_building"]
    assert "inside_building" in skipped[1].reason and "image_id" in skipped[3].reason and "finite" in skipped[4].reason

    rendered = render_poses(city_path, poses[:3], tmp_path / "render", RenderSettings(width=W, threads=2), progress=False)
    assert [r.status for r in rendered] == ["ok", "ok", "ok"]
    metas = [load_sim_passes(r.path).meta for r in rendered]
    assert [(m["outside_bounds"], m["inside_building"]) for m in metas] == [(False, False), (False, True), (True, False)]
    assert metas[0]["render_time_s"] > 0 and metas[0]["pose"]["image_id"] == "fine"


def test_unreadable_city_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "city_model.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CityModelError, match="unreadable"):
        render_poses(bad, _poses(1), tmp_path / "out", SETTINGS, progress=False)
    with pytest.raises(CityModelError, match="does not exist"):
        render_poses(tmp_path / "missing.npz", _poses(1), tmp_path / "out", SETTINGS, progress=False)


def test_duplicate_image_ids_are_rejected(city_path, tmp_path):
    with pytest.raises(ValueError, match="duplicate image ids"):
        render_poses(city_path, _poses(2) + _poses(1), tmp_path, SETTINGS, progress=False)


def test_missing_bpy_in_this_environment_names_the_extra(city_path, tmp_path, monkeypatch):
    import importlib.util

    from s2r_data.render import blender_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(blender_backend.importlib.util, "find_spec", lambda name, *a: None if name == "bpy" else real(name, *a))
    with pytest.raises(BlenderNotInstalledError, match=r'pip install -e "\.\[render\]"'):
        render_poses(city_path, _poses(1), tmp_path, SETTINGS, progress=False)


@pytest.mark.blender
def test_missing_bpy_in_the_worker_names_the_extra(city_path, tmp_path, monkeypatch):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "bpy.py").write_text("raise ImportError('simulated: no bpy here')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    with pytest.raises(BlenderNotInstalledError, match=r'pip install -e "\.\[render\]"'):
        render_poses(city_path, _poses(1), tmp_path / "out", SETTINGS, progress=False)


@pytest.mark.blender
def test_cli_writes_outputs_and_report(city_path, tmp_path):
    import subprocess
    import sys

    poses_json = tmp_path / "poses.json"
    poses_json.write_text(json.dumps([p.to_dict() for p in _poses(2)]))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "s2r_data.render", "--city-model", str(city_path), "--poses", str(poses_json),
           "--out", str(out), "--width", str(W), "--threads", "2", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "render_report.json").read_text())
    assert report["counts"] == {"ok": 2}
    assert sorted(p.name for p in out.glob("*.npz")) == ["p0.npz", "p1.npz"]
    bad = subprocess.run(cmd[:-5] + ["--width", "63"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "width" in bad.stderr
