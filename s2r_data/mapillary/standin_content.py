"""Realistic stand-in replay content: photos of a true world at true poses, records with reported poses.

Stand-in data generation only (never imported by the pipeline). The exact mode of
:mod:`s2r_data.mapillary.sample_content` renders its photos at the very pose it serves, on the
very OSM model the pipeline renders. Here instead:

1. the **true world** (:mod:`.standin_world`): the OSM model with per-building offsets, rotations
   and height changes, plus trees, parked vehicles, poles and people along the streets;
2. **true poses** (:mod:`.standin_capture`): sequences of a car or walker rig along the streets,
   an image every 2–5 m, some streets captured twice in opposite directions, the rig tilted;
3. **reported poses** (:mod:`.standin_errors`): true + smooth drift per sequence + per-image noise
   + a few gross errors; some records without ``computed_rotation``;
4. ``images.json`` (Graph records with the reported poses), ``truth.json``
   (:mod:`.standin_truth`; never served), its picture ``truth_map.png`` (:mod:`.standin_map`) and
   ``images/<id>.jpg`` rendered by the photo mode from the true world at the true poses.

Deterministic for a seed (separate random streams for buildings, occluders, capture, errors and
records); resumable per image (a killed run continues: same plan, missing photos only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..cities import CityConfig, load_city
from ..frames import LocalFrame
from ..citymodel import CityModel, Mesh
from ..photo_extras import save_photo_extras
from ..poses import Pose, heading_pitch_roll_deg, pose_from_mapillary, rotation_from_heading_pitch_roll
from .sample_content import (
    Placement,
    panorama_record,
    placeholder_jpeg,
    remove_stale,
    render_photos,
    street_ways_local,
    write_content,
)
from .standin_capture import CaptureConfig, CaptureSequence, plan_sequences, street_routes
from .standin_errors import PoseErrorConfig, draw_sequence_errors
from .standin_map import truth_map_png
from .standin_truth import TRUTH_FORMAT, truth_path
from .standin_world import (
    BuildingChange,
    Occluder,
    WorldConfig,
    apply_building_changes,
    draw_building_changes,
    occluder_meshes,
    place_occluders,
    true_city_model,
)

__all__ = [
    "GENERATOR_VERSION",
    "RealisticConfig",
    "StandinPlan",
    "StandinContentError",
    "osm_building_solids",
    "plan_realistic_content",
    "generate_realistic_content",
    "build_true_world",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "s2r-standin-1"
_BASE_CAPTURED_AT_MS = 1718445600000  # 2024-06-15T10:00:00Z
_SEED_STREAMS = ("buildings", "occluders", "capture", "errors", "records")
TRUE_MODEL_DIRNAME = "true_world"
TRUTH_MAP_FILENAME = "truth_map.png"  # beside truth.json: the world from above, true vs reported


class StandinContentError(RuntimeError):
    pass


@dataclass(frozen=True, kw_only=True)
class RealisticConfig:
    city: str = "sample"
    seed: int = 0
    width: int = 2048  # photo width (height = width / 2); also the records' width/height
    quality: int = 85  # JPEG quality of the finished photos
    world: WorldConfig = field(default_factory=WorldConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    errors: PoseErrorConfig = field(default_factory=PoseErrorConfig)
    gps_sigma_m: float = 5.0  # raw GPS (the records' ``geometry``) around the true position, per axis

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 8 or self.width % 2:
            raise ValueError(f"RealisticConfig.width={self.width!r} must be an even integer >= 8")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"RealisticConfig.quality={self.quality!r} must be in [1, 100]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RealisticConfig.seed={self.seed!r} must be an integer >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {"city": self.city, "seed": self.seed, "width": self.width, "quality": self.quality,
                "world": self.world.to_dict(), "capture": self.capture.to_dict(), "errors": self.errors.to_dict(),
                "gps_sigma_m": self.gps_sigma_m}


@dataclass
class StandinPlan:
    """Everything but the photos: records (served), truth document (hidden), the true world."""

    records: list[dict[str, Any]]
    truth: dict[str, Any]
    true_poses: list[Pose]
    true_model: CityModel
    extras: dict[str, Mesh]
    osm_model_path: Path


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_SEED_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(_SEED_STREAMS, children)}


def osm_building_solids(city: CityConfig, osm_model: CityModel, frame: LocalFrame | None = None):
    """The building solids the OSM model's walls and roofs were extruded from (same builder
    settings, read from the model's ``meta['build_config']``)."""
    from ..osm.builder import city_building_solids, city_clip_polygons
    from ..osm.reader import read_osm

    frame = frame or city.frame
    cfg = osm_model.meta.get("build_config", {})
    margin = float(cfg.get("margin_m", 200.0))
    boundary_local, clip = city_clip_polygons(city, margin, frame)
    x0, y0, x1, y1 = clip.bounds
    lon, lat = frame.local_to_lonlat(np.array([x0 - 100, x1 + 100, x0 - 100, x1 + 100]), np.array([y0 - 100, y0 - 100, y1 + 100, y1 + 100]))
    features = read_osm(city.local_osm_path(), bbox_lonlat=(float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))))
    solids, _ = city_building_solids(features, city, boundary_local, clip, float(cfg.get("level_height_m", 3.0)), frame)
    return solids


def _wrap_deg(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0


def pose_error(reported: Pose, true: Pose) -> dict[str, float]:
    """reported − true in ``local_m`` and degrees (grid heading, pitch, roll)."""
    d = reported.center_local_m - true.center_local_m
    hr, pr, rr = heading_pitch_roll_deg(reported.R_world_to_cam_opensfm)
    ht, pt, rt = heading_pitch_roll_deg(true.R_world_to_cam_opensfm)
    return {"dx_m": float(d[0]), "dy_m": float(d[1]), "dz_m": float(d[2]), "horizontal_m": float(np.hypot(d[0], d[1])),
            "heading_deg": _wrap_deg(hr - ht), "pitch_deg": float(pr - pt), "roll_deg": _wrap_deg(rr - rt)}


def _plan_key(config: RealisticConfig, osm_cache_key: str | None) -> str:
    doc = {"generator_version": GENERATOR_VERSION, "config": config.to_dict(), "osm_cache_key": osm_cache_key}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan_realistic_content(config: RealisticConfig, *, work_dir: str | Path) -> StandinPlan:
    """Build the true world, the sequences, the errors, the records and the truth document.

    ``work_dir`` caches the OSM city model (``work_dir/city``). No rendering."""
    from ..osm import build_or_load_city_model
    from ..osm.builder import city_clip_polygons

    city = load_city(config.city)
    frame = city.frame
    work = Path(work_dir)
    osm_model_path = Path(build_or_load_city_model(city, work / "city"))
    osm_model = CityModel.load(osm_model_path)
    rngs = _rngs(config.seed)

    solids = osm_building_solids(city, osm_model, frame)
    changes = draw_building_changes(solids, config.world, rngs["buildings"])
    true_solids, applied = apply_building_changes(solids, changes, min_building_height_m=config.world.min_building_height_m)
    true_fp = true_solids.footprint_union()

    boundary_local, clip = city_clip_polygons(city, float(osm_model.meta.get("build_config", {}).get("margin_m", 200.0)), frame)
    ways_around = street_ways_local(city.local_osm_path(), frame, clip)  # occluders: also beyond the boundary
    routes = street_routes(ways_around, boundary_local, inset_m=config.capture.boundary_inset_m, min_length_m=config.capture.min_route_m)
    sequences = plan_sequences(routes, true_fp, config.capture, rngs["capture"])
    cams = np.array([[im.x_m, im.y_m] for s in sequences for im in s.images])
    occluders = place_occluders(ways_around, true_fp, cams, config.world, rngs["occluders"])
    true_model = true_city_model(osm_model, true_solids, occluders)
    extras = occluder_meshes(occluders)

    records, true_poses, images_truth, seq_truth = _records_and_truth(sequences, config, frame, rngs)
    truth = {
        "format": TRUTH_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "city": city.name,
        "seed": config.seed,
        "seeds": {name: f"numpy SeedSequence({config.seed}).spawn({len(_SEED_STREAMS)})[{i}]" for i, name in enumerate(_SEED_STREAMS)},
        "plan_key": _plan_key(config, osm_model.meta.get("cache_key")),
        "config": {**config.to_dict(), "mount_height_m_reported": "pose_from_mapillary default (DEFAULT_MOUNT_HEIGHT_M)"},
        "city_model": {"builder_version": osm_model.meta.get("builder_version"), "cache_key": osm_model.meta.get("cache_key"),
                       "counts": osm_model.meta.get("counts", {})},
        "images": images_truth,
        "sequences": seq_truth,
        "buildings": {sid: {**c.to_dict(), "top_change_applied_m": applied.get(sid, 0.0)} for sid, c in changes.items()},
        "occluders": [o.to_dict() for o in occluders],
    }
    return StandinPlan(records, truth, true_poses, true_model, extras, osm_model_path)


def _records_and_truth(
    sequences: list[CaptureSequence], config: RealisticConfig, frame: LocalFrame, rngs: dict[str, np.random.Generator]
) -> tuple[list[dict[str, Any]], list[Pose], dict[str, Any], dict[str, Any]]:
    rec_rng = random.Random(int(rngs["records"].integers(0, 2**63)))  # panorama_record's stream
    gps_rng = rngs["records"]
    records: list[dict[str, Any]] = []
    poses: list[Pose] = []
    images_truth: dict[str, Any] = {}
    seq_truth: dict[str, Any] = {}
    seq_ids: list[str] = []
    for k, seq in enumerate(sequences):
        seq_id = "".join(rec_rng.choices(string.ascii_lowercase + string.digits, k=22))
        seq_ids.append(seq_id)
        errors = draw_sequence_errors(np.array([im.along_track_m for im in seq.images]), config.errors, rngs["errors"])
        ids = []
        for i, (im, err) in enumerate(zip(seq.images, errors)):
            image_id = str(rec_rng.randint(10**15, 10**16 - 1))
            rep = Placement(im.x_m + err.dx_m, im.y_m + err.dy_m, (im.heading_deg + err.heading_deg) % 360.0, seq.route)
            rec = panorama_record(
                image_id, rep, frame, pitch_deg=im.pitch_deg + err.pitch_deg, roll_deg=im.roll_deg + err.roll_deg,
                sequence_id=seq_id, captured_at_ms=_BASE_CAPTURED_AT_MS + 3_600_000 * k + int(1000 * im.t_s), rng=rec_rng,
                width=config.width,
            )
            gx, gy = gps_rng.normal(0.0, config.gps_sigma_m, size=2)
            glon, glat = (float(v) for v in frame.local_to_lonlat(im.x_m + gx, im.y_m + gy))
            rec["geometry"] = {"type": "Point", "coordinates": [glon, glat]}
            rec["model"] = "synthetic stand-in, realistic world (Blender photo mode)"
            if not err.has_rotation:
                del rec["computed_rotation"]
            if rec_rng.random() < 0.5:
                rec["organization_id"] = 1805883732926354
            lon, lat = (float(v) for v in frame.local_to_lonlat(im.x_m, im.y_m))
            true = Pose(image_id, [im.x_m, im.y_m, im.z_m], rotation_from_heading_pitch_roll(im.heading_deg, im.pitch_deg, im.roll_deg),
                        "truth", lon, lat)
            reported = pose_from_mapillary(rec, frame)
            records.append(rec)
            poses.append(true)
            ids.append(image_id)
            images_truth[image_id] = {
                "sequence": seq_id,
                "index": i,
                "true_pose": true.to_dict(),
                "reported_pose": reported.to_dict(),
                "true_hpr_deg": [im.heading_deg, im.pitch_deg, im.roll_deg],
                "injected": err.to_dict(),
                "error": pose_error(reported, true),
                "has_rotation": err.has_rotation,
                "gross": err.gross,
                "platform": seq.platform,
                "along_track_m": im.along_track_m,
            }
        seq_truth[seq_id] = {**seq.summary(), "image_ids": ids}
    for sid, s in seq_truth.items():  # opposite_of: index → sequence id
        if s["opposite_of"] is not None:
            s["opposite_of"] = seq_ids[s["opposite_of"]]
    return records, poses, images_truth, seq_truth


def _save_true_world(plan: StandinPlan, model_dir: Path) -> Path:
    path = plan.true_model.save(model_dir / "city_model.npz")
    save_photo_extras(path, plan.extras)
    return path


def generate_realistic_content(
    out_dir: str | Path,
    config: RealisticConfig = RealisticConfig(),
    *,
    photos: str = "render",
    work_dir: str | Path | None = None,
    force: bool = False,
    keep_work: bool = False,
    progress: bool = True,
) -> StandinPlan:
    """Write ``images.json``, ``truth.json`` and (``photos='render'``) ``images/<id>.jpg`` to
    ``out_dir``. ``photos='placeholder'`` writes cheap synthetic stand-ins (no Blender),
    ``'none'`` no photos.

    Resumable: rerunning the same command keeps the finished photos and renders the rest. Content
    of another plan (other seed, settings, generator version or OSM city model) in ``out_dir`` is
    an error unless ``force`` (then it is replaced). ``work_dir`` (default ``out_dir/.work``,
    removed after a complete run unless ``keep_work``) holds the OSM model, the true world and
    raw renders."""
    if photos not in ("render", "placeholder", "none"):
        raise ValueError(f"photos={photos!r}: expected 'render', 'placeholder' or 'none'")
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out / ".work"
    plan = plan_realistic_content(config, work_dir=work)
    key = plan.truth["plan_key"]
    tpath = truth_path(out)
    if tpath.is_file():
        try:
            old = json.loads(tpath.read_text())
        except (OSError, ValueError):
            old = {}
        # same key but another plan: the generator's code changed without a GENERATOR_VERSION bump
        if old.get("plan_key") != key or json.dumps(old, sort_keys=True) != json.dumps(plan.truth, sort_keys=True):
            if not force:
                raise StandinContentError(
                    f"{out} holds stand-in content of another plan (seed, settings, generator or OSM city model "
                    "differ); pass --force to replace it, or choose another --out"
                )
            log.warning("replacing the stand-in content in %s (another plan)", out)
            remove_stale(out, set())
    remove_stale(out, {r["id"] for r in plan.records})  # e.g. exact content before
    # records and truth first: a killed render loses no plan, and the plan can be used at once
    write_content(out, plan.records)
    atomic_write_text(tpath, json.dumps(plan.truth, indent=1) + "\n")
    osm_fp = CityModel.load(plan.osm_model_path).footprints()
    atomic_write_bytes(out / TRUTH_MAP_FILENAME, truth_map_png(plan.truth, osm_fp, plan.true_model.footprints()))
    if photos == "placeholder":
        write_content(out, plan.records, {r["id"]: placeholder_jpeg(config.width, seed=i, quality=config.quality) for i, r in enumerate(plan.records)})
    elif photos == "render":
        model_path = _save_true_world(plan, work / TRUE_MODEL_DIRNAME)
        failed = render_photos(model_path, plan.true_poses, out / "images", width=config.width, quality=config.quality,
                               work_dir=work, progress=progress)
        if failed:
            raise StandinContentError(
                f"{len(failed)} of {len(plan.records)} photos failed ({'; '.join(failed[:3])}); rerun the same command to "
                f"retry them (finished photos are kept in {out / 'images'})"
            )
    if work_dir is None and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return plan


def build_true_world(content_dir: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the true world of realistic content from its ``truth.json`` and the city's OSM
    extract: ``out_dir/city_model.npz`` (true buildings) + its photo extras (occluders). For
    benchmarks (e.g. rendering the true world's label passes). Raises when the OSM city model
    differs from the one the content was generated from."""
    from ..osm import build_or_load_city_model
    from .standin_truth import load_truth

    truth = load_truth(content_dir)
    city = load_city(truth.city)
    out = Path(out_dir)
    osm_model = CityModel.load(build_or_load_city_model(city, out / "osm"))
    want = truth.raw["city_model"]["cache_key"]
    if osm_model.meta.get("cache_key") != want:
        raise StandinContentError(
            f"the {city.name!r} OSM city model changed since {content_dir} was generated (cache key "
            f"{str(osm_model.meta.get('cache_key'))[:12]}… vs {str(want)[:12]}…); regenerate the content"
        )
    solids = osm_building_solids(city, osm_model, city.frame)
    changes = {k: BuildingChange.from_dict(v) for k, v in truth.buildings.items()}
    cfg = truth.raw["config"]["world"]
    true_solids, _ = apply_building_changes(solids, changes, min_building_height_m=float(cfg["min_building_height_m"]))
    occluders = [Occluder.from_dict(o) for o in truth.occluders]
    model = true_city_model(osm_model, true_solids, occluders)
    path = model.save(out / "city_model.npz")
    save_photo_extras(path, occluder_meshes(occluders))
    return path

