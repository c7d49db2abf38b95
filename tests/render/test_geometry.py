"""Geometric exactness of the panorama camera: Blender's pixels vs the documented projection.

Sphere markers (triangle meshes) of distinct classes at known ``local_m`` positions are rendered
from cameras with real Mapillary rotations (tests/data/pose_records.json), explicit pitch/roll and
random rotations. Each marker's label mask is compared with (a) the mask predicted by casting every
pixel's ray (s2r_data.equirect.pixel_to_ray_local) against the marker's triangles analytically
(pixel centroids within 0.5 px), and (b) s2r_data.equirect.project_local_points of the sphere
centre: a sphere's silhouette is symmetric about its centre's direction, so the mask's
solid-angle-weighted mean viewing direction must project there (within 0.5 px). Spheres rather
than cubes: a cube's silhouette centroid is biased by perspective (≈0.8 px for a 0.5 m cube at 8 m
in a 2048-px pano). Wrong conventions (mirrored
longitude, camera→world instead of world→camera, y up instead of y down) must be far off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2r_data.citymodel import CLASS_BY_NAME
from s2r_data.equirect import project_local_points
from s2r_data.poses import Pose, rodrigues, rotation_from_heading_pitch_roll
from s2r_data.render import RenderSettings

from .conftest import render_model
from .scene_kit import Sphere, centroid_px, sphere_city, sphere_masks, spherical_centroid_px

POSE_RECORDS = Path(__file__).resolve().parents[1] / "data" / "pose_records.json"
CENTRE0 = np.array([0.4, -0.3, 2.5])
MARKER_CENTRES = [
    ("road", np.array([8.0, 1.0, 3.0])),
    ("water", np.array([-2.0, 9.0, 1.2])),
    ("green", np.array([-9.0, -3.0, 5.0])),
    ("wall", np.array([3.0, -8.0, 0.8])),
    ("roof", np.array([5.0, 6.0, 7.5])),
]


def _markers(radius_m: float) -> list[Sphere]:
    return [Sphere(name, tuple(c), radius_m) for name, c in MARKER_CENTRES]


MARKERS_512 = _markers(0.35)  # ≈7 px across at 512
MARKERS_2048 = _markers(0.2)  # ≈15 px across at 2048


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _poses() -> list[Pose]:
    rng = np.random.default_rng(20240611)
    records = json.loads(POSE_RECORDS.read_text())["records"]
    rotations = [rodrigues(r["computed_rotation"]) for r in records]
    rotations += [rotation_from_heading_pitch_roll(37.0, 12.0, -8.0), rotation_from_heading_pitch_roll(200.0, -25.0, 15.0)]
    rotations += [_random_rotation(rng) for _ in range(3)]
    return [Pose(f"geo{k:02d}", CENTRE0 + rng.uniform(-0.5, 0.5, 3) * [1, 1, 0.4], R) for k, R in enumerate(rotations)]


def _measure(pose: Pose, passes, width: int, height: int, markers: list[Sphere]) -> list[dict]:
    """Per usable marker: rendered centroid, analytic centroid, projected centre, hypotheses."""
    masks = sphere_masks(pose, width, height, markers)
    label = passes.label[0]
    rows = []
    for marker, expected in zip(markers, masks):
        if expected.sum() < 3 or expected[:, 0].any() or expected[:, -1].any():
            continue  # hidden, or on the longitude seam (centroid would wrap)
        got = label == CLASS_BY_NAME[marker.class_name].index
        R = pose.R_world_to_cam_opensfm
        c = np.asarray(marker.center)
        hyp = {
            "mirrored_longitude": project_local_points(c, pose, width, height)[0] * [-1, 1] + [width - 1, 0],
            "cam_to_world_R": project_local_points(c, Pose("h", pose.center_local_m, R.T), width, height)[0],
            "y_up": project_local_points(c, Pose("h", pose.center_local_m, np.diag([1.0, -1.0, 1.0]) @ R), width, height)[0],
        }
        rows.append({
            "got": centroid_px(got), "expected": centroid_px(expected),
            "got_spherical": spherical_centroid_px(got), "projected": project_local_points(c, pose, width, height)[0],
            "mismatched_px": int((got != expected).sum()), "n_px": int(expected.sum()), "hyp": hyp,
        })
    return rows


@pytest.fixture(scope="module")
def renders_512(tmp_path_factory):
    poses = _poses()
    results, passes = render_model(tmp_path_factory.mktemp("geo512"), sphere_city(MARKERS_512), poses, RenderSettings(width=512, threads=2))
    assert [r.status for r in results] == ["ok"] * len(poses)
    return {pose.image_id: _measure(pose, passes[pose.image_id], 512, 256, MARKERS_512) for pose in poses}


@pytest.mark.blender
def test_marker_centroids_match_projection_512(renders_512):
    n_checked = 0
    for image_id, rows in renders_512.items():
        assert len(rows) >= 3, f"{image_id}: too few visible markers to check"
        for r in rows:
            n_checked += 1
            assert np.linalg.norm(r["got"] - r["expected"]) < 0.5, (image_id, r)
            assert np.linalg.norm(r["got_spherical"] - r["projected"]) < 0.5, (image_id, r)
            assert r["mismatched_px"] <= max(2, 0.1 * r["n_px"]), (image_id, r)
    assert n_checked >= 3 * len(renders_512)


@pytest.mark.blender
def test_wrong_conventions_are_far_off(renders_512):
    errors: dict[str, list[float]] = {}
    for rows in renders_512.values():
        for r in rows:
            for name, px in r["hyp"].items():
                errors.setdefault(name, []).append(float(np.linalg.norm(r["got"] - px)))
    assert set(errors) == {"mirrored_longitude", "cam_to_world_R", "y_up"}
    for name, errs in errors.items():
        assert np.median(errs) > 5.0, f"hypothesis {name} is not distinguishable: median error {np.median(errs):.2f} px"


@pytest.mark.blender
@pytest.mark.slow
def test_marker_centroids_match_projection_2048(tmp_path):
    poses = [p for p in _poses() if p.image_id in ("geo03", "geo09", "geo12")]
    _, passes = render_model(tmp_path, sphere_city(MARKERS_2048), poses, RenderSettings(width=2048, threads=2))
    for pose in poses:
        rows = _measure(pose, passes[pose.image_id], 2048, 1024, MARKERS_2048)
        assert len(rows) >= 3
        for r in rows:
            assert np.linalg.norm(r["got"] - r["expected"]) < 0.5, (pose.image_id, r)
            assert np.linalg.norm(r["got_spherical"] - r["projected"]) < 0.5, (pose.image_id, r)
            assert r["mismatched_px"] <= max(2, 0.1 * r["n_px"]), (pose.image_id, r)
