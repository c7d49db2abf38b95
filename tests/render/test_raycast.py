"""The ray-cast core (s2r_data.render.raycast) against exact analytic answers (no Blender needed):
box scenes cast analytically (scene_kit.raycast), single triangles (hypothesis), the cast /
occluded / render API contract, chunking and threads, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from s2r_data.citymodel import CLASS_BY_NAME, CLASSES, CityModel, CityModelError, Mesh
from s2r_data.equirect import pixel_to_ray_local
from s2r_data.poses import Pose, level_rotation_from_heading, rotation_from_heading_pitch_roll
from s2r_data.render.pose_checks import InvalidPoseError
from s2r_data.render.raycast import RaycastScene, equirect_row_directions_cam
from s2r_data.render.settings import CLIP_START_M, MAX_WIDTH_PX

from .scene_kit import Box, box_city, raycast

BOXES = [
    Box("wall", (10.0, -15.0, 0.0), (12.0, 15.0, 12.0)),
    Box("water", (-11.0, 12.0, 0.0), (9.0, 14.0, 7.0)),
    Box("roof", (-11.0, -16.0, 0.0), (9.0, -14.0, 5.0)),
    Box("green", (2.0, 3.0, 0.0), (3.0, 4.0, 1.0)),
]
POSES = [
    Pose("level", [0.5, -1.0, 2.5], rotation_from_heading_pitch_roll(20.0, 0.0, 0.0)),
    Pose("tilted", [-1.0, 0.7, 1.8], rotation_from_heading_pitch_roll(250.0, 14.0, -9.0)),
    Pose("rolled", [3.0, 2.0, 4.0], rotation_from_heading_pitch_roll(120.0, -35.0, 40.0)),
]


@pytest.fixture(scope="module")
def scene():
    with RaycastScene(box_city(BOXES, ground_half_m=60.0, footprint_boxes=BOXES[:1]), threads=2) as s:
        yield s


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b, axis=0), axis=0), (a * b).sum(0)))


@pytest.mark.parametrize("pose", POSES, ids=lambda p: p.image_id)
def test_render_matches_analytic_box_scene(scene, pose):
    w, h = 256, 128
    got = scene.render(pose, w)
    ref = raycast(pose, w, h, BOXES, ground_half_m=60.0)
    # sampled 0.0005 px off-centre like Cycles: only pixels whose ray grazes an edge may differ
    assert (got.label[0] != ref.label).sum() <= 2
    same = (got.label[0] == ref.label) & (ref.label > 0)
    assert np.abs(got.depth_m[0] - ref.depth_m)[same].max() < 0.05
    assert np.median(np.abs(got.depth_m[0] - ref.depth_m)[same]) < 1e-3
    assert _angle_deg(got.normal, ref.normal)[same].max() < 0.1
    assert np.array_equal(got.sky_mask[0], got.label[0] == 0)
    assert ((got.sky_mask[0] != (ref.label == 0)) <= (got.label[0] != ref.label)).all()
    colours = np.array([c.colour_linear for c in CLASSES], np.float16)
    assert np.array_equal(got.diffcol, colours[got.label[0]].transpose(2, 0, 1))
    sky = got.sky_mask[0]
    assert not got.normal[:, sky].any() and not got.depth_m[:, sky].any() and not got.diffcol[:, sky].any()
    assert got.meta["backend"] == "raycast" and got.meta["image_id"] == pose.image_id


def test_pixel_directions_are_the_equirect_model():
    w, h = 64, 32
    px, py = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    pose = Pose("p", [0, 0, 0], np.eye(3))
    ref = pixel_to_ray_local(px, py, pose, w, h)
    assert np.allclose(equirect_row_directions_cam(w, 0, h), ref, atol=1e-12)
    assert np.allclose(equirect_row_directions_cam(w, 5, 9), ref[5:9], atol=1e-12)


def test_back_faces_normals_face_the_viewer(scene):
    # inside the wall box every hit is a back face (outward normals): the normal must still face the camera
    inside = Pose("inside", [11.0, 0.0, 5.0], level_rotation_from_heading(0.0))
    got = scene.render(inside, 128)
    hit = ~got.sky_mask[0]
    assert hit.all()
    d = equirect_row_directions_cam(128, 0, 64) @ inside.R_world_to_cam_opensfm
    assert ((got.normal.astype(np.float64).transpose(1, 2, 0) * d).sum(-1)[hit] <= 1e-6).all()
    assert got.meta["inside_building"] and not got.meta["outside_bounds"]


def test_cast_api_contract(scene):
    o = np.array([0.5, -1.0, 2.5])
    dirs = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 0, -1.0], [-1.0, 0, 0]])
    hits = scene.cast(o, dirs)
    assert hits.dist_m.dtype == np.float32 and hits.class_index.dtype == np.uint8
    assert hits.normal_local.dtype == np.float32 and hits.tri_index.dtype == np.int64
    assert hits.dist_m[0] == pytest.approx(9.5, abs=1e-5) and hits.class_index[0] == CLASS_BY_NAME["wall"].index
    assert np.allclose(hits.normal_local[0], [-1, 0, 0])
    assert hits.dist_m[1] == np.inf and hits.class_index[1] == 0 and hits.tri_index[1] == -1 and not hits.normal_local[1].any()
    assert hits.dist_m[2] == pytest.approx(2.5, abs=1e-5) and np.allclose(hits.normal_local[2], [0, 0, 1])
    assert np.array_equal(hits.hit, [True, False, True, False])  # ground ends at −60 m... the −x ray hits nothing
    assert scene.triangle_classes[hits.tri_index[0]] == CLASS_BY_NAME["wall"].index
    # max_dist_m cuts hits; per-ray origins give the same as a broadcast origin
    near = scene.cast(o, dirs, max_dist_m=5.0)
    assert near.dist_m[0] == np.inf and near.dist_m[2] == pytest.approx(2.5, abs=1e-5)
    assert np.array_equal(scene.cast(np.tile(o, (4, 1)), dirs).tri_index, hits.tri_index)
    # from below the ground plane the ground's normal faces down (towards the origin)
    below = scene.cast(np.array([0.0, 0.0, -1.0]), np.array([[0.0, 0.0, 1.0]]))
    assert np.allclose(below.normal_local[0], [0, 0, -1]) and below.dist_m[0] == pytest.approx(1.0, abs=1e-5)


def test_cast_rejects_bad_rays(scene):
    with pytest.raises(ValueError, match="unit"):
        scene.cast(np.zeros(3), np.array([[2.0, 0, 0]]))
    with pytest.raises(ValueError, match="finite"):
        scene.cast(np.array([np.nan, 0, 0]), np.array([[1.0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        scene.cast(np.zeros(3), np.array([1.0, 0, 0]))


def test_occluded(scene):
    o = np.array([0.5, -1.0, 2.5])
    targets = np.array([
        [20.0, 0.0, 2.5],  # behind the wall box at x = 10..12
        [5.0, -1.0, 2.5],  # in front of it
        [10.0, -1.0, 2.5],  # on the wall's face: not occluded by itself (eps)
        [0.5, -1.0, 2.5],  # the origin itself
        [0.5, -1.0, -3.0],  # below the ground
    ])
    assert scene.occluded(o, targets).tolist() == [True, False, False, False, True]
    assert scene.occluded(np.tile(o, (5, 1)), targets).tolist() == [True, False, False, False, True]


def test_rows_band_renders_only_those_rows(scene):
    pose = POSES[1]
    full = scene.render(pose, 128)
    band = scene.render(pose, 128, rows=(20, 41))
    assert np.array_equal(band.label[:, 20:41], full.label[:, 20:41])
    assert np.array_equal(band.depth_m[:, 20:41], full.depth_m[:, 20:41])
    assert not band.label[:, :20].any() and not band.label[:, 41:].any() and band.sky_mask[:, :20].all()
    assert band.meta["rows"] == [20, 41]
    with pytest.raises(ValueError, match="rows"):
        scene.render(pose, 128, rows=(40, 20))


def test_chunks_and_threads_do_not_change_pixels():
    model = box_city(BOXES, ground_half_m=60.0)
    pose = POSES[2]
    a = RaycastScene(model, threads=1, chunk_rays=1 << 20).render(pose, 256)
    b = RaycastScene(model, threads=3, chunk_rays=300).render(pose, 256)
    for name in ("diffcol", "normal", "depth_m", "label", "sky_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_clip_end_is_sky_and_near_clip_hides_close_surfaces(scene):
    pose = POSES[0]
    far = scene.render(pose, 128)
    near = scene.render(pose, 128, clip_end_m=8.0)
    assert (far.depth_m[~far.sky_mask] >= 8.0).any()
    assert (near.depth_m[~near.sky_mask] < 8.0).all() and near.sky_mask.sum() > far.sky_mask.sum()
    # a camera CLIP_START_M / 2 from the wall face does not see it
    hug = Pose("hug", [10.0 - CLIP_START_M / 2, 0.0, 5.0], level_rotation_from_heading(90.0))
    centre = scene.render(hug, 128).depth_m[0, 32, 64]
    assert centre > 1.0  # it sees through to the far side of the box (a back face), not the face at 2.5 cm


def test_bad_inputs_raise_one_clear_error(scene):
    with pytest.raises(CityModelError, match="no triangles"):
        RaycastScene(CityModel({}, b"", {"city": "empty"}))
    v = np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], float)
    with pytest.raises(CityModelError, match="'wall' vertices are not finite"):
        RaycastScene(CityModel({"wall": Mesh(v, np.array([[0, 1, 2]]))}, b"", {}))
    with pytest.raises(InvalidPoseError, match="nanpose.*not finite"):
        scene.render(Pose("nanpose", [np.nan, 0, 2], np.eye(3)), 64)
    with pytest.raises(InvalidPoseError, match="skewed.*not a proper rotation"):
        scene.render(Pose("skewed", [0, 0, 2], np.diag([1.0, 1.0, 1.1])), 64)
    with pytest.raises(InvalidPoseError, match="not a proper rotation"):
        scene.render(Pose("mirror", [0, 0, 2], np.diag([1.0, 1.0, -1.0])), 64)
    for width in (65, 4, MAX_WIDTH_PX + 2, 10**9, 64.0):
        with pytest.raises(ValueError, match="even integer"):
            scene.render(POSES[0], width)  # type: ignore[arg-type]


@hsettings(max_examples=60, deadline=None)
@given(
    tri=st.lists(st.floats(-20, 20, allow_nan=False), min_size=9, max_size=9),
    bary=st.tuples(st.floats(0.05, 0.9), st.floats(0.05, 0.9)),
    origin=st.lists(st.floats(-30, 30, allow_nan=False), min_size=3, max_size=3),
)
def test_cast_hits_a_random_triangle_where_geometry_says(tri, bary, origin):
    v = np.array(tri, float).reshape(3, 3)
    n = np.cross(v[1] - v[0], v[2] - v[0])
    area2 = np.linalg.norm(n)
    if area2 < 1.0 or min(np.linalg.norm(v[i] - v[j]) for i, j in ((0, 1), (1, 2), (0, 2))) < 1.0:
        return  # sliver: no well-defined interior point
    a, b = bary
    if a + b > 0.95:
        a, b = a / (a + b) * 0.9, b / (a + b) * 0.9
    target = v[0] + a * (v[1] - v[0]) + b * (v[2] - v[0])
    o = np.array(origin, float)
    to = target - o
    dist = np.linalg.norm(to)
    if dist < 0.5 or abs(np.dot(to / dist, n / area2)) < 0.05:
        return  # too close or too grazing for a float32 BVH to be decisive
    scene = RaycastScene(CityModel({"wall": Mesh(v, np.array([[0, 1, 2]]))}, b"", {}), threads=1)
    hits = scene.cast(o, (to / dist)[None, :])
    assert hits.tri_index[0] == 0
    assert hits.dist_m[0] == pytest.approx(dist, abs=1e-3 * max(1.0, dist))
    assert np.dot(hits.normal_local[0], to) < 0  # faces the origin
    assert abs(abs(np.dot(hits.normal_local[0], n / area2)) - 1) < 1e-5


def test_memory_beyond_the_outputs_is_bounded_at_4096():
    import tracemalloc

    scene = RaycastScene(box_city(BOXES, ground_half_m=60.0), threads=2)
    pose = POSES[1]
    scene.render(pose, 64)  # warm-up (tables, thread pool)
    outputs_bytes = 4096 * 2048 * (3 * 2 + 3 * 2 + 4 + 1 + 1)  # diffcol, normal f16; depth f32; label, sky
    tracemalloc.start()
    try:
        passes = scene.render(pose, 4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert passes.width == 4096
    assert peak - outputs_bytes < 48 * 2**20, f"temporaries peaked at {(peak - outputs_bytes) / 2**20:.0f} MiB beyond the outputs"


def test_render_many_is_render_per_pose(scene):
    many = list(scene.render_many(POSES, 64))
    assert [p.meta["image_id"] for p in many] == [p.image_id for p in POSES]
    for pose, got in zip(POSES, many):
        assert np.array_equal(got.depth_m, scene.render(pose, 64).depth_m)
    reused = [p.label.copy() for p in scene.render_many(POSES, 64, reuse_arrays=True)]
    assert all(np.array_equal(a, b.label) for a, b in zip(reused, many))
