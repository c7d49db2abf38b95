import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.frames import LocalFrame
from s2r_data.poses import (
    Pose,
    PoseError,
    heading_pitch_roll_deg,
    level_rotation_from_heading,
    matrix_world_blender,
    pose_from_mapillary,
    rodrigues,
    rotation_from_heading_pitch_roll,
    rotvec_from_matrix,
)

RECORDS = json.loads((Path(__file__).parent / "data" / "pose_records.json").read_text())["records"]


def frame_at(rec, d_lon=0.0):
    lon, lat = rec["computed_geometry"]["coordinates"]
    return LocalFrame(lon + d_lon, lat)


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_forward_heading_equals_computed_compass_angle(rec):
    pose = pose_from_mapillary(rec, frame_at(rec))
    fwd = pose.R_world_to_cam_opensfm[2]
    heading = np.degrees(np.arctan2(fwd[0], fwd[1])) % 360
    diff = (heading - rec["computed_compass_angle"] + 180) % 360 - 180
    assert abs(diff) < 0.01


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_camera_to_world_reading_is_far_off(rec):
    # the documented trap: reading computed_rotation as camera→world gives a wrong heading
    # (~180° off for the upright perspective cameras, 9° for the pitched/rolled pano)
    R = rodrigues(rec["computed_rotation"]).T
    heading = np.degrees(np.arctan2(R[2, 0], R[2, 1])) % 360
    diff = (heading - rec["computed_compass_angle"] + 180) % 360 - 180
    assert abs(diff) > 5


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_heading_in_a_distant_city_frame_includes_meridian_convergence(rec):
    # 0.1° of longitude west of the reference: the grid heading differs from the true heading by γ
    f = frame_at(rec, d_lon=0.1)
    pose = pose_from_mapillary(rec, f)
    lon, lat = rec["computed_geometry"]["coordinates"]
    gamma = np.degrees(float(f.grid_convergence_rad(lon, lat)))
    assert abs(gamma) > 0.05
    diff = (pose.heading_deg - (rec["computed_compass_angle"] + gamma) + 180) % 360 - 180
    assert abs(diff) < 0.01


def test_confidence_flags():
    by_id = {r["id"]: r for r in RECORDS}
    for rid in ("311681117131457", "4235112816526838", "464249047982277"):
        assert pose_from_mapillary(by_id[rid], frame_at(by_id[rid])).confidence == "low"
    assert pose_from_mapillary(by_id["1386976845208976"], frame_at(by_id["1386976845208976"])).confidence == "sfm"


def test_spherical_record_without_geometry_uses_computed_geometry():
    rec = next(r for r in RECORDS if r["camera_type"] == "spherical")
    assert "geometry" not in rec
    pose = pose_from_mapillary(rec, frame_at(rec), ground_z_m=1.0, mount_height_m=2.0)
    assert np.allclose(pose.center_local_m, [0, 0, 3.0], atol=1e-6)
    assert pose.image_id == "1386976845208976"


def test_compass_fallback_is_level_and_flagged():
    rec = {"id": 7, "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}, "computed_compass_angle": 30.0}
    pose = pose_from_mapillary(rec, LocalFrame(2.35, 48.85))
    assert pose.confidence == "compass" and pose.image_id == "7"
    h, p, r = heading_pitch_roll_deg(pose.R_world_to_cam_opensfm)
    assert abs(h - 30) < 1e-6 and abs(p) < 1e-9 and abs(r) < 1e-9


@pytest.mark.parametrize(
    "rec, reason",
    [
        ({"id": "1", "computed_rotation": [0, 0, 0]}, "no_position"),
        ({"id": "1", "geometry": {"coordinates": [2.35, 48.85]}}, "no_orientation"),
        ({"id": "1", "geometry": {"coordinates": [2.35, 48.85]}, "computed_rotation": [0, "x"]}, "bad_rotation"),
        ({"id": "1", "geometry": {"coordinates": [2.35, 48.85]}, "computed_rotation": [0, float("nan"), 0]}, "bad_rotation"),
        ({"id": "1", "geometry": {"coordinates": [200, 48.85]}, "compass_angle": 3}, "no_position"),
    ],
)
def test_unusable_records_raise_with_reason(rec, reason):
    with pytest.raises(PoseError) as e:
        pose_from_mapillary(rec, LocalFrame(2.35, 48.85))
    assert e.value.reason == reason and "image 1" in str(e.value)


rotvecs = st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3)


@settings(max_examples=300, deadline=None)
@given(rotvecs)
def test_rodrigues_orthonormal_det_plus_one(r):
    R = rodrigues(r)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(rodrigues(rotvec_from_matrix(R)), R, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 359.99), st.floats(-80, 80), st.floats(-170, 170))
def test_heading_pitch_roll_round_trip(h, p, r):
    R = rotation_from_heading_pitch_roll(h, p, r)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1)
    h2, p2, r2 = heading_pitch_roll_deg(R)
    assert np.allclose(rotation_from_heading_pitch_roll(h2, p2, r2), R, atol=1e-9)
    assert abs(p2 - p) < 1e-6


def test_pitch_up_looks_up_and_roll_sign():
    R = rotation_from_heading_pitch_roll(0, 10, 0)
    assert R[2, 2] > 0  # forward has a positive up component
    R = rotation_from_heading_pitch_roll(0, 0, 10)
    # clockwise roll (seen from behind): the camera's right axis dips below the horizon
    assert R[0, 2] < 0


@settings(max_examples=200, deadline=None)
@given(rotvecs, st.floats(-100, 100), st.floats(-100, 100))
def test_blender_matrix_world(r, x, y):
    R = rodrigues(r)
    pose = Pose("p", [x, y, 2.5], R)
    M = matrix_world_blender(pose)
    Rb = M[:3, :3]
    assert np.allclose(Rb @ Rb.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(Rb), 1)
    # Blender camera looks down its −z: that is OpenSfM +z (row 3 of R) in the world
    assert np.allclose(Rb @ [0, 0, -1], R[2], atol=1e-12)
    # Blender +y (image up) is OpenSfM −y
    assert np.allclose(Rb @ [0, 1, 0], -R[1], atol=1e-12)
    assert np.allclose(M[:3, 3], [x, y, 2.5])


def test_level_camera_facing_north_has_blender_euler_90_0_0():
    # blender-passes notes §1.2: rotation_euler (90°, 0, −h) is a level camera at heading h
    pose = Pose("p", [0, 0, 0], level_rotation_from_heading(0.0))
    Rx90 = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    assert np.allclose(matrix_world_blender(pose)[:3, :3], Rx90, atol=1e-12)


def test_pose_dict_round_trip():
    rec = RECORDS[-1]
    pose = pose_from_mapillary(rec, frame_at(rec))
    back = Pose.from_dict(json.loads(json.dumps(pose.to_dict())))
    assert back.image_id == pose.image_id and back.confidence == pose.confidence
    assert np.allclose(back.R_world_to_cam_opensfm, pose.R_world_to_cam_opensfm)
    assert np.allclose(back.center_local_m, pose.center_local_m)
