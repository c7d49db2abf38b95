"""render_poses with either backend: selection by name, content keys (reuse vs re-render and why),
bad input (one clear error, nothing written), poses and model in different frames, the CLI
(Mapillary records with --city). Uses the ray caster (no Blender) except where marked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2r_data.cities import load_city
from s2r_data.citymodel import CityModel, CityModelError, Mesh
from s2r_data.poses import Pose, level_rotation_from_heading, pose_from_mapillary, rotation_from_heading_pitch_roll
from s2r_data.render import RenderSettings, load_sim_passes, render_poses
from s2r_data.render import raycast_backend
from s2r_data.render.batch import summarize_results
from s2r_data.render.pose_checks import FrameMismatchError
from s2r_data.render.raycast import RaycastScene
from s2r_data.render.settings import MAX_WIDTH_PX

from .scene_kit import Box, box_city

REPO = Path(__file__).resolve().parents[2]
W = 128
RAY = RenderSettings(width=W, threads=2, backend="raycast")
BUILDING = Box("wall", (5.0, -5.0, 0.0), (9.0, 5.0, 10.0))


def _model(height_m: float = 10.0) -> CityModel:
    b = Box("wall", BUILDING.lo, BUILDING.hi[:2] + (height_m,))
    return box_city([b], ground_half_m=50.0, footprint_boxes=[b])


def _poses(n: int) -> list[Pose]:
    return [Pose(f"p{i}", [0.0, 0.0, 2.5], rotation_from_heading_pitch_roll(40.0 * i, 5.0, -3.0)) for i in range(n)]


@pytest.fixture()
def city_path(tmp_path):
    return _model().save(tmp_path / "model" / "city_model.npz")


def _statuses(results):
    return [(r.status, r.rendered_because) for r in results]


# ---- backend selection -------------------------------------------------------------------------
def test_backend_is_validated_by_name():
    with pytest.raises(ValueError, match="backend"):
        RenderSettings(backend="embree")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="photo mode needs backend='blender'"):
        RenderSettings(backend="raycast", mode="photo")
    assert RenderSettings().backend == "blender"


def test_raycast_backend_writes_the_scene_render(city_path, tmp_path):
    poses = _poses(3)
    results = render_poses(city_path, poses, tmp_path / "out", RAY, progress=False)
    assert _statuses(results) == [("ok", "new")] * 3
    scene = RaycastScene(CityModel.load(city_path), threads=1)
    for pose, r in zip(poses, results):
        saved = load_sim_passes(r.path)
        direct = scene.render(pose, W)
        for name in ("diffcol", "normal", "depth_m", "label", "sky_mask"):
            assert np.array_equal(getattr(saved, name), getattr(direct, name)), name
        m = saved.meta
        assert m["backend"] == "raycast" and m["backend_version"].startswith("raycast ") and m["image_id"] == pose.image_id
        assert m["content_key"]["key"] and m["rendered_because"] == "new" and m["city_model"] == str(city_path)
        assert m["render_time_s"] > 0 and r.render_time_s == m["render_time_s"]


# ---- content keys ------------------------------------------------------------------------------
def test_unchanged_outputs_are_reused_and_each_change_rerenders_with_its_reason(city_path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    poses = _poses(3)
    render_poses(city_path, poses, out, RAY, progress=False)
    mtimes = {p.image_id: (out / f"{p.image_id}.npz").stat().st_mtime_ns for p in poses}

    again = render_poses(city_path, poses, out, RAY, progress=False)
    assert [r.status for r in again] == ["skipped_existing"] * 3
    assert {p.image_id: (out / f"{p.image_id}.npz").stat().st_mtime_ns for p in poses} == mtimes

    moved = [poses[0], Pose("p1", poses[1].center_local_m + [0.3, 0.0, 0.0], poses[1].R_world_to_cam_opensfm), poses[2]]
    r = render_poses(city_path, moved, out, RAY, progress=False)
    assert _statuses(r) == [("skipped_existing", ""), ("ok", "pose changed"), ("skipped_existing", "")]

    _model(height_m=14.0).save(city_path)  # same path, other content
    r = render_poses(city_path, moved, out, RAY, progress=False)
    assert _statuses(r) == [("ok", "city model changed")] * 3
    assert load_sim_passes(out / "p0.npz").meta["content_key"]["model"] != ""

    r = render_poses(city_path, moved, out, RenderSettings(width=W, threads=2, backend="raycast", clip_end_m=500.0), progress=False)
    assert _statuses(r) == [("ok", "settings changed")] * 3
    r = render_poses(city_path, moved, out, RenderSettings(width=W, threads=1, backend="raycast", clip_end_m=500.0, compress=True), progress=False)
    assert [x.status for x in r] == ["skipped_existing"] * 3  # threads / compression do not change pixels

    monkeypatch.setattr(raycast_backend, "backend_version", lambda settings: "raycast 999 / embreex 0")
    r = render_poses(city_path, moved, out, RenderSettings(width=W, threads=2, backend="raycast", clip_end_m=500.0), progress=False)
    assert _statuses(r) == [("ok", "backend changed")] * 3
    assert load_sim_passes(out / "p2.npz").meta["backend_version"] == "raycast 999 / embreex 0"
    assert summarize_results(r) == "reused 0 existing output(s); rendered 3 (backend changed: 3); failed 0"


def test_outputs_without_a_key_or_unreadable_are_rerendered(city_path, tmp_path):
    out = tmp_path / "out"
    poses = _poses(2)
    render_poses(city_path, poses, out, RAY, progress=False)
    old = load_sim_passes(out / "p0.npz")
    del old.meta["content_key"]  # as written before content keys existed
    from s2r_data.render.sim_passes import save_sim_passes

    save_sim_passes(out / "p0.npz", old)
    (out / "p1.npz").write_bytes(b"truncated")
    r = render_poses(city_path, poses, out, RAY, progress=False)
    assert _statuses(r) == [("ok", "no content key (written before keys existed)"), ("ok", "existing output unreadable")]
    assert {x.status for x in render_poses(city_path, poses, out, RAY, progress=False)} == {"skipped_existing"}


@pytest.mark.blender
def test_switching_backend_rerenders(city_path, tmp_path):
    out = tmp_path / "out"
    poses = _poses(1)
    render_poses(city_path, poses, out, RAY, progress=False)
    r = render_poses(city_path, poses, out, RenderSettings(width=W, threads=2), progress=False)
    assert _statuses(r) == [("ok", "backend changed")]
    assert load_sim_passes(out / "p0.npz").meta["backend"] == "blender"


# ---- bad input: one clear error, nothing written ------------------------------------------------
@pytest.mark.parametrize("backend", ["raycast", "blender"])
def test_bad_models_fail_before_writing(tmp_path, backend):
    empty = CityModel({}, b"", {"city": "nowhere"}).save(tmp_path / "empty" / "city_model.npz")
    v = np.array([[0, 0, 0], [1, 0, 0], [0, np.nan, 1]], float)
    nan = CityModel({"roof": Mesh(v, np.array([[0, 1, 2]]))}, b"", {}).save(tmp_path / "nan" / "city_model.npz")
    settings = RenderSettings(width=W, backend=backend)
    with pytest.raises(CityModelError, match=r"city model .*empty.* has no triangles .*rebuild"):
        render_poses(empty, _poses(1), tmp_path / "out", settings, progress=False)
    with pytest.raises(CityModelError, match=r"1 of 3 'roof' vertices are not finite"):
        render_poses(nan, _poses(1), tmp_path / "out", settings, progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_poses_fail_alone_and_write_nothing(city_path, tmp_path):
    poses = [
        Pose("fine", [0.0, 0.0, 2.5], level_rotation_from_heading(0.0)),
        Pose("nan_centre", [np.nan, 0.0, 2.5], level_rotation_from_heading(0.0)),
        Pose("nan_rotation", [0.0, 0.0, 2.5], np.full((3, 3), np.nan)),
        Pose("sheared", [0.0, 0.0, 2.5], level_rotation_from_heading(0.0) + 0.05),
    ]
    r = render_poses(city_path, poses, tmp_path / "out", RAY, progress=False)
    assert [x.status for x in r] == ["ok", "failed", "failed", "failed"]
    assert "center_local_m" in r[1].reason and "not finite" in r[1].reason
    assert "not a proper rotation" in r[2].reason and "not a proper rotation" in r[3].reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.npz"]


@pytest.mark.parametrize("width", [127, 6, MAX_WIDTH_PX + 2, 10**6])
def test_odd_or_absurd_widths_are_refused(width):
    with pytest.raises(ValueError, match=rf"width={width}: must be an even integer in \[8, {MAX_WIDTH_PX}\]"):
        RenderSettings(width=width, backend="raycast")


# ---- frames ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_records() -> list[dict]:
    return json.loads((REPO / "data" / "sample" / "replay" / "images.json").read_text())["images"][:3]


@pytest.fixture(scope="module")
def sample_model_path(tmp_path_factory):
    from s2r_data.osm import build_city_model

    return build_city_model(load_city("sample")).save(tmp_path_factory.mktemp("sample") / "city_model.npz")


def test_poses_of_another_frame_are_refused_naming_both_reference_points(sample_model_path, sample_records, tmp_path):
    helsinki = load_city("helsinki").frame
    foreign = [pose_from_mapillary(r, helsinki) for r in sample_records]  # Paris records in Helsinki's frame
    with pytest.raises(FrameMismatchError) as e:
        render_poses(sample_model_path, foreign, tmp_path / "out", RAY, progress=False)
    msg = str(e.value)
    assert "(2.3651029, 48.8208447)" in msg  # the model's reference point (sample city)
    assert "(24.944" in msg and "60.171" in msg  # ≈ Helsinki's, recovered from the poses
    assert not (tmp_path / "out").exists()
    own = [pose_from_mapillary(r, load_city("sample").frame) for r in sample_records]
    assert [x.status for x in render_poses(sample_model_path, own, tmp_path / "out", RAY, progress=False)] == ["ok"] * 3


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "s2r_data.cli", "render", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_converts_mapillary_records_with_city_and_checks_the_frame(sample_model_path, sample_records, tmp_path):
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"data": sample_records + [{"id": "nopos", "geometry": None}]}))
    common = ["--city-model", str(sample_model_path), "--poses", str(records), "--width", "64", "--backend", "raycast", "--no-progress"]
    no_city = _cli(*common, "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert no_city.returncode != 0 and "add --city NAME" in no_city.stderr
    ok = _cli(*common, "--out", str(tmp_path / "a"), "--city", "sample", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "skipped record without a usable pose: nopos: no_position" in ok.stderr
    assert "reused 0 existing output(s); rendered 3 (new: 3); failed 0" in ok.stdout
    expected = pose_from_mapillary(sample_records[0], load_city("sample").frame, mount_height_m=2.5)
    meta = load_sim_passes(tmp_path / "a" / f"{sample_records[0]['id']}.npz").meta
    assert np.allclose(meta["pose"]["center_local_m"], expected.center_local_m)
    again = _cli(*common, "--out", str(tmp_path / "a"), "--city", "sample", cwd=tmp_path)
    assert "reused 3 existing output(s); rendered 0; failed 0" in again.stdout
    wrong = _cli(*common, "--out", str(tmp_path / "b"), "--city", "helsinki", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "(24.9442954, 60.1716340)" in wrong.stderr and "(2.3651029, 48.8208447)" in wrong.stderr
    assert not (tmp_path / "b").exists()


def test_cli_resolves_relative_paths_against_the_callers_directory(city_path, tmp_path):
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    (caller / "poses.json").write_text(json.dumps([p.to_dict() for p in _poses(1)]))
    rel_model = os.path.relpath(city_path, caller)
    r = _cli("--city-model", rel_model, "--poses", "poses.json", "--out", "renders", "--width", "64", "--backend", "raycast",
             "--no-progress", cwd=caller)
    assert r.returncode == 0, r.stderr
    assert (caller / "renders" / "p0.npz").is_file()
    assert load_sim_passes(caller / "renders" / "p0.npz").meta["city_model"] == str(city_path)


def test_a_single_pose_of_another_frame_is_refused_too(sample_model_path, sample_records, tmp_path):
    import warnings

    foreign = [pose_from_mapillary(sample_records[0], load_city("helsinki").frame)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no size-1 array conversions on the way
        with pytest.raises(FrameMismatchError, match=r"\(2\.3651029, 48\.8208447\)"):
            render_poses(sample_model_path, foreign, tmp_path / "out", RAY, progress=False)
