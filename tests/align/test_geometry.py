"""Pose vectors, corrections and projection Jacobians (property tests)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.align.pose_vector import PoseCorrection, PoseVector, pose_from_vector, vector_from_pose, wrap_deg
from s2r_data.align.projection import project, project_with_directions, projection_jacobian
from s2r_data.equirect import project_local_points
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll

angles = st.floats(-179.0, 179.0)
tilts = st.floats(-30.0, 30.0)
coords = st.floats(-500.0, 500.0)


def _pose(h, p, r, x, y, z=2.5) -> Pose:
    return Pose("t", [x, y, z], rotation_from_heading_pitch_roll(h, p, r))


@settings(max_examples=60, deadline=None)
@given(angles, tilts, tilts, coords, coords)
def test_vector_round_trip(h, p, r, x, y):
    pose = _pose(h, p, r, x, y)
    back = pose_from_vector(vector_from_pose(pose), pose)
    np.testing.assert_allclose(back.R_world_to_cam_opensfm, pose.R_world_to_cam_opensfm, atol=1e-9)
    np.testing.assert_allclose(back.center_local_m, pose.center_local_m, atol=1e-9)
    pv = PoseVector.of(pose)
    assert abs(wrap_deg(pv.heading_deg - h)) < 1e-6 and abs(pv.pitch_deg - p) < 1e-6 and abs(pv.roll_deg - r) < 1e-6


@settings(max_examples=60, deadline=None)
@given(angles, tilts, tilts, coords, coords, st.floats(-20, 20), st.floats(-5, 5), st.floats(-5, 5), st.floats(-3, 3), st.floats(-3, 3))
def test_correction_between_inverts_apply(h, p, r, x, y, dh, dp, dr, dx, dy):
    a = _pose(h, p, r, x, y)
    c = PoseCorrection(dh, dp, dr, dx, dy, 0.1)
    b = c.apply(a)
    back = PoseCorrection.between(a, b)
    np.testing.assert_allclose(back.to_list(), c.to_list(), atol=1e-6)
    assert math.isclose(back.horizontal_m, math.hypot(dx, dy), abs_tol=1e-9)


def test_wrap_deg():
    assert wrap_deg(190.0) == -170.0 and wrap_deg(-180.0) == 180.0 and wrap_deg(360.0) == 0.0
    np.testing.assert_allclose(wrap_deg(np.array([540.0, -190.0])), [180.0, 170.0])


@settings(max_examples=30, deadline=None)
@given(angles, st.floats(-10, 10), st.floats(-10, 10), st.integers(0, 2**31 - 1))
def test_projection_matches_equirect_and_its_jacobian(h, p, r, seed):
    rng = np.random.default_rng(seed)
    pose = _pose(h, p, r, 3.0, -2.0)
    X = rng.uniform([-40, -40, 0], [40, 40, 30], size=(50, 3))
    X = X[np.linalg.norm(X[:, :2] - pose.center_local_m[:2], axis=1) > 3]
    v = vector_from_pose(pose)
    px, py = project(X, v, 2048)
    ref, _ = project_local_points(X, pose, 2048, 1024)
    dx = (px - ref[:, 0] + 1024) % 2048 - 1024
    assert np.abs(dx).max() < 1e-6 and np.abs(py - ref[:, 1]).max() < 1e-6
    _, _, J = projection_jacobian(X, v, 2048)
    for k, step in enumerate([1e-5, 1e-5, 1e-5, 1e-4, 1e-4, 1e-4]):
        dv = np.zeros(6)
        dv[k] = step
        qx, qy = project(X, v + dv, 2048)
        fd = np.stack([((qx - px) + 1024) % 2048 - 1024, qy - py], axis=1) / step
        ok = np.abs(py - 511.5) < 400  # away from the poles
        np.testing.assert_allclose(J[ok, :, k], fd[ok], rtol=1e-3, atol=1e-2)


def test_vertical_world_lines_project_to_columns_for_a_level_camera():
    pose = _pose(37.0, 0.0, 0.0, 0.0, 0.0)
    X = np.array([[10.0, 5.0, 0.0]] * 3) + np.array([[0, 0, 0], [0, 0, 5], [0, 0, 10]])
    T = np.tile([[0.0, 0.0, 1.0]], (3, 1))
    px, py, d = project_with_directions(X, T, vector_from_pose(pose), 2048)
    assert np.ptp(px) < 1e-6
    np.testing.assert_allclose(np.abs(d[:, 1]), 1.0, atol=1e-6)
