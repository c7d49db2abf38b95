"""A panorama pose as six numbers, and the correction between two poses.

``PoseVector`` = (heading, pitch, roll, x, y, z): heading clockwise from grid north (``local_m``
+y), pitch nose-up and roll as in :func:`s2r_data.poses.rotation_from_heading_pitch_roll`, the
camera centre in ``local_m``. Angles are radians inside (``*_rad``); the ``*_deg`` views are for
reports. In a level equirectangular panorama a heading change is a pure column shift, which is why
the refinement works in these coordinates.

``PoseCorrection`` = refined − reported in those six numbers (heading wrapped to (−180°, 180°]).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..poses import Pose, heading_pitch_roll_deg, rotation_from_heading_pitch_roll

__all__ = ["PoseVector", "PoseCorrection", "wrap_deg", "pose_from_vector", "vector_from_pose"]


def wrap_deg(angle_deg: float | np.ndarray) -> float | np.ndarray:
    """Angle(s) wrapped to (−180, 180]."""
    a = (np.asarray(angle_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0
    a = np.where(a == -180.0, 180.0, a)
    return float(a) if np.ndim(a) == 0 else a


def vector_from_pose(pose: Pose) -> np.ndarray:
    """(6,) float64: heading_rad, pitch_rad, roll_rad, x_m, y_m, z_m."""
    h, p, r = heading_pitch_roll_deg(pose.R_world_to_cam_opensfm)
    return np.array([math.radians(h), math.radians(p), math.radians(r), *pose.center_local_m], dtype=np.float64)


def rotation_from_vector(v: np.ndarray) -> np.ndarray:
    return rotation_from_heading_pitch_roll(math.degrees(v[0]), math.degrees(v[1]), math.degrees(v[2]))


def pose_from_vector(v: np.ndarray, like: Pose) -> Pose:
    """A :class:`Pose` with ``like``'s id, confidence, lon/lat and extra, at the six numbers ``v``."""
    v = np.asarray(v, dtype=np.float64)
    return dataclasses.replace(like, center_local_m=v[3:6].copy(), R_world_to_cam_opensfm=rotation_from_vector(v))


@dataclass(frozen=True)
class PoseVector:
    heading_deg: float
    pitch_deg: float
    roll_deg: float
    x_m: float
    y_m: float
    z_m: float

    @classmethod
    def of(cls, pose: Pose) -> "PoseVector":
        v = vector_from_pose(pose)
        return cls(math.degrees(v[0]) % 360.0, math.degrees(v[1]), math.degrees(v[2]), *map(float, v[3:]))


@dataclass(frozen=True)
class PoseCorrection:
    """refined − reported: heading/pitch/roll in degrees, position in metres (``local_m``)."""

    d_heading_deg: float = 0.0
    d_pitch_deg: float = 0.0
    d_roll_deg: float = 0.0
    dx_m: float = 0.0
    dy_m: float = 0.0
    dz_m: float = 0.0

    @classmethod
    def between(cls, reported: Pose, refined: Pose) -> "PoseCorrection":
        a, b = PoseVector.of(reported), PoseVector.of(refined)
        return cls(
            float(wrap_deg(b.heading_deg - a.heading_deg)),
            b.pitch_deg - a.pitch_deg,
            b.roll_deg - a.roll_deg,
            b.x_m - a.x_m,
            b.y_m - a.y_m,
            b.z_m - a.z_m,
        )

    def apply(self, pose: Pose) -> Pose:
        v = vector_from_pose(pose)
        d = np.array([math.radians(self.d_heading_deg), math.radians(self.d_pitch_deg), math.radians(self.d_roll_deg),
                      self.dx_m, self.dy_m, self.dz_m])
        return pose_from_vector(v + d, pose)

    @property
    def rotation_deg(self) -> float:
        """Largest of |Δheading|, |Δpitch|, |Δroll| (degrees)."""
        return max(abs(self.d_heading_deg), abs(self.d_pitch_deg), abs(self.d_roll_deg))

    @property
    def horizontal_m(self) -> float:
        return math.hypot(self.dx_m, self.dy_m)

    def to_list(self) -> list[float]:
        return [float(x) for x in dataclasses.astuple(self)]

    def to_dict(self) -> dict[str, Any]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}
