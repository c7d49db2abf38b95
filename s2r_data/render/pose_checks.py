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

__all__ = ["pose_flags", "invalid_pose_reason", "SAFE_IMAGE_ID"]

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


def pose_flags(model: CityModel, poses: Sequence[Pose]) -> list[dict[str, bool]]:
    """Per pose ``{"outside_bounds", "inside_building", "below_ground"}`` booleans."""
    import shapely

    if not poses:
        return []
    xyz = np.stack([p.center_local_m for p in poses])
    lo, hi = model.bbox_local_m()
    has_geometry = any(len(m.triangles) for m in model.meshes.values())
    outside = ~((xyz[:, 0] >= lo[0]) & (xyz[:, 0] <= hi[0]) & (xyz[:, 1] >= lo[1]) & (xyz[:, 1] <= hi[1]))
    if not has_geometry:
        outside[:] = True
    fp = model.footprints()
    if fp.is_empty:
        inside = np.zeros(len(poses), dtype=bool)
    else:
        shapely.prepare(fp)
        inside = np.asarray(shapely.contains_xy(fp, xyz[:, 0], xyz[:, 1]), dtype=bool)
    below = xyz[:, 2] < 0
    return [
        {"outside_bounds": bool(o), "inside_building": bool(i), "below_ground": bool(b)}
        for o, i, b in zip(outside, inside, below)
    ]
