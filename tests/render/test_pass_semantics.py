"""What each pass contains, checked per pixel against an analytic ray cast of a box scene:
DiffCol = class colour exactly, Normal = world face normal (unit), Depth = Euclidean distance (1 cm),
label = class index, sky: zeros + mask."""

from __future__ import annotations

import numpy as np
import pytest

from s2r_data.citymodel import CLASS_BY_NAME, CLASSES
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll
from s2r_data.render import RenderSettings

from .conftest import render_model
from .scene_kit import Box, box_city, interior, raycast

W, H = 512, 256
BOXES = [
    Box("wall", (10.0, -15.0, 0.0), (12.0, 15.0, 12.0)),  # face x = 10 looks −x
    Box("wall", (-14.0, -15.0, 0.0), (-12.0, 15.0, 9.0)),  # face x = −12 looks +x
    Box("water", (-11.0, 12.0, 0.0), (9.0, 14.0, 7.0)),  # face y = 12 looks −y
    Box("roof", (-11.0, -16.0, 0.0), (9.0, -14.0, 5.0)),  # face y = −14 looks +y
    Box("green", (2.0, 3.0, 0.0), (3.0, 4.0, 1.0)),
]
POSES = [
    Pose("level", [0.5, -1.0, 2.5], rotation_from_heading_pitch_roll(20.0, 0.0, 0.0)),
    Pose("tilted", [-1.0, 0.7, 1.8], rotation_from_heading_pitch_roll(250.0, 14.0, -9.0)),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    results, passes = render_model(tmp_path_factory.mktemp("sem"), box_city(BOXES), POSES, RenderSettings(width=W, threads=2))
    assert [r.status for r in results] == ["ok", "ok"]
    return {p.image_id: (p, passes[p.image_id], raycast(p, W, H, BOXES)) for p in POSES}


@pytest.mark.blender
@pytest.mark.parametrize("image_id", [p.image_id for p in POSES])
def test_labels_match_analytic(rendered, image_id):
    _, sim, cast = rendered[image_id]
    inner = interior(cast.box_id)
    assert inner.mean() > 0.9
    np.testing.assert_array_equal(sim.label[0][inner], cast.label[inner])
    assert (sim.label[0] == cast.label).mean() > 0.99
    assert set(np.unique(sim.label)) <= {c.index for c in CLASSES}


@pytest.mark.blender
@pytest.mark.parametrize("image_id", [p.image_id for p in POSES])
def test_diffcol_is_class_colour(rendered, image_id):
    _, sim, cast = rendered[image_id]
    inner = interior(cast.box_id)
    for c in CLASSES:
        m = inner & (cast.label == c.index)
        if not m.any():
            continue
        expected = np.asarray(c.colour_linear, dtype=np.float16)
        got = sim.diffcol[:, m].T
        np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape), err_msg=f"class {c.name}")


@pytest.mark.blender
@pytest.mark.parametrize("image_id", [p.image_id for p in POSES])
def test_normals_are_world_face_normals(rendered, image_id):
    _, sim, cast = rendered[image_id]
    inner = interior(cast.box_id) & (cast.box_id >= -1)
    n = sim.normal.astype(np.float64)
    length = np.linalg.norm(n[:, inner], axis=0)
    np.testing.assert_allclose(length, 1.0, atol=2e-3)
    np.testing.assert_allclose(n[:, inner], cast.normal[:, inner], atol=2e-3)
    west_wall = inner & (cast.box_id == 1)  # the face at x = −12 looks +x
    if west_wall.any():
        np.testing.assert_allclose(n[:, west_wall].mean(axis=1), [1.0, 0.0, 0.0], atol=1e-3)
    ground = inner & (cast.box_id == -1)
    np.testing.assert_allclose(n[:, ground].mean(axis=1), [0.0, 0.0, 1.0], atol=1e-3)


@pytest.mark.blender
@pytest.mark.parametrize("image_id", [p.image_id for p in POSES])
def test_depth_is_euclidean_metres(rendered, image_id):
    _, sim, cast = rendered[image_id]
    hit = interior(cast.box_id) & (cast.box_id >= 0)  # walls (ground at grazing angles is ill-conditioned)
    err = np.abs(sim.depth_m[0][hit] - cast.depth_m[hit])
    assert hit.sum() > 1000
    assert err.max() < 0.01, f"max depth error {err.max():.4f} m"
    ground = interior(cast.box_id) & (cast.box_id == -1) & (cast.depth_m < 50)
    assert np.abs(sim.depth_m[0][ground] - cast.depth_m[ground]).max() < 0.01


@pytest.mark.blender
@pytest.mark.parametrize("image_id", [p.image_id for p in POSES])
def test_sky_is_zero_and_masked(rendered, image_id):
    _, sim, cast = rendered[image_id]
    sky = interior(cast.box_id) & (cast.box_id == -2)
    assert sky.sum() > 1000
    assert sim.sky_mask[0][sky].all()
    assert (sim.depth_m[0][sky] == 0).all() and (sim.label[0][sky] == 0).all()
    assert (sim.diffcol[:, sky] == 0).all() and (sim.normal[:, sky] == 0).all()
    np.testing.assert_array_equal(sim.sky_mask[0], sim.label[0] == CLASS_BY_NAME["sky"].index)
    assert (sim.depth_m[0][~sim.sky_mask[0]] > 0).all()
