import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.equirect import (
    bearing_to_pixel,
    pixel_to_bearing,
    pixel_to_ray_local,
    project_local_points,
)
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll

SIZES = st.sampled_from([(64, 32), (512, 256), (2048, 1024), (4096, 2048)])


@settings(max_examples=300, deadline=None)
@given(SIZES, st.floats(0, 1), st.floats(0, 1))
def test_pixel_bearing_round_trip(size, fu, fv):
    W, H = size
    px, py = -0.5 + fu * (W - 1e-6), -0.5 + fv * H
    b = pixel_to_bearing(px, py, W, H)
    assert np.isclose(np.linalg.norm(b), 1)
    out = bearing_to_pixel(b, W, H)
    assert abs(out[0] - px) < 1e-6 and abs(out[1] - py) < 1e-6


@settings(max_examples=300, deadline=None)
@given(SIZES, st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1))
def test_bearing_pixel_round_trip(size, x, y, z):
    v = np.array([x, y, z])
    if np.linalg.norm(v) < 1e-3:
        return
    W, H = size
    p = bearing_to_pixel(v, W, H)
    b = pixel_to_bearing(p[0], p[1], W, H)
    assert np.allclose(b, v / np.linalg.norm(v), atol=1e-9)


def test_layout_matches_opensfm_and_blender():
    W, H = 2048, 1024
    # forward (+z) is the centre column, right (+x) is the 3/4 column, up (−y) is the top row
    assert np.allclose(bearing_to_pixel([0, 0, 1], W, H), [(W - 1) / 2, (H - 1) / 2])
    assert np.allclose(bearing_to_pixel([1, 0, 0], W, H), [0.75 * W - 0.5, (H - 1) / 2])
    assert np.allclose(bearing_to_pixel([-1, 0, 0], W, H), [0.25 * W - 0.5, (H - 1) / 2])
    assert np.isclose(bearing_to_pixel([0, -1, 0], W, H)[1], -0.5)
    # Blender: λ = 2π(c+0.5)/W − π, φ = π(0.5 − (r+0.5)/H)
    c, r = 300.0, 700.0
    lam, phi = 2 * np.pi * (c + 0.5) / W - np.pi, np.pi * (0.5 - (r + 0.5) / H)
    b = pixel_to_bearing(c, r, W, H)
    assert np.allclose(b, [np.cos(phi) * np.sin(lam), -np.sin(phi), np.cos(phi) * np.cos(lam)])


def test_project_world_points_heading_right_is_clockwise():
    pose = Pose("p", [10.0, 20.0, 2.5], rotation_from_heading_pitch_roll(90.0, 0.0, 0.0))  # facing east
    W, H = 512, 256
    pts = np.array([[110.0, 20.0, 2.5], [10.0, -80.0, 2.5], [-90, 20, 2.5]])  # east, south, west
    px, d = project_local_points(pts, pose, W, H)
    assert np.allclose(px[0], [(W - 1) / 2, (H - 1) / 2])
    assert np.isclose(px[1, 0], 0.75 * W - 0.5)  # south is to the right when facing east
    assert np.allclose(d, 100.0)
    ray = pixel_to_ray_local(px[1, 0], px[1, 1], pose, W, H)
    assert np.allclose(ray, [0, -1, 0], atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 360), st.floats(-30, 30), st.floats(-30, 30), st.floats(-50, 50), st.floats(-50, 50), st.floats(-5, 20))
def test_world_projection_round_trip(h, p, r, x, y, z):
    pose = Pose("p", [0.0, 0.0, 2.5], rotation_from_heading_pitch_roll(h, p, r))
    X = np.array([x, y, z])
    if np.linalg.norm(X - pose.center_local_m) < 0.1:
        return
    W, H = 2048, 1024
    pix, dist = project_local_points(X, pose, W, H)
    ray = pixel_to_ray_local(pix[0], pix[1], pose, W, H)
    assert np.allclose(pose.center_local_m + ray * dist, X, atol=1e-6)


def test_rejects_non_2to1():
    with pytest.raises(ValueError, match="2:1"):
        bearing_to_pixel([0, 0, 1], 100, 100)
