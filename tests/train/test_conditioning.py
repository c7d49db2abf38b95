import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_train.conditioning import (R_WORLD_TO_PANO_NORTH_OPENSFM, R_pano_to_crop_opensfm, condition_from_batch,
                                    encode_condition, encode_depth, normals_world_to_crop, sim_from_render_passes,
                                    unit_from_depth_m)
from s2r_train.crops import crop_right_axis_local, crop_rotation, reflect_normals
from s2r_train.config import ConditioningConfig
from s2r_train.synthetic import SyntheticPairDataset

from .helpers import one_thread_deterministic_restored  # noqa: F401

RANGE = (0.0, 200.0)


def test_depth_encodings_monotonic_and_bounded():
    d_m = torch.tensor([1.0, 2.0, 10.0, 100.0, 200.0]).view(1, 1, 1, 5)
    d01 = unit_from_depth_m(d_m, RANGE)
    sky = torch.zeros_like(d01)
    log = encode_depth(d01, sky, encoding="log", depth_range_m=RANGE, depth_min_m=1.0)
    inv = encode_depth(d01, sky, encoding="inverse", depth_range_m=RANGE, depth_min_m=1.0)
    assert log.flatten().tolist() == pytest.approx([0.0, math.log(2) / math.log(200), math.log(10) / math.log(200),
                                                    math.log(100) / math.log(200), 1.0], abs=1e-5)
    assert inv.flatten().tolist() == pytest.approx([1.0, 0.5, 0.1, 0.01, 0.005], abs=1e-5)
    sky1 = torch.ones_like(d01)
    assert (encode_depth(d01, sky1, encoding="log", depth_range_m=RANGE, depth_min_m=1.0) == 1).all()
    assert (encode_depth(d01, sky1, encoding="inverse", depth_range_m=RANGE, depth_min_m=1.0) == 0).all()
    with pytest.raises(ValueError, match="unknown depth encoding"):
        encode_depth(d01, sky, encoding="sqrt", depth_range_m=RANGE, depth_min_m=1.0)


@settings(max_examples=30, deadline=None)
@given(yaw=st.floats(-180, 180), pitch=st.floats(-89, 89))
def test_crop_rotation_is_a_rotation(yaw, pitch):
    R = R_pano_to_crop_opensfm(torch.tensor([yaw]), torch.tensor([pitch]))[0].double()
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert torch.det(R).item() == pytest.approx(1.0, abs=1e-5)
    # the crop's forward axis, seen from the panorama, is the (yaw, pitch) bearing
    y, p = math.radians(yaw), math.radians(pitch)
    fwd = np.array([math.cos(p) * math.sin(y), -math.sin(p), math.cos(p) * math.cos(y)])
    assert np.allclose(R[2].numpy(), fwd, atol=1e-5)


def test_normals_into_crop_frame_known_cases():
    up_world = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    east_world = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    kw = dict(yaw_deg=torch.tensor([0.0]), pitch_deg=torch.tensor([0.0]))
    # upright pano facing north: world up = −y (y points down), east = +x (right)
    assert torch.allclose(normals_world_to_crop(up_world, **kw).flatten(), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)
    assert torch.allclose(normals_world_to_crop(east_world, **kw).flatten(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    # turn right by 90° (face east): east is now straight ahead (+z)
    kw90 = dict(kw, yaw_deg=torch.tensor([90.0]))
    assert torch.allclose(normals_world_to_crop(east_world, **kw90).flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    # look up 90°: world up points at the viewer's forward axis
    kwup = dict(kw, pitch_deg=torch.tensor([90.0]))
    assert torch.allclose(normals_world_to_crop(up_world, **kwup).flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    # a flipped item's normals arrive reflected across the plane ⟂ the crop's right axis (crops.reflect_normals):
    # the rotation alone then gives the mirrored camera's view, x negated
    reflected = torch.from_numpy(reflect_normals(east_world[0].numpy(), crop_right_axis_local(
        R_WORLD_TO_PANO_NORTH_OPENSFM, 0.0, 0.0)))[None]
    assert torch.allclose(normals_world_to_crop(reflected, **kw).flatten(), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    # a given panorama rotation is used: a pano facing east sees east straight ahead
    R_east = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])[None]
    assert torch.allclose(normals_world_to_crop(east_world, **kw, R_world_to_pano_opensfm=R_east).flatten(),
                          torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(yaw=st.floats(-180, 180), pitch=st.floats(-60, 60))
def test_crop_rotation_matches_the_crops_module(yaw, pitch):
    R_ours = R_pano_to_crop_opensfm(torch.tensor([yaw]), torch.tensor([pitch]))[0].double().numpy()
    assert np.allclose(R_ours.T, crop_rotation(yaw, pitch), atol=1e-6)


def test_condition_channels_follow_the_config():
    ds = SyntheticPairDataset(2, crop_size=32)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    for cfg in [ConditioningConfig(), ConditioningConfig(sky_channel=True, depth_encoding="inverse"),
                ConditioningConfig(label_onehot=True, normals_frame="camera", sky_channel=True)]:
        cond = condition_from_batch(batch, cfg, "cpu")
        assert cond.shape == (2, cfg.in_channels, 32, 32)
        assert torch.isfinite(cond).all()
    with pytest.raises(ValueError, match="yaw_deg"):
        encode_condition(batch["sim"], normals_frame="camera")


def test_render_passes_to_sim_layout():
    h, w = 4, 8
    sky = np.zeros((1, h, w), bool)
    sky[:, 0] = True
    depth = np.full((1, h, w), 50.0, np.float32)
    depth[sky] = 0.0
    sim = sim_from_render_passes(np.full((3, h, w), 0.5, np.float16), np.ones((3, h, w), np.float16), depth, sky,
                                 depth_range_m=RANGE)
    assert sim.shape == (7, h, w) and sim.dtype == torch.float32
    assert sim[6, 1, 0].item() == pytest.approx(0.25) and sim[6, 0, 0].item() == 0
    assert (sim[3:6, 0] == 0).all()


@pytest.mark.parametrize("yaw, pitch, fov", [(40.0, 15.0, 90.0), (300.0, -10.0, 60.0), (0.0, 80.0, 100.0)])
def test_view_rays_follow_the_loaders_crop_geometry(yaw, pitch, fov):
    """Crop pixel rays (view_direction channels) = the panorama bearing the loader samples that
    pixel from (crops.perspective_map), rotated into local_m by the panorama's pose."""
    from s2r_data.equirect import pixel_to_bearing
    from s2r_data.poses import rotation_from_heading_pitch_roll
    from s2r_train.conditioning import crop_view_rays_world, pano_view_rays_world
    from s2r_train.crops import perspective_map

    R = torch.tensor(rotation_from_heading_pitch_roll(30.0, 3.0, -2.0), dtype=torch.float32)
    H, W = 64, 128
    rays = crop_view_rays_world(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([fov]), (9, 7), R[None])[0]
    px, py = perspective_map(yaw, pitch, fov, (9, 7), (H, W), dtype=np.float64)
    want = pixel_to_bearing(px, py, W, H) @ R.double().numpy()  # Rᵀ · bearing, row vectors
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(rays.permute(1, 2, 0).numpy(), want, atol=1e-6)
    pano = pano_view_rays_world(H, W, R[None])[0]
    py, px = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(pano.permute(1, 2, 0).numpy(), pixel_to_bearing(px, py, W, H) @ R.double().numpy(),
                               atol=1e-6)
    assert rays.shape == (3, 9, 7) and torch.allclose(rays.norm(dim=0), torch.ones(9, 7), atol=1e-6)


def test_view_direction_channels_come_from_the_batch_meta():
    cfg = ConditioningConfig(view_direction=True, sky_channel=True)
    assert cfg.in_channels == 7 + 1 + 3
    batch = {"sim": torch.rand(2, 7, 8, 8), "sky": torch.zeros(2, 1, 8, 8),
             "meta": {"yaw_deg": torch.tensor([0.0, 90.0]), "pitch_deg": torch.tensor([0.0, 0.0]),
                      "fov_deg": torch.tensor([90.0, 90.0])}}
    cond = condition_from_batch(batch, cfg, "cpu")
    assert cond.shape == (2, 11, 8, 8)
    centre = cond[:, 8:11, 3:5, 3:5].mean((2, 3))  # no pose: upright, facing north (+y); yaw 90 → east (+x)
    assert torch.allclose(centre[0], torch.tensor([0.0, 1.0, 0.0]), atol=0.05)
    assert torch.allclose(centre[1], torch.tensor([1.0, 0.0, 0.0]), atol=0.05)
    with pytest.raises(ValueError, match="fov_deg"):
        condition_from_batch({**batch, "meta": {"yaw_deg": torch.tensor([0.0, 0.0])}}, cfg, "cpu")
