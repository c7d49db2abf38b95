"""Bad-input checks on poses against the city model (pure; shapely + numpy).

Flags (never silent: written to each output's ``meta_json`` and to :class:`RenderResult.flags`):

* ``outside_bounds``  — camera x, y outside the city model's bounding box (x, y of all meshes)
* ``inside_building`` — camera x, y inside a building footprint (``CityModel.footprints()``)
* ``below_ground``    — camera z < 0 (ground plane is z = 0)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..citymodel import CityModel
from ..poses import Pose

__all__ = ["pose_flags", "invalid_pose_reason", "check_renderable_pose", "InvalidPoseError", "PoseFlagger", "SAFE_IMAGE_ID"]

SAFE_IMAGE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$")


def invalid_pose_reason(pose: Pose) -> str | None:
    """Why ``pose`` cannot be rendered at all (``None`` if it can)."""
    if not SAFE_IMAGE_ID.match(pose.image_id):
        return f"image_id {pose.image_id!r} is not a safe file name (letters, digits, _ - . ; not starting with .)"
    if not np.all(np.isfinite(pose.center_local_m)):
        return f"center_local_m {pose.center_local_m.tolist()} is not finite"
    R = pose.R_world_to_cam_opensfm
    if not np.all(np.isfinite(R)) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        return "R_world_to_cam_opensfm is not a proper rotation (RRᵀ ≠ I or det < 0)"
    return None


class InvalidPoseError(ValueError):
    """A pose that cannot be rendered at all (non-finite centre, not a rotation, unsafe id)."""


def check_renderable_pose(pose: Pose) -> None:
    """Raise :class:`InvalidPoseError` naming the pose and the problem (see :func:`invalid_pose_reason`)."""
    reason = invalid_pose_reason(pose)
    if reason is not None:
        raise InvalidPoseError(f"pose {pose.image_id!r}: {reason}")


class PoseFlagger:
    """The model's bounding box and prepared footprints, built once; :meth:`flags` per pose is cheap."""

    def __init__(self, model: CityModel):
        import shapely

        lo, hi = model.bbox_local_m()
        self._lo, self._hi = np.asarray(lo), np.asarray(hi)
        self._has_geometry = any(len(m.triangles) for m in model.meshes.values())
        fp = model.footprints()
        self._footprints = None if fp.is_empty else fp
        if self._footprints is not None:
            shapely.prepare(self._footprints)

    def flags_many(self, centers_local_m: np.ndarray) -> list[dict[str, bool]]:
        import shapely

        xyz = np.asarray(centers_local_m, dtype=np.float64).reshape(-1, 3)
        if not len(xyz):
            return []
        lo, hi = self._lo, self._hi
        outside = ~((xyz[:, 0] >= lo[0]) & (xyz[:, 0] <= hi[0]) & (xyz[:, 1] >= lo[1]) & (xyz[:, 1] <= hi[1]))
        if not self._has_geometry:
            outside[:] = True
        if self._footprints is None:
            inside = np.zeros(len(xyz), dtype=bool)
        else:
            inside = np.asarray(shapely.contains_xy(self._footprints, xyz[:, 0], xyz[:, 1]), dtype=bool)
        below = xyz[:, 2] < 0
        return [
            {"outside_bounds": bool(o), "inside_building": bool(i), "below_ground": bool(b)}
            for o, i, b in zip(outside, inside, below)
        ]

    def flags(self, pose: Pose) -> dict[str, bool]:
        return self.flags_many(pose.center_local_m[None, :])[0]


def pose_flags(model: CityModel, poses: Sequence[Pose]) -> list[dict[str, bool]]:
    """Per pose ``{"outside_bounds", "inside_building", "below_ground"}`` booleans."""
    if not poses:
        return []
    return PoseFlagger(model).flags_many(np.stack([p.center_local_m for p in poses]))
