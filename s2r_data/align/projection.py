"""Projection of 3-D points into an equirectangular panorama as a function of the six pose numbers
(:mod:`s2r_data.align.pose_vector`), with image directions of 3-D tangents and the Jacobian.

Pixel conventions are those of :mod:`s2r_data.equirect` (pixel centres at integers, x wraps).
"""

from __future__ import annotations

import math

import numpy as np

from .pose_vector import rotation_from_vector

__all__ = ["project", "project_with_directions", "projection_jacobian", "wrap_dx", "PARAM_STEPS"]

# finite-difference steps of the six parameters (rad, rad, rad, m, m, m)
PARAM_STEPS = np.array([1e-4, 1e-4, 1e-4, 1e-3, 1e-3, 1e-3])


def wrap_dx(dx: np.ndarray, width: int) -> np.ndarray:
    """Horizontal pixel differences wrapped to [−W/2, W/2)."""
    return (np.asarray(dx) + width / 2) % width - width / 2


def project(xyz_local_m: np.ndarray, v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points → pixel x, y (N,) each, for the pose vector ``v`` and a ``width`` × width/2 panorama."""
    R = rotation_from_vector(v)
    cam = (np.asarray(xyz_local_m, dtype=np.float64) - v[3:6]) @ R.T
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    lon = np.arctan2(x, z)
    lat = np.arctan2(-y, np.hypot(x, z))
    height = width // 2
    px = lon / (2 * math.pi) * width + (width - 1) / 2
    py = -lat / (2 * math.pi) * width + (height - 1) / 2
    return px, py


def project_with_directions(xyz_local_m: np.ndarray, tangent_local: np.ndarray, v: np.ndarray, width: int):
    """Pixels (px, py) and the unit image direction (N, 2) of each 3-D tangent at its point."""
    px, py = project(xyz_local_m, v, width)
    dist = np.linalg.norm(xyz_local_m - v[3:6], axis=1)
    step = np.maximum(dist, 1.0)[:, None] * 2e-3
    qx, qy = project(xyz_local_m + step * tangent_local, v, width)
    d = np.stack([wrap_dx(qx - px, width), qy - py], axis=1)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return px, py, d


def projection_jacobian(xyz_local_m: np.ndarray, v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels and their derivatives w.r.t. the six parameters (central differences):
    px, py (N,) and J (N, 2, 6)."""
    px, py = project(xyz_local_m, v, width)
    J = np.empty((len(px), 2, 6))
    for k in range(6):
        dv = np.zeros(6)
        dv[k] = PARAM_STEPS[k]
        ax, ay = project(xyz_local_m, v + dv, width)
        bx, by = project(xyz_local_m, v - dv, width)
        J[:, 0, k] = wrap_dx(ax - bx, width) / (2 * PARAM_STEPS[k])
        J[:, 1, k] = (ay - by) / (2 * PARAM_STEPS[k])
    return px, py, J
