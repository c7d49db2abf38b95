"""Realistic-ish synthetic panoramas for tests and benchmarks (no Blender, no photos).

The content mimics the statistics that matter for compression and cropping: a sky band on top
(label 0, DiffCol/Normal/Depth 0), piecewise-constant buildings (wall/roof) of random width and
height along the horizon, ground/road below with a smooth depth field from a camera
``camera_height_m`` above a flat ground, smooth world normals, and a photo-like ``real`` image
(class colours, vertical gradients, window texture, sensor noise). Not a renderer: the depth of a
building pixel is the distance to a vertical wall at the building's distance, so depth, label,
sky mask and normals are mutually consistent (depth 0 ⇔ sky).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..citymodel import CLASSES

__all__ = ["SyntheticPanorama", "synthetic_panorama", "synthetic_pose", "write_synthetic_dataset"]


@dataclass(frozen=True)
class SyntheticPanorama:
    sim: np.ndarray  # float16 (7, H, W): DiffCol 3, world normal 3, depth m 1
    label: np.ndarray  # uint8 (1, H, W)
    real: np.ndarray  # uint8 (3, H, W)
    sky_mask: np.ndarray  # bool (1, H, W)
    valid_mask: np.ndarray  # bool (1, H, W)


def synthetic_panorama(height: int, width: int, seed: int, *, camera_height_m: float = 2.5) -> SyntheticPanorama:
    """A consistent (sim, label, real, sky, valid) sample of size ``height`` × ``width`` (2:1)."""
    rng = np.random.default_rng(seed)
    H, W = int(height), int(width)
    # angles of pixel centres (s2r_data.equirect convention: pixel centres at integers)
    lon_rad = (np.arange(W) - (W - 1) / 2) / W * 2 * np.pi  # (W,)
    lat_rad = -(np.arange(H) - (H - 1) / 2) / W * 2 * np.pi  # (H,)

    # buildings: random segments along longitude, each with distance and elevation of its top
    n_seg = int(rng.integers(8, 20))
    cuts = np.sort(rng.choice(np.arange(1, W), size=n_seg - 1, replace=False))
    seg_of_col = np.searchsorted(cuts, np.arange(W), side="right")  # (W,)
    seg_dist_m = rng.uniform(6.0, 40.0, n_seg)
    seg_height_m = rng.uniform(6.0, 30.0, n_seg)
    seg_has_building = rng.random(n_seg) < 0.8
    seg_facing_rad = rng.uniform(0, 2 * np.pi, n_seg)
    dist_col = seg_dist_m[seg_of_col]  # horizontal distance to the wall, m
    top_lat = np.arctan2(seg_height_m[seg_of_col] - camera_height_m, dist_col)  # wall top elevation
    roof_lat = top_lat + np.where(rng.random(n_seg) < 0.5, 0.03, 0.0)[seg_of_col]  # visible roof lip
    bottom_lat = np.arctan2(-camera_height_m, dist_col)

    lat = lat_rad[:, None]
    is_building = seg_has_building[seg_of_col][None, :] & (lat <= roof_lat[None, :]) & (lat > bottom_lat[None, :])
    is_roof = is_building & (lat > top_lat[None, :])
    is_ground = lat <= bottom_lat[None, :]
    road_band = np.abs(np.sin(lon_rad))[None, :] > 0.6
    label = np.zeros((H, W), np.uint8)
    label[is_ground & ~road_band] = 1
    label[is_ground & road_band] = 2
    label[is_building] = 5
    label[is_roof] = 6
    # some green patches on the ground
    green = is_ground & (np.sin(lon_rad * 7)[None, :] * np.cos(lat * 11) > 0.7)
    label[green] = 4
    sky = label == 0

    colours = np.array([c.colour_linear for c in CLASSES], np.float32)
    diffcol = colours[label].transpose(2, 0, 1)  # (3, H, W)

    # depth: ground plane below, vertical walls at the segment distance
    with np.errstate(divide="ignore", invalid="ignore"):
        depth_ground = camera_height_m / np.maximum(np.sin(-lat), 1e-6)
        depth_wall = dist_col[None, :] / np.maximum(np.cos(lat), 1e-6)
    depth = np.where(is_ground | (label == 4), depth_ground, np.where(is_building, depth_wall, 0.0))
    depth = np.minimum(depth, 1000.0).astype(np.float32)

    normal = np.zeros((3, H, W), np.float32)
    normal[2][is_ground] = 1.0
    facing = seg_facing_rad[seg_of_col]
    wall = is_building & ~is_roof
    normal[0][wall] = np.broadcast_to(np.cos(facing)[None, :], (H, W))[wall]
    normal[1][wall] = np.broadcast_to(np.sin(facing)[None, :], (H, W))[wall]
    normal[2][is_roof] = 0.8
    normal[0][is_roof] = 0.6 * np.broadcast_to(np.cos(facing)[None, :], (H, W))[is_roof]
    normal[1][is_roof] = 0.6 * np.broadcast_to(np.sin(facing)[None, :], (H, W))[is_roof]
    # smooth perturbation (uneven surfaces), then renormalise
    bump = 0.05 * np.sin(lon_rad * 23)[None, :] * np.cos(lat * 17)
    normal[0] += np.where(sky, 0.0, bump)
    n = np.linalg.norm(normal, axis=0, keepdims=True)
    normal = np.where(n > 0, normal / np.maximum(n, 1e-12), 0.0)

    sim = np.concatenate([diffcol, normal, depth[None]], axis=0).astype(np.float16)

    # photo: class colours (gamma-ish), sky gradient, window grid on walls, shading, noise
    base = np.power(np.clip(diffcol, 0, 1), 1 / 2.2)
    sky_rgb = np.stack(
        [0.45 + 0.3 * np.clip(lat, 0, 1), 0.6 + 0.25 * np.clip(lat, 0, 1), 0.9 + 0.0 * lat], axis=0
    ) * np.ones((1, 1, W))
    real = np.where(sky[None], sky_rgb, base)
    windows = wall & (np.sin(lon_rad * 300)[None, :] > 0.4) & (np.sin(lat * 400) > 0.3)
    real = real * np.where(windows[None], 0.45, 1.0)
    real = real * (0.8 + 0.2 * np.cos(lat))[None]
    real = real + rng.normal(0.0, 0.02, size=real.shape)
    real_u8 = np.clip(np.round(real * 255), 0, 255).astype(np.uint8)

    valid = np.ones((H, W), bool)
    valid[int(H * 0.93) :, :] = False  # the capture vehicle at the nadir
    return SyntheticPanorama(
        sim=sim, label=label[None], real=real_u8, sky_mask=sky[None], valid_mask=valid[None]
    )


def synthetic_pose(image_id: str, k: int):
    """A plausible panorama pose for synthetic sample ``k`` (heading varies, slight pitch/roll)."""
    from ..poses import Pose, rotation_from_heading_pitch_roll

    R = rotation_from_heading_pitch_roll(37.0 * k % 360.0, 2.0 * np.sin(k), 1.5 * np.cos(k))
    return Pose(image_id, np.array([5.0 * k, -3.0 * k, 2.5]), R, confidence="sfm")


def write_synthetic_dataset(
    url,
    n: int,
    *,
    height: int = 64,
    width: int | None = None,
    city: str = "synthetic",
    seed: int = 0,
    n_sequences: int = 3,
    pyramid_levels: int = 1,
    chunk_px: int = 256,
    ids: list[str] | None = None,
) -> list[str]:
    """Write ``n`` synthetic samples (ids ``s{seed}_{k}`` unless given) into a store; returns ids.
    Skips ids already committed (idempotent)."""
    from .writer import DatasetWriter

    width = width or 2 * height
    ids = ids or [f"s{seed}_{k:04d}" for k in range(n)]
    with DatasetWriter(url, height=height, width=width, city=city, pyramid_levels=pyramid_levels, chunk_px=chunk_px) as w:
        for k, image_id in enumerate(ids):
            if w.has(image_id):
                continue
            p = synthetic_panorama(height, width, seed * 100_003 + k)
            w.write_sample(
                image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                {"pose": synthetic_pose(image_id, k), "sequence_id": f"seq{k % max(n_sequences, 1)}",
                 "captured_at": 1_700_000_000_000 + 1000 * k, "render_status": "ok", "harvest_status": "ok"},
            )
    return ids
