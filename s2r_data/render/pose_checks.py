"""Bad-input checks: the city model, the poses, and whether they share a frame (pure; shapely + numpy).

* :func:`check_renderable_model` — a model with no triangles, non-finite vertices or bad indices;
* :func:`invalid_pose_reason` / :func:`check_renderable_pose` — an unsafe image id, a non-finite
  centre, a rotation that is not a proper rotation;
* :func:`check_same_frame` — the poses' ``lon_deg``/``lat_deg`` and ``center_local_m`` disagree
  with the model's reference point (poses made for another city's frame);

Flags (never silent: written to each output's ``meta_json`` and to :class:`RenderResult.flags`):

* ``outside_bounds``  — camera x, y outside the city model's bounding box (x, y of all meshes)
* ``inside_building`` — camera x, y inside a building footprint (``CityModel.footprints()``)
* ``below_ground``    — camera z < 0 (ground plane is z = 0)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..citymodel import MESH_CLASSES, CityModel, CityModelError
from ..poses import Pose

__all__ = [
    "pose_flags",
    "invalid_pose_reason",
    "check_renderable_pose",
    "check_renderable_model",
    "check_same_frame",
    "check_same_reference",
    "InvalidPoseError",
    "FrameMismatchError",
    "PoseFlagger",
    "SAFE_IMAGE_ID",
    "FRAME_TOLERANCE_M",
]

SAFE_IMAGE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$")
# Poses whose lon/lat put them this far (median) from their local_m centre in the model's frame
# were made for another frame. Generous: pose refinement moves centres by metres, another
# city's frame moves them by kilometres.
FRAME_TOLERANCE_M = 50.0


class FrameMismatchError(ValueError):
    """The poses and the city model are not in the same ``local_m`` frame."""


def _model_name(model: CityModel, label: str) -> str:
    city = model.meta.get("city")
    return f"{label}{f' (city {city!r})' if city else ''}"


def check_renderable_model(model: CityModel, label: str = "city model") -> None:
    """Raise :class:`CityModelError` naming the problem: no triangles at all, non-finite vertices,
    triangle indices out of range. ``label`` names the model (e.g. its path) in the message."""
    n_triangles = 0
    for name in MESH_CLASSES:
        mesh = model.meshes[name]
        v, t = mesh.vertices_local_m, mesh.triangles
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise CityModelError(
                f"{_model_name(model, label)}: {int(bad.sum())} of {len(v)} {name!r} vertices are not finite "
                f"(first at index {int(np.flatnonzero(bad)[0])}); rebuild the model (`s2r city build`)"
            )
        if len(t) and (t.min() < 0 or t.max() >= len(v)):
            raise CityModelError(f"{_model_name(model, label)}: {name!r} triangles index vertices outside 0..{len(v) - 1}; rebuild the model")
        n_triangles += len(t)
    if n_triangles == 0:
        raise CityModelError(
            f"{_model_name(model, label)} has no triangles (every class mesh is empty): nothing to render; "
            "check the OSM extract and rebuild the model (`s2r city build`)"
        )


def _fmt_lonlat(lonlat) -> str:
    return f"({float(lonlat[0]):.7f}, {float(lonlat[1]):.7f})"


def check_same_reference(model: CityModel, reference_lonlat, *, poses_label: str, model_label: str = "city model") -> None:
    """Raise :class:`FrameMismatchError` unless ``reference_lonlat`` (the frame the poses were made
    in, e.g. their city's) is the model's reference point (within 1e-7°)."""
    ref = model.meta.get("reference_lonlat")
    if ref is None:
        return
    if np.allclose(np.asarray(ref, float), np.asarray(reference_lonlat, float), atol=1e-7, rtol=0):
        return
    raise FrameMismatchError(
        f"{poses_label} are in the local_m frame of reference point (lon, lat) {_fmt_lonlat(reference_lonlat)}, but "
        f"{_model_name(model, model_label)} was built around reference point {_fmt_lonlat(ref)}: they do not share a "
        "frame, so every render would be of the wrong place; use the model of the poses' city, or make the poses with "
        "the model's city"
    )


def _to_local_xy(frame, lonlat: np.ndarray) -> np.ndarray:
    """(N, 2) lon/lat → (N, 2) x, y in ``frame`` (pyproj's point path for N = 1: no size-1 arrays)."""
    if len(lonlat) == 1:
        return np.array([frame.lonlat_to_local(float(lonlat[0, 0]), float(lonlat[0, 1]))], dtype=np.float64)
    x, y = frame.lonlat_to_local(lonlat[:, 0], lonlat[:, 1])
    return np.stack([np.asarray(x), np.asarray(y)], axis=1)


def _implied_reference(lonlat: np.ndarray, centres_xy: np.ndarray, frame, offset_xy: np.ndarray) -> tuple[float, float]:
    """The reference point of the frame in which ``lonlat`` project to ``centres_xy`` (fixed-point
    iteration from the offset seen in ``frame``; a few steps even for frames 2000 km apart)."""
    from ..frames import LocalFrame

    lon, lat = frame.local_to_lonlat(*np.median(offset_xy, axis=0))
    for _ in range(8):
        guess = LocalFrame(float(np.clip(lon, -180, 180)), float(np.clip(lat, -85, 85)))
        residual = np.median(_to_local_xy(guess, lonlat) - centres_xy, axis=0)
        if np.hypot(*residual) < 0.01:
            break
        lon, lat = guess.local_to_lonlat(*residual)
    return float(lon), float(lat)


def check_same_frame(model: CityModel, poses: Sequence[Pose], *, model_label: str = "city model",
                     tolerance_m: float = FRAME_TOLERANCE_M) -> None:
    """Raise :class:`FrameMismatchError` when the poses that carry ``lon_deg``/``lat_deg`` sit, in
    the model's frame, more than ``tolerance_m`` (median) away from their ``center_local_m``. The
    message names the model's reference point and the one the poses' frame appears to have."""
    ref = model.meta.get("reference_lonlat")
    lonlat = np.array([[p.lon_deg, p.lat_deg] for p in poses], dtype=np.float64).reshape(-1, 2)
    usable = np.isfinite(lonlat).all(axis=1) & np.array([np.isfinite(p.center_local_m).all() for p in poses], dtype=bool)
    if ref is None or not usable.any():
        return
    from ..frames import LocalFrame

    frame = LocalFrame(float(ref[0]), float(ref[1]))
    centres = np.stack([p.center_local_m[:2] for p, ok in zip(poses, usable) if ok])
    offset = _to_local_xy(frame, lonlat[usable]) - centres  # ≈ the poses' reference point in the model frame
    error_m = float(np.median(np.linalg.norm(offset, axis=1)))
    if error_m <= tolerance_m:
        return
    lon, lat = _implied_reference(lonlat[usable], centres, frame, offset)
    raise FrameMismatchError(
        f"the poses are not in the frame of {_model_name(model, model_label)}: it was built around reference point "
        f"(lon, lat) {_fmt_lonlat(ref)}, but the poses' lon/lat and center_local_m disagree by {error_m:,.0f} m (median "
        f"over {int(usable.sum())} poses), as if their frame's reference point were ≈ {_fmt_lonlat((lon, lat))}; "
        "make the poses with the model's city (pose_from_mapillary(record, load_city(<city>).frame)) or use the model "
        "of the poses' city"
    )


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
