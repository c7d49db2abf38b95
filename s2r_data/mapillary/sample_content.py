"""Replay content for the local Mapillary stand-in: synthetic panoramas along a city's streets.

Two modes (``python -m s2r_data.mapillary.sample_content --mode … --out DIR``):

* ``realistic`` (default; the embedded ``sample`` city's ``data/sample/replay``): stand-in photos
  rendered from a *true world* (the OSM model with per-building offsets and height changes, plus
  trees, parked vehicles, poles and people) at *true poses*, Graph records carrying *reported*
  poses with realistic errors, and the hidden truth in ``truth.json``. See
  :mod:`s2r_data.mapillary.standin_content`.
* ``exact`` (for geometric tests): ~24 poses along the OSM highway lines inside the city boundary
  (every ~9 m, heading along the street, pitch/roll within ±3°, at least 1.5 m from building
  footprints), photos rendered by the photo mode on the OSM model at exactly the served poses.

This module holds the exact mode and what both share: street lines, Graph records
(:func:`panorama_record`), photo rendering and finishing, content writing, the CLI. Rotations
are real Mapillary ``computed_rotation`` vectors: world = true-north ENU at the image, so the grid
rotation of the city frame is undone (``R_enu = R_local · R_enu_true_to_local``), and
:func:`s2r_data.poses.pose_from_mapillary` gives back exactly the pose a record was made from.

Stand-in data generation only: no pipeline code imports this module or its ``standin_*`` siblings.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import string
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from shapely.geometry import LineString, MultiLineString
from shapely.geometry.base import BaseGeometry
import shapely

from ..atomic import atomic_write_bytes, atomic_write_text
from ..cities import CityConfig, load_city
from ..frames import LocalFrame
from ..poses import Pose, heading_pitch_roll_deg, pose_from_mapillary, rotation_from_heading_pitch_roll, rotvec_from_matrix
from .standin_world import StreetWay, tangent_heading_deg

__all__ = [
    "Placement",
    "street_lines_local",
    "street_ways_local",
    "place_panoramas",
    "panorama_record",
    "make_records",
    "placeholder_jpeg",
    "write_content",
    "generate_sample_content",
    "main",
]

SAMPLE_CREATOR = {"id": "100000000000001", "username": "s2r-sample"}
# streets a street-view capture drives or walks along (sidewalks, cycleways and paths run beside
# them or across slabs the city model does not represent)
STREET_HIGHWAYS = frozenset(
    {"motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential", "living_street",
     "service", "pedestrian", "primary_link", "secondary_link", "tertiary_link"}
)  # fmt: skip
_BASE_CAPTURED_AT_MS = 1718445600000  # 2024-06-15T10:00:00Z


@dataclass(frozen=True)
class Placement:
    x_m: float  # local_m
    y_m: float
    heading_grid_deg: float  # clockwise from grid north (local_m +y)
    street_key: str  # one sequence per street line


def street_lines_local(
    osm_path: str | Path,
    frame: LocalFrame,
    boundary_local: BaseGeometry,
    highways: frozenset[str] | None = STREET_HIGHWAYS,
) -> list[tuple[str, LineString]]:
    """OSM ``highway=*`` ways (of the given types; None = all) clipped to the boundary, in
    ``local_m`` (one entry per clipped part, keyed ``w<way id>[_<part>]``)."""
    return [(w.key, w.line) for w in street_ways_local(osm_path, frame, boundary_local, highways)]


def street_ways_local(
    osm_path: str | Path,
    frame: LocalFrame,
    boundary_local: BaseGeometry,
    highways: frozenset[str] | None = STREET_HIGHWAYS,
) -> list[StreetWay]:
    """As :func:`street_lines_local`, with each way's carriageway width
    (:func:`s2r_data.osm.classify.road_width_m`) and ``highway`` tag."""
    import osmium

    from ..osm.classify import road_width_m

    out: list[StreetWay] = []
    for o in osmium.FileProcessor(str(osm_path)).with_locations():
        if not (o.is_way() and "highway" in o.tags):
            continue
        if highways is not None and o.tags["highway"] not in highways:
            continue
        try:
            lonlat = [(n.lon, n.lat) for n in o.nodes]
        except osmium.InvalidLocationError:
            continue
        if len(lonlat) < 2:
            continue
        tags = {t.k: t.v for t in o.tags}
        x, y = frame.lonlat_to_local([p[0] for p in lonlat], [p[1] for p in lonlat])
        clipped = LineString(np.column_stack([x, y])).intersection(boundary_local)
        parts = clipped.geoms if isinstance(clipped, MultiLineString) else [clipped]
        for i, part in enumerate(parts):
            if isinstance(part, LineString) and not part.is_empty and part.length > 0.5:
                out.append(StreetWay(f"w{o.id}" + (f"_{i}" if i else ""), part, float(road_width_m(tags)), tags["highway"]))
    return sorted(out, key=lambda w: w.key)


def place_panoramas(
    lines: Sequence[tuple[str, LineString]],
    footprints_local: BaseGeometry,
    *,
    step_m: float = 9.0,
    clearance_m: float = 1.5,
    max_count: int = 24,
    run_length: int = 6,
    center_xy_m: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> list[Placement]:
    """Points every ``step_m`` along each line, ≥ ``clearance_m`` from every footprint and
    ≥ ``step_m / 2`` from each other, heading
    along the line (reversed on some streets, as capture direction varies). At most
    ``max_count``: per street a run of ``run_length`` consecutive positions (a capture sequence),
    streets nearest ``center_xy_m`` (the city reference point) first, skipping runs within
    2·``step_m`` of runs already taken (dual carriageways)."""
    if step_m <= 0 or clearance_m < 0 or max_count < 1:
        raise ValueError(f"need step_m > 0, clearance_m >= 0, max_count >= 1 (got {step_m}, {clearance_m}, {max_count})")
    rng = random.Random(seed)
    keep_out = footprints_local.buffer(clearance_m) if not footprints_local.is_empty else None
    found: list[Placement] = []
    for key, line in lines:
        reverse = rng.random() < 0.5
        n = max(1, int(line.length // step_m))
        offset = (line.length - (n - 1) * step_m) / 2 if n > 1 else line.length / 2
        for i in range(n):
            s = offset + i * step_m
            p = line.interpolate(s)
            if keep_out is not None and keep_out.contains(p):
                continue
            if any(math.hypot(q.x_m - p.x, q.y_m - p.y) < step_m / 2 for q in found):
                continue  # overlapping ways (sidewalk beside carriageway): one pano is enough
            h = tangent_heading_deg(line, s)
            found.append(Placement(float(p.x), float(p.y), (h + 180.0) % 360.0 if reverse else h, key))
    if len(found) <= max_count:
        return found
    by_street: dict[str, list[Placement]] = {}
    for p in found:
        by_street.setdefault(p.street_key, []).append(p)

    def dist(p: Placement) -> float:
        return math.hypot(p.x_m - center_xy_m[0], p.y_m - center_xy_m[1])

    candidates = []  # per street: its run of run_length consecutive positions nearest the centre
    for key, pts in by_street.items():
        n = min(run_length, len(pts))
        start = min(range(len(pts) - n + 1), key=lambda i: sum(dist(p) for p in pts[i : i + n]))
        run = pts[start : start + n]
        candidates.append((sum(dist(p) for p in run) / n, key, run))
    selected: list[Placement] = []
    for _, _, run in sorted(candidates, key=lambda c: (c[0], c[1])):
        if any(math.hypot(p.x_m - q.x_m, p.y_m - q.y_m) < 2 * step_m for p in run for q in selected):
            continue  # the other carriageway of a street already taken
        selected.extend(run[: max_count - len(selected)])
        if len(selected) >= max_count:
            break
    if len(selected) < max_count:  # few streets: fill up with the remaining positions nearest the centre
        rest = sorted((p for p in found if p not in selected), key=dist)
        selected.extend(rest[: max_count - len(selected)])
    keep = {id(p) for p in selected}
    return [p for p in found if id(p) in keep]


def _random_id(rng: random.Random, digits: int = 16) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def panorama_record(
    image_id: str,
    placement: Placement,
    frame: LocalFrame,
    *,
    pitch_deg: float,
    roll_deg: float,
    sequence_id: str,
    captured_at_ms: int,
    rng: random.Random,
    width: int = 2048,
) -> dict[str, Any]:
    """A Graph image record (Mapillary field names and types) for a panorama at ``placement``."""
    lon, lat = (float(v) for v in frame.local_to_lonlat(placement.x_m, placement.y_m))
    R_local = rotation_from_heading_pitch_roll(placement.heading_grid_deg, pitch_deg, roll_deg)
    R_enu = R_local @ frame.R_enu_true_to_local(lon, lat)  # undo the meridian convergence
    compass = heading_pitch_roll_deg(R_enu)[0]
    gps_dx, gps_dy = rng.gauss(0, 1.5), rng.gauss(0, 1.5)  # EXIF GPS is a few metres off
    glon, glat = (float(v) for v in frame.local_to_lonlat(placement.x_m + gps_dx, placement.y_m + gps_dy))
    return {
        "id": image_id,
        "computed_geometry": {"type": "Point", "coordinates": [lon, lat]},
        "geometry": {"type": "Point", "coordinates": [glon, glat]},
        "computed_rotation": [float(v) for v in rotvec_from_matrix(R_enu)],
        "computed_compass_angle": round(compass, 6),
        "compass_angle": round((compass + rng.gauss(0, 6.0)) % 360.0, 3),
        "computed_altitude": round(2.5 + rng.gauss(0, 0.8), 3),
        "altitude": round(38.0 + rng.gauss(0, 3.0), 3),
        "atomic_scale": round(rng.uniform(0.92, 1.08), 6),
        "camera_type": "spherical",
        "captured_at": int(captured_at_ms),
        "sequence": sequence_id,
        "is_pano": True,
        "width": width,
        "height": width // 2,
        "exif_orientation": 1,
        "creator": dict(SAMPLE_CREATOR),
        "make": "s2r",
        "model": "synthetic stand-in (Blender photo mode)",
        "quality_score": round(rng.uniform(0.6, 0.95), 4),
        # zlib.crc32, not hash(): str hashes change per process (PYTHONHASHSEED), records must not
        "merge_cc": float(4546427159383000000 + (zlib.crc32(sequence_id.encode()) % 1000) * 1000),
    }


def make_records(
    placements: Sequence[Placement],
    frame: LocalFrame,
    *,
    seed: int = 0,
    max_tilt_deg: float = 3.0,
    width: int = 2048,
    organization_id: int | None = 1805883732926354,
) -> list[dict[str, Any]]:
    """One record per placement: 16-digit string ids, one sequence per street, captures 2 s apart,
    pitch and roll uniform in ±``max_tilt_deg``. ``organization_id`` (a tiles-only property) on
    about half the records, as live tiles often lack it."""
    rng = random.Random(seed)
    seqs: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, pl in enumerate(placements):
        if pl.street_key not in seqs:
            seqs[pl.street_key] = "".join(rng.choices(string.ascii_lowercase + string.digits, k=22))
        rec = panorama_record(
            _random_id(rng),
            pl,
            frame,
            pitch_deg=rng.uniform(-max_tilt_deg, max_tilt_deg),
            roll_deg=rng.uniform(-max_tilt_deg, max_tilt_deg),
            sequence_id=seqs[pl.street_key],
            captured_at_ms=_BASE_CAPTURED_AT_MS + 600_000 * len(seqs) + 2000 * i,
            rng=rng,
            width=width,
        )
        if organization_id is not None and rng.random() < 0.5:
            rec["organization_id"] = organization_id
        out.append(rec)
    return out


def placeholder_jpeg(width: int = 256, *, seed: int = 0, quality: int = 85) -> bytes:
    """A cheap 2:1 stand-in panorama (sky gradient, ground, random blocks) for tests."""
    from PIL import Image

    h = width // 2
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = np.array([90, 150, 230]) * (1 - rows) + np.array([200, 220, 240]) * rows
    img = np.broadcast_to(sky, (h, width, 3)).copy()
    img[h // 2 :] = np.array([95, 90, 85]) + rng.integers(-10, 10, size=3)
    for _ in range(6):
        x0 = int(rng.integers(0, width))
        w = int(rng.integers(width // 32 + 1, width // 6 + 2))
        top = int(rng.integers(h // 8, h // 2))
        img[top : h // 2, x0 : x0 + w] = rng.integers(80, 220, size=3)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_content(out_dir: str | Path, records: Sequence[dict[str, Any]], images: dict[str, bytes] | None = None) -> Path:
    """Write ``images.json`` and ``images/<id>.jpg`` (each atomically)."""
    out_dir = Path(out_dir)
    for image_id, data in (images or {}).items():
        atomic_write_bytes(out_dir / "images" / f"{image_id}.jpg", data)
    atomic_write_text(out_dir / "images.json", json.dumps({"images": list(records)}, indent=1) + "\n")
    return out_dir


def finish_photo(jpeg: bytes, *, quality: int = 85, blur_px: float = 0.6) -> bytes:
    """Light denoise of a few-sample Cycles render (Gaussian, σ = ``blur_px``) and an optimised JPEG:
    ~290 KB instead of ~410 KB at 2048 px, keeping the committed content under 10 MB."""
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(jpeg)) as im:
        img = im.convert("RGB")
    if blur_px > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur_px))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def photo_ok(path: Path, width: int) -> bool:
    """``path`` is a readable JPEG of ``width`` × ``width / 2`` (a finished stand-in photo)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "JPEG" and im.size == (width, width // 2)
    except (OSError, ValueError):
        return False


def render_photos(
    model_path: Path,
    poses: Sequence[Pose],
    images_dir: Path,
    *,
    width: int,
    quality: int,
    work_dir: Path,
    progress: bool = True,
) -> list[str]:
    """Stand-in photos ``images_dir/<id>.jpg`` of ``poses`` from the renderer's photo mode (lit,
    textured, sky; the model's photo extras included), finished by :func:`finish_photo`.

    Resumable per image: photos already finished are kept, each new one is written atomically as
    soon as it is rendered (raw renders wait in ``work_dir/photos/<key>``, ``key`` a hash of the
    model file name, poses and width, so a raw render is never reused for another pose). Returns
    one line per failed image."""
    from ..render import RenderSettings, render_poses

    todo = [p for p in poses if not photo_ok(images_dir / f"{p.image_id}.jpg", width)]
    if not todo:
        return []
    key = hashlib.sha256(json.dumps([str(model_path), width, [p.to_dict() for p in poses]]).encode()).hexdigest()[:16]
    failed: list[str] = []

    def finish(r) -> None:
        if r.status in ("ok", "skipped_existing") and r.path is not None:
            atomic_write_bytes(images_dir / f"{r.image_id}.jpg", finish_photo(r.path.read_bytes(), quality=quality))
            r.path.unlink()
        else:
            failed.append(f"{r.image_id} ({r.status}: {r.reason})")

    settings = RenderSettings(mode="photo", width=width, jpeg_quality=95)
    render_poses(model_path, todo, work_dir / "photos" / key, settings, progress=progress, on_result=finish)
    return failed


def _render_photos(city: CityConfig, records: Sequence[dict[str, Any]], width: int, quality: int, work_dir: Path, out_dir: Path) -> None:
    """Exact mode: photos from the OSM city model at the harvested poses."""
    from ..osm import build_or_load_city_model  # the renderer's input

    model_path = Path(build_or_load_city_model(city, work_dir / "city"))
    poses = [pose_from_mapillary(r, city.frame) for r in records]
    failed = render_photos(model_path, poses, out_dir / "images", width=width, quality=quality, work_dir=work_dir)
    if failed:
        raise RuntimeError(f"renderer produced no photo for {len(failed)} images ({'; '.join(failed[:3])}); rerun to retry them")


def remove_stale(out_dir: Path, keep_ids: set[str]) -> None:
    """Delete ``out_dir/images/<id>.jpg`` of ids not in ``keep_ids`` (earlier content)."""
    if (out_dir / "images").is_dir():
        for p in (out_dir / "images").glob("*.jpg"):
            if p.stem not in keep_ids:
                p.unlink()


def _footprints_local(city: CityConfig, work_dir: Path) -> BaseGeometry:
    from ..osm import build_or_load_city_model

    model = build_or_load_city_model(city, work_dir / "city")
    if isinstance(model, (str, Path)):
        from ..citymodel import CityModel

        model = CityModel.load(model)
    return model.footprints()


def generate_sample_content(
    out_dir: str | Path,
    *,
    city_name: str = "sample",
    count: int = 24,
    step_m: float = 9.0,
    seed: int = 0,
    photos: str = "render",
    width: int = 2048,
    quality: int = 85,
    work_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Place, describe and (``photos='render'``) render the sample city's panoramas.

    ``photos='placeholder'`` writes synthetic stand-ins instead (no Blender), ``'none'`` only
    ``images.json``."""
    if photos not in ("render", "placeholder", "none"):
        raise ValueError(f"photos={photos!r}: expected 'render', 'placeholder' or 'none'")
    city = load_city(city_name)
    frame = city.frame
    boundary_local = shapely.transform(city.polygon, lambda xy: np.column_stack(frame.lonlat_to_local(xy[:, 0], xy[:, 1])))
    tmp_ctx = tempfile.TemporaryDirectory(prefix="s2r-sample-") if work_dir is None else None
    work = Path(work_dir) if work_dir is not None else Path(tmp_ctx.name)
    try:
        footprints = _footprints_local(city, work)
        lines = street_lines_local(city.local_osm_path(), frame, boundary_local)
        placements = place_panoramas(lines, footprints, step_m=step_m, max_count=count, seed=seed)
        if len(placements) < count:  # short streets: step down to the low end of 8-10 m
            placements = place_panoramas(lines, footprints, step_m=min(step_m, 8.0), max_count=count, seed=seed)
        records = make_records(placements, frame, seed=seed, width=width)
        out = Path(out_dir)
        remove_stale(out, {r["id"] for r in records})
        for hidden in ("truth.json", "truth_map.png"):  # exact content has no hidden truth
            (out / hidden).unlink(missing_ok=True)
        images: dict[str, bytes] = {}
        if photos == "render":
            _render_photos(city, records, width, quality, work, out)
        elif photos == "placeholder":
            images = {r["id"]: placeholder_jpeg(width, seed=i, quality=quality) for i, r in enumerate(records)}
        write_content(out, records, images)
        return records
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s2r_data.mapillary.sample_content", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("realistic", "exact"), default="realistic",
                    help="realistic: photos of a true world at true poses, records with reported poses, truth.json "
                         "(default); exact: photos at the served poses on the OSM model")
    ap.add_argument("--out", default="data/sample/replay")
    ap.add_argument("--city", default="sample")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", choices=("render", "placeholder", "none"), default="render")
    ap.add_argument("--width", type=int, default=2048, help="photo width in px (height = width / 2)")
    ap.add_argument("--quality", type=int, default=85)
    ap.add_argument("--work-dir", default=None, help="keep the city model(s) and raw renders here")
    ap.add_argument("--step-m", type=float, default=9.0, help="exact mode: spacing along the streets")
    ap.add_argument("--images-per-sequence", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                    help="realistic mode: sequence lengths (default 5 12)")
    ap.add_argument("--centre-m", type=float, nargs=2, metavar=("X", "Y"), default=(0.0, 0.0),
                    help="realistic mode: streets nearest this local_m point first (default: the city's reference point)")
    ap.add_argument("--force", action="store_true", help="realistic mode: replace content of another plan in --out")
    ap.add_argument("--keep-work", action="store_true", help="realistic mode: keep --out/.work after a complete run")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.mode == "exact":
        recs = generate_sample_content(
            args.out, city_name=args.city, count=args.count, step_m=args.step_m, seed=args.seed, photos=args.photos,
            width=args.width, quality=args.quality, work_dir=args.work_dir,
        )
        n, extra = len(recs), ""
    else:
        from .standin_capture import CaptureConfig
        from .standin_content import RealisticConfig, StandinContentError, generate_realistic_content

        capture = {"count": args.count, "centre_xy_m": tuple(args.centre_m)}
        if args.images_per_sequence is not None:
            capture["images_per_sequence"] = tuple(args.images_per_sequence)
        try:
            config = RealisticConfig(city=args.city, seed=args.seed, width=args.width, quality=args.quality,
                                     capture=CaptureConfig(**capture))
            plan = generate_realistic_content(args.out, config, photos=args.photos, work_dir=args.work_dir, force=args.force,
                                              keep_work=args.keep_work)
        except (StandinContentError, ValueError) as e:
            print(f"sample_content: {e}", file=sys.stderr)
            return 2
        n = len(plan.records)
        t = plan.truth
        extra = (f"; {len(t['sequences'])} sequences, {len(t['buildings'])} buildings changed, {len(t['occluders'])} occluders, "
                 f"truth in {Path(args.out) / 'truth.json'}")
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file() and ".work" not in p.parts)
    print(f"wrote {n} panoramas to {args.out} ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s{extra}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
