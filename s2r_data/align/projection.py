"""Projection of 3-D points into an equirectangular panorama as a function of the six pose numbers
(:mod:`s2r_data.align.pose_vector`), with image directions of 3-D tangents and the Jacobian.

Pixel conventions are those of :mod:`s2r_data.equirect` (pixel centres at integers, x wraps).
"""

from __future__ import annotations

import math

import numpy as np

from .pose_vector import rotation_from_vector

__all__ = ["project", "project_with_directions", "projection_jacobian", "wrap_dx"]


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


def _rotation_derivatives(v: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """R(v) and ∂R/∂v_k for the three angles (central differences of 3 × 3 matrices: exact to ~1e-10)."""
    R = rotation_from_vector(v)
    dR = []
    for k in range(3):
        dv = np.zeros(6)
        dv[k] = 1e-6
        dR.append((rotation_from_vector(v + dv) - rotation_from_vector(v - dv)) / 2e-6)
    return R, dR


def projection_jacobian(xyz_local_m: np.ndarray, v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels and their derivatives w.r.t. the six parameters (analytic chain rule through the
    equirectangular projection): px, py (N,) and J (N, 2, 6)."""
    R, dR = _rotation_derivatives(v)
    d = np.asarray(xyz_local_m, dtype=np.float64) - v[3:6]
    cam = d @ R.T
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    rho2 = x * x + z * z
    rho = np.sqrt(rho2)
    r2 = rho2 + y * y
    k = width / (2 * math.pi)
    height = width // 2
    px = np.arctan2(x, z) * k + (width - 1) / 2
    py = -np.arctan2(-y, rho) * k + (height - 1) / 2
    # d(px)/d(cam) = k (z, 0, −x)/ρ²;  d(py)/d(cam) = −k (xy/(ρr²), −ρ/r², zy/(ρr²))
    g_px = np.stack([z, np.zeros_like(z), -x], axis=1) * (k / rho2)[:, None]
    g_py = -np.stack([x * y / (rho * r2), -rho / r2, z * y / (rho * r2)], axis=1) * k
    J = np.empty((len(x), 2, 6))
    for j in range(3):  # angles: d cam = dR_j (X − C)
        dc = d @ dR[j].T
        J[:, 0, j] = (g_px * dc).sum(1)
        J[:, 1, j] = (g_py * dc).sum(1)
    # centre: d cam / dC = −R
    J[:, 0, 3:6] = -(g_px @ R)
    J[:, 1, 3:6] = -(g_py @ R)
    return px, py, J
