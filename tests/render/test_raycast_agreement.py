"""The ray-cast backend reproduces Blender's labels-mode passes (Blender is the reference).

On the sample city (Paris 13e, built by s2r_data.osm) from street poses with random pitch and
roll, at 512×256 (and 2048×1024, slow): labels identical on ≥ 99.9 % of pixels and differing only
on edge pixels of the Blender render (s2r_data.render.compare.edge_mask: a label, sky or normal
change in the 3×3 neighbourhood), sky masks identical off edges, depth within 1 cm on ≥ 99.9 % and
normals within 0.1° on ≥ 99.99 % of the non-edge pixels hit in both. Also: clip_end → sky in both,
the pose flags agree, and Cycles' sample position (CYCLES_SAMPLE_OFFSET_PX) is re-measured.
The geometric marker test of the renderer (test_geometry.py) is repeated for the ray caster at a
tighter 0.3 px (it needs no Blender).
"""

from __future__ import annotations

import numpy as np
import pytest

from s2r_data.cities import load_city
from s2r_data.citymodel import CityModel, Mesh
from s2r_data.osm import build_city_model
from s2r_data.poses import Pose, level_rotation_from_heading
from s2r_data.render import RenderSettings
from s2r_data.render.compare import compare_passes
from s2r_data.render.raycast import CYCLES_SAMPLE_OFFSET_PX, RaycastScene
from s2r_data.render.street_poses import random_street_poses

from .conftest import render_model
from .scene_kit import Box, box_city, sphere_city
from .test_geometry import MARKERS_512, MARKERS_2048, _measure, _poses


@pytest.fixture(scope="module")
def sample_model() -> CityModel:
    return build_city_model(load_city("sample"))


@pytest.fixture(scope="module")
def sample_scene(sample_model):
    with RaycastScene(sample_model, threads=2) as scene:
        yield scene


def _street_poses(model: CityModel, n: int, seed: int) -> list[Pose]:
    tilted = random_street_poses(model, n, seed=seed, prefix=f"t{seed}_", pitch_range_deg=30.0, roll_range_deg=20.0)
    level = random_street_poses(model, 1, seed=seed + 1, prefix=f"l{seed}_", pitch_range_deg=0.0, roll_range_deg=0.0)
    return tilted + level


def _assert_agrees(blender, raycast, where: str, *, min_compared: float = 0.3) -> dict:
    a = compare_passes(blender, raycast)
    assert a.label_agreement >= 0.999, (where, a)
    assert a.label_diff_off_edge == 0, (where, a)
    assert a.sky_diff_off_edge == 0, (where, a)
    assert a.n_compared > min_compared * a.n_pixels, (where, a)
    assert a.depth_within_1cm >= 0.999, (where, a)
    assert a.normal_within_0_1deg >= 0.9999, (where, a)
    for key in ("outside_bounds", "inside_building", "below_ground"):
        assert blender.meta[key] == raycast.meta[key], (where, key)
    return a.to_dict()


@pytest.mark.blender
@pytest.mark.parametrize("width, n_tilted, seed", [(512, 5, 11), pytest.param(2048, 1, 12, marks=pytest.mark.slow)], ids=["512", "2048"])
def test_sample_city_agrees_with_blender(tmp_path, sample_model, sample_scene, width, n_tilted, seed):
    poses = _street_poses(sample_model, n_tilted, seed=seed)
    results, blender = render_model(tmp_path, sample_model, poses, RenderSettings(width=width, threads=2))
    assert [r.status for r in results] == ["ok"] * len(poses)
    for pose in poses:
        _assert_agrees(blender[pose.image_id], sample_scene.render(pose, width), pose.image_id)


@pytest.mark.blender
def test_clip_end_sky_inside_building_and_flags_agree(tmp_path):
    building = Box("wall", (5.0, -5.0, 0.3), (9.0, 5.0, 10.0))  # bottom face off the ground (no coplanar z-fight)
    far = Box("roof", (40.0, -30.0, 0.0), (45.0, 30.0, 30.0))
    model = box_city([building, far], ground_half_m=100.0, footprint_boxes=[building])
    poses = [
        Pose("street", [0.0, 1.0, 2.5], level_rotation_from_heading(80.0)),
        Pose("indoors", [7.0, 0.0, 3.0], level_rotation_from_heading(10.0)),  # flagged inside_building
        Pose("outside", [110.0, 0.0, 2.5], level_rotation_from_heading(270.0)),  # flagged outside_bounds
    ]
    settings = RenderSettings(width=256, threads=2, clip_end_m=30.0)  # the far box and most ground → sky
    _, blender = render_model(tmp_path, model, poses, settings)
    scene = RaycastScene(model, threads=2)
    for pose in poses:
        ray = scene.render(pose, 256, clip_end_m=settings.clip_end_m)
        _assert_agrees(blender[pose.image_id], ray, pose.image_id, min_compared=0.005)
    assert blender["indoors"].meta["inside_building"] and blender["outside"].meta["outside_bounds"]
    street = blender["street"]
    assert (street.depth_m < 30.0).all() and street.sky_mask[0, 64:].any()  # ground beyond clip_end → sky below the horizon


@pytest.mark.blender
def test_cycles_sample_offset_is_as_measured(tmp_path):
    """Depths of grazing planes resolve the ray direction to ~1e-5 px: Blender's single sample
    lands CYCLES_SAMPLE_OFFSET_PX from the pixel centre (the ray caster copies it)."""
    big = 5000.0
    ground = Mesh(np.array([[-big, -big, 0], [big, -big, 0], [big, big, 0], [-big, big, 0]]), np.array([[0, 1, 2], [0, 2, 3]]))
    wall = Mesh(np.array([[10, -big, -big], [10, big, -big], [10, big, big], [10, -big, big]]), np.array([[0, 1, 2], [0, 2, 3]]))
    w, h = 512, 256
    _, blender = render_model(tmp_path, CityModel({"ground": ground, "wall": wall}, b"", {}), [Pose("g", [0, 0, 2.5], level_rotation_from_heading(0.0))],
                              RenderSettings(width=w, threads=2))
    sim = blender["g"]
    d = sim.depth_m[0].astype(np.float64)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    lat = np.pi * (0.5 - (rows + 0.5) / h)
    lon = 2 * np.pi * (cols + 0.5) / w - np.pi
    g = (sim.label[0] == 1) & (d > 30)  # ground seen at grazing angles: the hit's latitude gives the row offset
    down_px = -(-np.arcsin(2.5 / d[g]) - lat[g]) / (np.pi / h)
    v = (sim.label[0] == 5) & (d > 200) & (np.abs(lat) < 0.3)  # the wall x = 10 seen nearly edge-on: longitude
    a = np.arcsin(np.clip(10 / (d[v] * np.cos(lat[v])), -1, 1))
    lon_hit = np.where(np.abs(a - lon[v]) < np.abs(np.pi - a - lon[v]), a, np.pi - a)
    right_px = (lon_hit - lon[v]) / (2 * np.pi / w)
    assert g.sum() > 500 and v.sum() > 50
    assert np.median(right_px) == pytest.approx(CYCLES_SAMPLE_OFFSET_PX[0], abs=1e-4)
    assert np.median(down_px) == pytest.approx(CYCLES_SAMPLE_OFFSET_PX[1], abs=1e-4)


# ---- the marker test of the renderer, for the ray caster (no Blender) ----------------------
@pytest.mark.parametrize("width, markers", [(512, MARKERS_512), pytest.param(2048, MARKERS_2048, marks=pytest.mark.slow)], ids=["512", "2048"])
def test_marker_centroids_match_projection_raycast(width, markers):
    scene = RaycastScene(sphere_city(markers), threads=2)
    poses = _poses()[::2] if width == 512 else [p for p in _poses() if p.image_id in ("geo03", "geo09", "geo12")]
    n_checked = 0
    for pose in poses:
        rows = _measure(pose, scene.render(pose, width), width, width // 2, markers)
        assert len(rows) >= 3, pose.image_id
        for r in rows:
            n_checked += 1
            assert np.linalg.norm(r["got"] - r["expected"]) <= 0.3, (pose.image_id, r)
            assert np.linalg.norm(r["got_spherical"] - r["projected"]) <= 0.3, (pose.image_id, r)
            assert r["mismatched_px"] <= 2, (pose.image_id, r)
    assert n_checked >= 3 * len(poses)
