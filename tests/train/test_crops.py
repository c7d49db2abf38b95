"""Perspective-crop geometry against s2r_data.equirect; samplers; pyramid level; no NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data import equirect
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll
from s2r_train import crops

angles = dict(
    yaw=st.floats(0, 360, allow_nan=False),
    pitch=st.floats(-90, 90, allow_nan=False),
    fov=st.floats(20, 150, allow_nan=False),
)


def _dx(a, b, W):
    return np.remainder(a - b + W / 2, W) - W / 2


@settings(max_examples=60, deadline=None)
@given(**angles)
def test_map_is_equirect_projection_of_crop_rays(yaw, pitch, fov):
    H, W = 64, 128
    px, py = crops.perspective_map(yaw, pitch, fov, (9, 7), (H, W), dtype=np.float64)
    rays_pano = crops.crop_rays(fov, 9, 7) @ crops.crop_rotation(yaw, pitch).T
    ref = equirect.bearing_to_pixel(rays_pano, W, H)
    assert np.abs(_dx(px, ref[..., 0], W)).max() < 1e-6
    assert np.abs(py - ref[..., 1]).max() < 1e-6
    assert px.min() >= -0.5 and px.max() < W - 0.5  # wrapped like equirect's valid range
    # the batched torch path agrees with the fp64 reference
    qx, qy = [t[0].numpy() for t in crops.perspective_map_torch([yaw], [pitch], [fov], (9, 7), (H, W))]
    assert np.abs(_dx(qx, px, W)).max() < 1e-3 and np.abs(qy - py).max() < 1e-3


@settings(max_examples=80, deadline=None)
@given(**angles, flip=st.booleans())
def test_crop_grid_is_the_planned_local_map(yaw, pitch, fov, flip):
    """crop_grid (the CPU loader's fast map) = perspective_map → plan_region → RegionPlan.local
    minus the tap box origin, flipped maps mirrored, rows clamped into the box."""
    H, W, c = 128, 256, 32
    px, py = crops.perspective_map(yaw, pitch, fov, (24, 20), (H, W), dtype=np.float64)
    if flip:
        px, py = px[:, ::-1], py[:, ::-1]
    want_plan = crops.plan_region(px, py, (H, W), (c, c))
    plan, x, y = crops.crop_grid(yaw, pitch, fov, (24, 20), (H, W), (c, c), flip=flip)
    assert x.shape == y.shape == (24, 20) and x.dtype == y.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(y).all()
    assert plan == want_plan
    wx, wy = plan.local(px, py, W)
    y0, y1, x0, _ = plan.bbox
    assert np.abs(_dx(x + x0, wx, W)).max() < 2e-3
    assert np.abs(np.clip(y + y0, y0, y1 - 1) - wy).max() < 2e-3


def test_flipped_crop_grid_is_a_bit_exact_mirror():
    for view in ((33.0, 10.0, 90.0), (300.0, 55.0, 120.0), (179.0, -20.0, 64.0)):
        pa, xa, ya = crops.crop_grid(*view, (40, 40), (128, 256), (32, 32))
        pb, xb, yb = crops.crop_grid(*view, (40, 40), (128, 256), (32, 32), flip=True)
        assert pa == pb
        np.testing.assert_array_equal(xb, xa[:, ::-1])
        np.testing.assert_array_equal(yb, ya[:, ::-1])


def test_crop_axes():
    R = crops.crop_rotation(90.0, 0.0)
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)  # yaw 90 looks along pano +x (right)
    R = crops.crop_rotation(0.0, 30.0)
    np.testing.assert_allclose(R[:, 2], [0, -0.5, math.sqrt(3) / 2], atol=1e-12)  # pitch up: towards −y
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    # centre of a yaw-0, pitch-0 crop is the panorama's forward column, horizon row
    px, py = crops.perspective_map(0.0, 0.0, 90.0, (5, 5), (64, 128))
    assert px[2, 2] == pytest.approx(63.5) and py[2, 2] == pytest.approx(31.5)


@settings(max_examples=30, deadline=None)
@given(
    heading=st.floats(0, 360), cam_pitch=st.floats(-5, 5), cam_roll=st.floats(-5, 5),
    az=st.floats(-180, 180), el=st.floats(-20, 50), dist=st.floats(3, 80),
    dyaw=st.floats(-15, 15), dpitch=st.floats(-15, 15), fov=st.floats(60, 120),
)
def test_world_point_lands_where_expected(heading, cam_pitch, cam_roll, az, el, dist, dyaw, dpitch, fov):
    """A world point seen by the panorama (s2r_data.equirect) appears at its pinhole projection
    in a crop aimed near it, and the crop's map at that pixel points back to it."""
    W, H = 2048, 1024
    pose = Pose("p", np.array([10.0, -4.0, 2.5]), rotation_from_heading_pitch_roll(heading, cam_pitch, cam_roll))
    # a point at azimuth/elevation (pano frame) and distance
    b = np.array([math.cos(math.radians(el)) * math.sin(math.radians(az)), -math.sin(math.radians(el)),
                  math.cos(math.radians(el)) * math.cos(math.radians(az))])
    X = pose.center_local_m + dist * (pose.R_world_to_cam_opensfm.T @ b)
    pano_px, pano_py = equirect.project_local_points(X[None], pose, W, H)[0][0]
    yaw, pitch = (az + dyaw) % 360, el + dpitch
    R = crops.crop_rotation(yaw, pitch)
    c = R.T @ (pose.R_world_to_cam_opensfm @ (X - pose.center_local_m))  # crop cam_opensfm
    n = 257
    f = (n / 2) / math.tan(math.radians(fov) / 2)
    u, v = f * c[0] / c[2] + (n - 1) / 2, f * c[1] / c[2] + (n - 1) / 2
    assert c[2] > 0 and 0 <= u <= n - 1 and 0 <= v <= n - 1
    px, py = crops.perspective_map(yaw, pitch, fov, (n, n), (H, W), dtype=np.float64)
    # bilinear-interpolate the map at (u, v): it must give the pano pixel of X
    i0, j0 = min(int(v), n - 2), min(int(u), n - 2)
    fy, fx = v - i0, u - j0
    def interp(m):
        m = m.astype(np.float64)
        return ((1 - fy) * ((1 - fx) * m[i0, j0] + fx * m[i0, j0 + 1]) + fy * ((1 - fx) * m[i0 + 1, j0] + fx * m[i0 + 1, j0 + 1]))
    # unwrap px around the target before interpolating
    pxu = pano_px + _dx(px, pano_px, W)
    assert interp(pxu) == pytest.approx(pano_px, abs=0.05)
    assert interp(py) == pytest.approx(pano_py, abs=0.05)


def test_no_nan_in_100k_random_draws_including_poles():
    rng = np.random.default_rng(0)
    n = 100_000
    yaw = rng.uniform(0, 360, n)
    pitch = np.concatenate([rng.uniform(-90, 90, n - 6), [90, -90, 89.9999, -89.9999, 90, -90]])
    fov = np.concatenate([rng.uniform(60, 120, n - 6), [60, 120, 120, 120, 179, 1]])
    for s in range(0, n, 50_000):
        sl = slice(s, s + 50_000)
        px, py = crops.perspective_map_torch(yaw[sl], pitch[sl], fov[sl], (5, 5), (1024, 2048))  # corners + centre
        assert torch.isfinite(px).all() and torch.isfinite(py).all()
        assert px.min() >= -0.5 and px.max() < 2048 - 0.5 and py.min() >= -0.5 - 1e-3 and py.max() <= 1023.5 + 1e-3
    for p in (90.0, -90.0, 89.99999, -89.99999):  # the loader's fp32 map at the poles
        for flip in (False, True):
            _, x, y = crops.crop_grid(0.0, p, 120.0, (256, 256), (1024, 2048), (256, 256), flip=flip)
            assert np.isfinite(x).all() and np.isfinite(y).all()


def test_pyramid_level_matches_pixel_size():
    assert crops.pyramid_level(60, 256, 2048, 3) == 0  # footprint 1.33 → level 0
    assert crops.pyramid_level(90, 256, 2048, 3) == 1  # footprint 2 → level 1
    assert crops.pyramid_level(120, 256, 2048, 3) == 1  # footprint 2.67 → level 1
    assert crops.pyramid_level(120, 64, 2048, 3) == 3  # footprint 10.7
    assert crops.pyramid_level(120, 64, 2048, 1) == 1  # clamped to the stored levels
    levels = [crops.pyramid_level(f, 256, 2048, 4) for f in range(10, 170, 5)]
    assert levels == sorted(levels)


def _views(rng, n):
    for _ in range(n):
        yield rng.uniform(0, 360), rng.uniform(-90, 90), rng.uniform(30, 120)


def _sample_box(box, x, y, mode):
    """Reference sampler of a (C, h, w) box at box pixel coordinates, clamped to the box."""
    h, w = box.shape[1:]
    grid = torch.from_numpy(np.stack([x / (w - 1) * 2 - 1, y / (h - 1) * 2 - 1], -1))[None].float()
    return torch.nn.functional.grid_sample(torch.from_numpy(box)[None], grid, mode=mode, padding_mode="border",
                                           align_corners=True)[0].numpy()


def test_region_plan_reads_every_tap():
    """Sampling only the planned chunks (cut to the tap box) at crop_grid's coordinates equals
    sampling the whole image (seam and poles too)."""
    rng = np.random.default_rng(1)
    H, W, c = 128, 256, 32
    img = rng.random((3, H, W)).astype(np.float32)
    views = list(_views(rng, 150)) + [(179.9, 0, 60), (0.1, 0, 100), (0, 89, 60), (200, -80, 120)]
    for yaw, pitch, fov in views:
        px, py = crops.perspective_map(yaw, pitch, fov, (48, 48), (H, W))
        plan, x, y = crops.crop_grid(yaw, pitch, fov, (48, 48), (H, W), (c, c))
        rows = np.concatenate([np.arange(r * c, (r + 1) * c) for r in plan.chunk_rows])
        cols = np.concatenate([np.arange(k * c, (k + 1) * c) for k in plan.chunk_cols])
        y0, y1, x0, x1 = plan.bbox
        box = np.ascontiguousarray(img[:, rows][:, :, cols][:, y0:y1, x0:x1])
        assert x.min() >= -1e-3 and x.max() <= x1 - x0 - 1 + 1e-3
        got = _sample_box(box, x, y, "bilinear")
        np.testing.assert_allclose(got, crops.sample_bilinear_numpy(img, px, py), atol=2e-3)  # fp32 map
        near_r, near_w = _sample_box(box, x, y, "nearest"), crops.sample_nearest(img, px, py, wrap_w=W)
        differ = (near_r != near_w).any(axis=0)
        tie = (np.abs(np.remainder(px, 1) - 0.5) < 1e-3) | (np.abs(np.remainder(py, 1) - 0.5) < 1e-3)
        assert not (differ & ~tie).any()  # only float32 rounding at exact half-pixel ties may differ
        assert len(plan.chunk_cols) <= W // c + 1


def test_torch_batched_samplers_match_reference():
    rng = np.random.default_rng(2)
    H, W = 32, 64
    img = rng.random((2, 4, H, W)).astype(np.float32)
    lab = rng.integers(0, 7, (2, 1, H, W)).astype(np.uint8)
    yaw, pitch, fov = [10.0, 355.0], [0.0, 85.0], [90.0, 120.0]
    px, py = crops.perspective_map_torch(yaw, pitch, fov, (16, 16), (H, W))
    got = crops.sample_bilinear_torch(torch.from_numpy(img), px, py).numpy()
    got_lab = crops.sample_nearest_torch(torch.from_numpy(lab), px, py).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], crops.sample_bilinear_numpy(img[b], px[b].numpy(), py[b].numpy()), atol=1e-4)
        np.testing.assert_array_equal(got_lab[b], crops.sample_nearest(lab[b], px[b].numpy(), py[b].numpy(), wrap_w=W))


@settings(max_examples=40, deadline=None)
@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 360), st.floats(-60, 60))
def test_reflect_normals_is_an_isometric_involution(nx, ny, nz, yaw, pitch):
    n = np.array([nx, ny, nz], np.float32).reshape(3, 1, 1)
    R = rotation_from_heading_pitch_roll(30.0, 3.0, -2.0)
    a = crops.crop_right_axis_local(R, yaw, pitch)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    m = crops.reflect_normals(n, a)
    np.testing.assert_allclose(np.linalg.norm(m), np.linalg.norm(n), atol=1e-5)
    np.testing.assert_allclose(crops.reflect_normals(m, a), n, atol=1e-5)
    assert float((m.ravel() * a).sum()) == pytest.approx(-float((n.ravel() * a).sum()), abs=1e-5)
