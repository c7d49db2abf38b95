"""Mapillary image record → camera pose in the city's ``local_m`` frame.

Conventions (verified numerically in the notes; tested in ``tests/test_poses.py``):

* ``computed_rotation`` r is an angle-axis vector; R = Rodrigues(r) maps **world → camera**,
  world = true-north ENU at the image (``enu_true``), camera = ``cam_opensfm`` (x right, y down,
  z forward): X_cam = R·(X_world − C). Row 3 of R is the forward axis; its heading
  atan2(R[2,0], R[2,1]) equals ``computed_compass_angle``.
* We re-express R in the city's grid frame: ``R_world_to_cam_opensfm = R · R_enu_true_to_local(C)ᵀ``
  (meridian convergence, see :mod:`s2r_data.frames`).
* Blender's camera looks down −z with +y up: ``matrix_world`` rotation = Rᵀ·diag(1, −1, −1).
* Height: the camera centre is ``ground_z_m + mount_height_m``. ``computed_altitude`` is **not**
  used: it has no usable datum (values like 2.8 m vs 48 m EXIF for the same pano, 1399 m vs 1364 m
  in others: SfM reconstructions float vertically), so it cannot be related to the OSM ground
  plane. It is kept in the metadata for relative offsets only.
* Without ``computed_rotation``: a level camera from ``computed_compass_angle`` (else
  ``compass_angle``), flagged ``confidence="compass"``. ``atomic_scale == 1`` with zero pitch and
  roll marks a synthesised (unreconstructed) SfM pose: ``confidence="low"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .frames import LocalFrame

__all__ = [
    "Pose",
    "PoseError",
    "rodrigues",
    "rotvec_from_matrix",
    "level_rotation_from_heading",
    "heading_pitch_roll_deg",
    "rotation_from_heading_pitch_roll",
    "pose_from_mapillary",
    "matrix_world_blender",
    "DEFAULT_MOUNT_HEIGHT_M",
]

DEFAULT_MOUNT_HEIGHT_M = 2.5  # typical roof/helmet/backpack 360° rig height above the street
_OPENSFM_TO_BLENDER_CAM = np.diag([1.0, -1.0, -1.0])


class PoseError(ValueError):
    """A record has no usable pose; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Pose:
    """A panorama camera in ``local_m``.

    ``R_world_to_cam_opensfm`` maps ``local_m`` vectors to ``cam_opensfm``;
    ``center_local_m`` is the optical centre. ``confidence`` is ``"sfm"``, ``"low"`` or ``"compass"``.
    """

    image_id: str
    center_local_m: np.ndarray
    R_world_to_cam_opensfm: np.ndarray
    confidence: str = "sfm"
    lon_deg: float = float("nan")
    lat_deg: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_id", str(self.image_id))
        object.__setattr__(self, "center_local_m", np.asarray(self.center_local_m, dtype=np.float64).reshape(3))
        R = np.asarray(self.R_world_to_cam_opensfm, dtype=np.float64).reshape(3, 3)
        object.__setattr__(self, "R_world_to_cam_opensfm", R)

    @property
    def heading_deg(self) -> float:
        return heading_pitch_roll_deg(self.R_world_to_cam_opensfm)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the render worker protocol and the index)."""
        return {
            "image_id": self.image_id,
            "center_local_m": [float(v) for v in self.center_local_m],
            "R_world_to_cam_opensfm": [[float(v) for v in row] for row in self.R_world_to_cam_opensfm],
            "confidence": self.confidence,
            "lon_deg": float(self.lon_deg),
            "lat_deg": float(self.lat_deg),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Pose":
        return cls(
            image_id=str(d["image_id"]),
            center_local_m=np.asarray(d["center_local_m"], dtype=np.float64),
            R_world_to_cam_opensfm=np.asarray(d["R_world_to_cam_opensfm"], dtype=np.float64),
            confidence=str(d.get("confidence", "sfm")),
            lon_deg=float(d.get("lon_deg", float("nan"))),
            lat_deg=float(d.get("lat_deg", float("nan"))),
        )


def rodrigues(rotvec) -> np.ndarray:
    """Angle-axis vector (radians × unit axis, right-handed) → 3×3 rotation matrix."""
    r = np.asarray(rotvec, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        K = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
        return np.eye(3) + K
    k = r / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def rotvec_from_matrix(R) -> np.ndarray:
    """Inverse of :func:`rodrigues` (angle in [0, π])."""
    R = np.asarray(R, dtype=np.float64)
    cos_t = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    theta = float(np.arccos(cos_t))
    if theta < 1e-9:
        return np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    if np.pi - theta < 1e-6:
        # axis from the symmetric part: R = 2kkᵀ − I
        M = (R + np.eye(3)) / 2
        i = int(np.argmax(np.diag(M)))
        k = M[:, i] / np.sqrt(M[i, i])
        return k * theta
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return w / (2 * np.sin(theta)) * theta


def level_rotation_from_heading(heading_deg: float) -> np.ndarray:
    """World(ENU-like)→``cam_opensfm`` rotation of a level camera facing ``heading_deg``
    (clockwise from north)."""
    h = np.radians(heading_deg)
    return np.array(
        [
            [np.cos(h), -np.sin(h), 0.0],  # camera x (right)
            [0.0, 0.0, -1.0],  # camera y (down)
            [np.sin(h), np.cos(h), 0.0],  # camera z (forward)
        ]
    )


def rotation_from_heading_pitch_roll(heading_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World→``cam_opensfm`` rotation: heading (clockwise from north), then pitch (nose up
    positive) about camera x, then roll (clockwise as seen from behind, positive) about camera z."""
    R0 = level_rotation_from_heading(heading_deg)
    p, r = np.radians(pitch_deg), np.radians(roll_deg)
    # pitch up: forward tilts toward world up (−y_cam); rotate camera about its x axis
    Rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Rx @ R0


def heading_pitch_roll_deg(R_world_to_cam_opensfm) -> tuple[float, float, float]:
    """Heading (clockwise from north, [0, 360)), pitch (forward above horizon, +up) and roll of a
    world→``cam_opensfm`` rotation, in degrees. Inverse of :func:`rotation_from_heading_pitch_roll`."""
    R = np.asarray(R_world_to_cam_opensfm, dtype=np.float64)
    fwd = R[2]
    heading = float(np.degrees(np.arctan2(fwd[0], fwd[1])) % 360.0)
    pitch = float(np.degrees(np.arcsin(np.clip(fwd[2], -1, 1))))
    R0 = level_rotation_from_heading(heading)
    p = np.radians(pitch)
    Rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    Rz = R @ R0.T @ Rx.T
    roll = float(np.degrees(np.arctan2(Rz[0, 1], Rz[0, 0])))
    return heading, pitch, roll


def _point(record: Mapping[str, Any], key: str):
    g = record.get(key)
    if not isinstance(g, Mapping):
        return None
    c = g.get("coordinates")
    if not isinstance(c, (list, tuple)) or len(c) < 2:
        return None
    lon, lat = float(c[0]), float(c[1])
    if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        return None
    return lon, lat


def pose_from_mapillary(
    record: Mapping[str, Any],
    frame: LocalFrame,
    *,
    ground_z_m: float = 0.0,
    mount_height_m: float = DEFAULT_MOUNT_HEIGHT_M,
) -> Pose:
    """Convert a Graph API image record (all fields optional) into a :class:`Pose`.

    Raises :class:`PoseError` with ``reason`` in {``no_position``, ``no_orientation``,
    ``bad_rotation``} when the record has no usable pose.
    """
    image_id = str(record.get("id", ""))
    pos = _point(record, "computed_geometry") or _point(record, "geometry")
    if pos is None:
        raise PoseError("no_position", f"image {image_id}: neither computed_geometry nor geometry is a valid point")
    lon, lat = pos
    x, y = frame.lonlat_to_local(lon, lat)
    C = np.array([float(x), float(y), ground_z_m + mount_height_m])
    M = frame.R_enu_true_to_local(lon, lat)

    rot = record.get("computed_rotation")
    if rot is not None:
        try:
            r = np.asarray(rot, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            r = np.full(1, np.nan)
        if r.shape != (3,) or not np.all(np.isfinite(r)):
            raise PoseError("bad_rotation", f"image {image_id}: computed_rotation {rot!r} is not 3 finite floats")
        R_enu = rodrigues(r)
        _, pitch, roll = heading_pitch_roll_deg(R_enu)
        confidence = "sfm"
        if record.get("atomic_scale") == 1 and abs(pitch) < 0.05 and abs(roll) < 0.05:
            confidence = "low"
    else:
        heading = record.get("computed_compass_angle", record.get("compass_angle"))
        if heading is None or not np.isfinite(float(heading)):
            raise PoseError("no_orientation", f"image {image_id}: no computed_rotation and no compass angle")
        R_enu = level_rotation_from_heading(float(heading))
        confidence = "compass"
    R_local = R_enu @ M.T
    extra = {k: record[k] for k in ("computed_altitude", "altitude", "atomic_scale") if k in record}
    return Pose(image_id, C, R_local, confidence, lon, lat, extra)


def matrix_world_blender(pose: Pose) -> np.ndarray:
    """4×4 Blender ``matrix_world`` (``cam_blender`` → ``local_m``) for the panorama camera."""
    M = np.eye(4)
    M[:3, :3] = pose.R_world_to_cam_opensfm.T @ _OPENSFM_TO_BLENDER_CAM
    M[:3, 3] = pose.center_local_m
    return M
