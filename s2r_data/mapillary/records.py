"""Graph image record → harvest-table row: the panorama filter and the pose check (pure).

Rules (notes §4, "never guess"): a record is a usable panorama only if ``is_pano`` is true,
``camera_type`` is ``spherical``/``equirectangular``, the original is 2:1 (``width == 2·height``)
and ``exif_orientation == 1``; otherwise it is *quarantined* with the reason. A panorama whose pose
cannot be built (:func:`s2r_data.poses.pose_from_mapillary` raises) is kept with status
``no_pose``. Ids are strings everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..frames import LocalFrame
from ..poses import PoseError, pose_from_mapillary
from .config import PANO_CAMERA_TYPES

__all__ = ["STATUSES", "DONE_STATUSES", "pano_problem", "pose_problem", "make_row", "record_lonlat"]

# harvested: image on disk and verified; quarantined: not a usable panorama (or image undecodable);
# no_pose: panorama without a usable pose; missing: id gone from Graph (code 100) or no image URL;
# failed: transient errors outlasted the retries (retried on the next run).
STATUSES = ("harvested", "quarantined", "no_pose", "missing", "failed")
DONE_STATUSES = frozenset({"harvested", "quarantined", "no_pose", "missing"})


def pano_problem(record: Mapping[str, Any], *, image_wh: tuple[int, int] | None = None) -> str | None:
    """Why this record is not a usable panorama, or None.

    ``image_wh`` (downloaded width, height) is checked for 2:1 too, and stands in for absent
    ``width``/``height`` fields.
    """
    is_pano = record.get("is_pano")
    if is_pano is not True:
        return "not_pano: is_pano missing" if is_pano is None else f"not_pano: is_pano={is_pano!r}"
    cam = record.get("camera_type")
    if cam not in PANO_CAMERA_TYPES:
        return "not_pano: camera_type missing" if cam is None else f"not_pano: camera_type={cam!r}"
    exif = record.get("exif_orientation")
    if exif is None:
        return "exif_orientation missing"
    if exif != 1:
        return f"exif_orientation={exif!r} (only 1 is supported)"
    w, h = record.get("width"), record.get("height")
    if w is not None and h is not None:
        try:
            w, h = int(w), int(h)
        except (TypeError, ValueError):
            return f"not_2to1: width={w!r} height={h!r}"
        if w != 2 * h:
            return f"not_2to1: original {w}x{h}"
    if image_wh is not None:
        iw, ih = image_wh
        if iw != 2 * ih:
            return f"not_2to1: image {iw}x{ih}"
    return None


def pose_problem(record: Mapping[str, Any], frame: LocalFrame) -> tuple[str | None, str | None]:
    """(pose confidence, None) when a pose can be built, else (None, reason)."""
    try:
        pose = pose_from_mapillary(record, frame)
    except PoseError as e:
        return None, f"no_pose: {e.reason}"
    return pose.confidence, None


def record_lonlat(record: Mapping[str, Any] | None) -> tuple[float | None, float | None, str | None]:
    """(lon, lat, source): ``computed_geometry``, else ``geometry``, else (None, None, None)."""
    if record:
        for key, src in (("computed_geometry", "computed"), ("geometry", "original")):
            g = record.get(key)
            if isinstance(g, Mapping):
                c = g.get("coordinates")
                if isinstance(c, (list, tuple)) and len(c) >= 2:
                    try:
                        return float(c[0]), float(c[1]), src
                    except (TypeError, ValueError):
                        pass
    return None, None, None


def _f(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _i(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def make_row(
    *,
    image_id: str,
    tile: str,
    status: str,
    reason: str | None,
    harvested_at_ms: int,
    record: Mapping[str, Any] | None = None,
    fallback_lonlat: tuple[float, float] | None = None,
    pose_confidence: str | None = None,
    image_path: str | None = None,
    image_sha256: str | None = None,
    image_wh: tuple[int, int] | None = None,
    image_size: str | None = None,
) -> dict[str, Any]:
    """One table row (see :data:`s2r_data.mapillary.table.SCHEMA`). Never holds a URL."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    rec = record or {}
    lon, lat, src = record_lonlat(rec)
    if lon is None and fallback_lonlat is not None:
        lon, lat, src = fallback_lonlat[0], fallback_lonlat[1], "tile"
    rot = rec.get("computed_rotation")
    rot3 = None
    if isinstance(rot, (list, tuple)) and len(rot) == 3:
        try:
            rot3 = [float(v) for v in rot]
        except (TypeError, ValueError):
            rot3 = None
    creator = rec.get("creator") if isinstance(rec.get("creator"), Mapping) else {}
    seq = rec.get("sequence")
    if isinstance(seq, Mapping):  # defensive: some clients expand edges
        seq = seq.get("id")
    return {
        "image_id": str(image_id),
        "tile": tile,
        "lon": lon,
        "lat": lat,
        "position_source": src,
        "computed_rotation": rot3,
        "computed_compass_angle": _f(rec.get("computed_compass_angle")),
        "compass_angle": _f(rec.get("compass_angle")),
        "computed_altitude": _f(rec.get("computed_altitude")),
        "altitude": _f(rec.get("altitude")),
        "captured_at": _i(rec.get("captured_at")),
        "sequence_id": _s(seq),
        "camera_type": _s(rec.get("camera_type")),
        "width": _i(rec.get("width")),
        "height": _i(rec.get("height")),
        "exif_orientation": _i(rec.get("exif_orientation")),
        "is_pano": rec.get("is_pano") if isinstance(rec.get("is_pano"), bool) else None,
        "atomic_scale": _f(rec.get("atomic_scale")),
        "quality_score": _f(rec.get("quality_score")),
        "merge_cc": _f(rec.get("merge_cc")),  # float in JSON, imprecise past 2**53: never a key
        "creator_id": _s(creator.get("id")),
        "creator_username": _s(creator.get("username")),
        "make": _s(rec.get("make")),
        "model": _s(rec.get("model")),
        "pose_confidence": pose_confidence,
        "status": status,
        "reason": reason,
        "image_path": image_path,
        "image_sha256": image_sha256,
        "image_width": image_wh[0] if image_wh else None,
        "image_height": image_wh[1] if image_wh else None,
        "image_size": image_size,
        "harvested_at": int(harvested_at_ms),
    }
