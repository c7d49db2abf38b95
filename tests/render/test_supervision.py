"""Blender worker lifecycle around its supervisor: workers die with a killed supervisor, scratch
folders of dead runs are removed (and only those), user paths are resolved against the caller's
working directory before they reach the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2r_data.poses import Pose, level_rotation_from_heading
from s2r_data.render import load_sim_passes
from s2r_data.render.scratch import LEGACY_STALE_AFTER_S, clean_stale_scratch, new_scratch_dir, process_start_ticks

from .scene_kit import Box, box_city

REPO = Path(__file__).resolve().parents[2]
BUILDING = Box("wall", (5.0, -5.0, 0.0), (9.0, 5.0, 10.0))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _wait_for(fn, timeout_s: float):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


def test_clean_stale_scratch_removes_only_dead_owners(tmp_path):
    me = os.getpid()
    mine = new_scratch_dir(tmp_path)  # a live run: this process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"s2r-render-{dead.pid}-1-abc123"  # its pid is free again (or reused by a younger process)
    reused = tmp_path / f"s2r-render-{me}-{(process_start_ticks(me) or 0) + 12345}-abc"  # same pid, other start time
    legacy_old, legacy_new = tmp_path / "s2r-render-ab12cd34", tmp_path / "s2r-render-zz99yy88"
    foreign = [tmp_path / "s2r-render-bench-x1", tmp_path / "other-1-1-x"]
    for d in [gone, reused, legacy_old, legacy_new, *foreign]:
        d.mkdir()
        (d / "0.exr").write_bytes(b"x" * 100)
    old = time.time() - LEGACY_STALE_AFTER_S - 60
    os.utime(legacy_old, (old, old))
    removed = clean_stale_scratch(tmp_path)
    assert sorted(removed) == sorted([gone, reused, legacy_old])
    assert mine.exists() and legacy_new.exists() and all(d.exists() for d in foreign)
    assert mine.name.startswith(f"s2r-render-{me}-")


@pytest.mark.blender
@pytest.mark.slow
def test_worker_dies_with_a_killed_supervisor_and_its_scratch_is_cleaned(tmp_path):
    city = box_city([BUILDING], ground_half_m=50.0).save(tmp_path / "city_model.npz")
    supervisor = (  # a supervisor whose worker is busy (hung) in a render when the supervisor is killed
        "import sys, time\n"
        "from pathlib import Path\n"
        "from s2r_data.poses import Pose, level_rotation_from_heading, matrix_world_blender\n"
        "from s2r_data.render import RenderSettings\n"
        "from s2r_data.render.scratch import new_scratch_dir\n"
        "from s2r_data.render.worker_process import WorkerProcess\n"
        "scratch = new_scratch_dir()\n"
        "w = WorkerProcess(Path(sys.argv[1]), RenderSettings(width=64, threads=1), Path(sys.argv[2]) / 'worker.log')\n"
        "w.start()\n"
        "pose = Pose('p0', [0, 0, 2.5], level_rotation_from_heading(0))\n"
        "w.send({'cmd': 'render', 'seq': 0, 'image_id': 'p0', 'matrix_world': matrix_world_blender(pose).tolist(),\n"
        "        'out_path': str(scratch / '0.exr'), 'fault': 'hang'})\n"
        "print(w.pid, scratch, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sup = subprocess.Popen([sys.executable, "-c", supervisor, str(city), str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        worker_pid, scratch_dir = sup.stdout.readline().split()
        worker, scratch = int(worker_pid), Path(scratch_dir)
        assert _alive(worker) and scratch.name.startswith(f"s2r-render-{sup.pid}-")
        time.sleep(1.0)  # the worker now sleeps in the 'hang' fault: it reads no pipe, writes nothing
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(10)
        assert _wait_for(lambda: not _alive(worker), 20), f"worker {worker} outlived its supervisor"
        assert scratch.exists()  # killed: nothing cleaned up ...
        removed = clean_stale_scratch()  # ... until the next run starts
        assert scratch in removed and not scratch.exists()
    finally:
        if sup.poll() is None:
            sup.kill()


@pytest.mark.blender
def test_cli_relative_paths_reach_the_blender_worker(tmp_path):
    city = box_city([BUILDING], ground_half_m=50.0).save(tmp_path / "model" / "city_model.npz")
    caller = tmp_path / "caller"
    caller.mkdir()
    (caller / "poses.json").write_text(json.dumps([Pose("p0", [0.0, 0.0, 2.5], level_rotation_from_heading(30.0)).to_dict()]))
    cmd = [sys.executable, "-m", "s2r_data.cli", "render", "--city-model", "../model/city_model.npz", "--poses", "poses.json",
           "--out", "out", "--width", "64", "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, cwd=caller, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    passes = load_sim_passes(caller / "out" / "p0.npz")
    assert passes.meta["backend"] == "blender" and passes.meta["city_model"] == str(city)
    assert not (REPO / "out").exists()
