"""Equirectangular (OpenSfM "spherical") projection, both directions, vectorised.

Camera frame ``cam_opensfm``: x right, y down, z forward. For a bearing (x, y, z):

    lon = atan2(x, z)                 (0 at the image centre, positive to the right)
    lat = atan2(-y, sqrt(x² + z²))    (positive up)
    u = lon / 2π,  v = -lat / 2π      (normalised, larger image side = 1)
    px = u·W + (W − 1)/2,  py = v·W + (H − 1)/2     (pixel centres at integers, row 0 on top)

This is pixel-identical to Blender's full-range equirectangular camera for 2:1 images
(blender-passes notes §1.4) and to Mapillary's panoramas (mapillary-api notes §4).
``px`` wraps at the left/right edge: the valid range is [−0.5, W − 0.5).
"""

from __future__ import annotations

import numpy as np

from .poses import Pose

__all__ = [
    "bearing_to_pixel",
    "pixel_to_bearing",
    "project_local_points",
    "pixel_to_ray_local",
    "check_size",
]


def check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width != 2 * height:
        raise ValueError(f"equirectangular images are 2:1; got width={width}, height={height}")


def bearing_to_pixel(bearing_cam_opensfm: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 3) bearings in ``cam_opensfm`` (any length) → (..., 2) pixel coordinates (px, py)."""
    check_size(width, height)
    b = np.asarray(bearing_cam_opensfm, dtype=np.float64)
    x, y, z = b[..., 0], b[..., 1], b[..., 2]
    lon = np.arctan2(x, z)
    lat = np.arctan2(-y, np.hypot(x, z))
    px = lon / (2 * np.pi) * width + (width - 1) / 2
    py = -lat / (2 * np.pi) * width + (height - 1) / 2
    return np.stack([px, py], axis=-1)


def pixel_to_bearing(px, py, width: int, height: int) -> np.ndarray:
    """Pixel coordinates → (..., 3) unit bearings in ``cam_opensfm``."""
    check_size(width, height)
    px = np.asarray(px, dtype=np.float64)
    py = np.asarray(py, dtype=np.float64)
    lon = (px - (width - 1) / 2) / width * 2 * np.pi
    lat = -(py - (height - 1) / 2) / width * 2 * np.pi
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), -np.sin(lat), cl * np.cos(lon)], axis=-1)


def project_local_points(xyz_local_m: np.ndarray, pose: Pose, width: int, height: int):
    """World points in ``local_m`` → (pixels (..., 2), distance_m (...)) for a panorama at ``pose``."""
    X = np.asarray(xyz_local_m, dtype=np.float64)
    cam = (X - pose.center_local_m) @ pose.R_world_to_cam_opensfm.T
    return bearing_to_pixel(cam, width, height), np.linalg.norm(cam, axis=-1)


def pixel_to_ray_local(px, py, pose: Pose, width: int, height: int) -> np.ndarray:
    """Pixel → unit ray direction in ``local_m`` (the ray starts at ``pose.center_local_m``)."""
    return pixel_to_bearing(px, py, width, height) @ pose.R_world_to_cam_opensfm
