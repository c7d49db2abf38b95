"""``python -m s2r_data.render``: render poses of a city model (Blender worker or ray caster).

Example::

    python -m s2r_data.render --city-model outputs/city/sample/city_model.npz \\
        --poses poses.json --out outputs/renders --width 1024 [--backend raycast]

``poses.json``: a list of :meth:`s2r_data.poses.Pose.to_dict` objects, or ``{"poses": [...]}``; or
raw Mapillary Graph API image records (a list, ``{"data": [...]}`` or a replay server's
``{"images": [...]}``) together with ``--city``,
converted with :func:`s2r_data.poses.pose_from_mapillary` in that city's frame (which must be the
model's). Writes ``<out>/<image_id>.npz`` (labels) or ``.jpg`` (photo) and
``<out>/render_report.json``; outputs whose content key matches are reused, and the summary says
how many and why the others were rendered. Exit code 0 when no pose failed, 1 otherwise, 2 on bad
arguments or setup errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path

from ..atomic import atomic_write_text
from ..citymodel import CityModelError
from ..poses import DEFAULT_MOUNT_HEIGHT_M, Pose, PoseError, pose_from_mapillary
from .settings import BACKENDS, RenderSettings

__all__ = ["main", "parse_args", "load_poses_json", "is_mapillary_record"]


def is_mapillary_record(item: object) -> bool:
    """A Graph API image record (``id`` + a geometry) rather than a :meth:`Pose.to_dict`."""
    return isinstance(item, dict) and "center_local_m" not in item and "id" in item and (
        "computed_geometry" in item or "geometry" in item)


def load_poses_json(path: Path, city=None, *, mount_height_m: float | None = None) -> tuple[list[Pose], list[str]]:
    """Poses from ``path`` and the problems of records that have no usable pose.

    Pose dicts are read as they are; Mapillary records need ``city`` (a :class:`CityConfig`) and
    are converted in its frame, ``mount_height_m`` above the ground (default: the city's)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--poses {path}: cannot read JSON ({e})")
    items = next((doc[k] for k in ("poses", "data", "images") if k in doc), None) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SystemExit(f"--poses {path}: expected a list of poses, {{'poses': [...]}} or Mapillary records {{'data': [...]}}")
    poses: list[Pose] = []
    problems: list[str] = []
    n_records = sum(map(is_mapillary_record, items))
    if n_records and city is None:
        raise SystemExit(f"--poses {path} holds {n_records} Mapillary Graph record(s); add --city NAME (the city the "
                         "--city-model was built for) to convert them to poses in its frame")
    height = mount_height_m if mount_height_m is not None else float(
        (city.defaults if city is not None else {}).get("mount_height_m", DEFAULT_MOUNT_HEIGHT_M))
    for k, d in enumerate(items):
        try:
            if is_mapillary_record(d):
                poses.append(pose_from_mapillary(d, city.frame, mount_height_m=height))
            else:
                poses.append(Pose.from_dict(d))
        except PoseError as e:
            problems.append(f"{d.get('id')}: {e.reason} ({e})")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SystemExit(f"--poses {path}: entry {k} is neither a Pose dict (image_id, center_local_m, "
                             f"R_world_to_cam_opensfm) nor a Mapillary image record (id, computed_geometry, …): {e!r}")
    return poses, problems


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, RenderSettings]:
    d = RenderSettings()
    p = argparse.ArgumentParser(prog="python -m s2r_data.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--city-model", type=Path, required=True, help="city_model.npz (python -m s2r_data.osm build)")
    p.add_argument("--poses", type=Path, required=True, help="JSON list of Pose dicts, or of Mapillary Graph image records (with --city)")
    p.add_argument("--city", default=None, help="convert Mapillary records in this city's frame (data/cities.yaml); checked against the model")
    p.add_argument("--registry", type=Path, default=None, help="city registry YAML for --city (default data/cities.yaml)")
    p.add_argument("--mount-height-m", type=float, default=None, help="camera height above the ground for Mapillary records (default: the city's)")
    p.add_argument("--backend", choices=list(BACKENDS), default=d.backend,
                   help="blender: Cycles, the reference (and the only one for --mode photo); raycast: Embree first-hit casting, same pixels, faster")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--width", type=int, default=d.width, help="panorama width in px (even; height = width/2)")
    p.add_argument("--mode", choices=["labels", "photo"], default=d.mode)
    p.add_argument("--samples", type=int, default=None, help="Cycles samples (labels: 1; photo default 4)")
    p.add_argument("--threads", type=int, default=d.threads, help="render threads, either backend (0 = all cores)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=d.device)
    p.add_argument("--clip-end-m", type=float, default=d.clip_end_m)
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help="per-pose timeout")
    p.add_argument("--restart-every", type=int, default=d.restart_every, help="poses per Blender process")
    p.add_argument("--on-bad-pose", choices=["render", "skip"], default=d.on_bad_pose,
                   help="poses outside the model bbox / inside a building: render (flagged) or skip")
    p.add_argument("--denoise", action="store_true", help="photo mode: OpenImageDenoise")
    p.add_argument("--compress", action="store_true", help="zip-deflate the .npz outputs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    a = p.parse_args(argv)
    try:
        settings = RenderSettings(
            width=a.width, clip_end_m=a.clip_end_m, threads=a.threads, samples=a.samples, timeout_s=a.timeout_s,
            restart_every=a.restart_every, device=a.device, mode=a.mode, on_bad_pose=a.on_bad_pose,
            denoise=a.denoise, compress=a.compress, backend=a.backend,
        )
    except ValueError as e:
        p.error(str(e))
    return a, settings


def main(argv: list[str] | None = None) -> int:
    from ..cities import CityRegistryError, UnknownCityError, load_city
    from ..citymodel import CityModel
    from .batch import RenderError, render_poses, summarize_results
    from .pose_checks import check_same_reference

    a, settings = parse_args(argv)
    if a.dry_run:
        print(json.dumps(settings.to_dict(), indent=2))
        return 0
    try:
        city = load_city(a.city, a.registry) if a.city else None
    except (UnknownCityError, CityRegistryError) as e:
        print(f"error: --city {a.city}: {e}", file=sys.stderr)
        return 2
    poses, problems = load_poses_json(a.poses, city, mount_height_m=a.mount_height_m)
    for problem in problems:
        print(f"skipped record without a usable pose: {problem}", file=sys.stderr)
    try:
        if city is not None:
            check_same_reference(CityModel.load(a.city_model), city.reference_lonlat,
                                 poses_label=f"the poses (converted with --city {city.name})", model_label=f"city model {a.city_model}")
        results = render_poses(a.city_model, poses, a.out, settings, progress=not a.no_progress)
    except (CityModelError, RenderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize_results(results)
    report = {
        "settings": settings.to_dict(),
        "city_model": os.path.abspath(a.city_model),
        "counts": dict(Counter(r.status for r in results)),
        "rendered_because": dict(Counter(r.rendered_because for r in results if r.status == "ok")),
        "summary": summary,
        "records_without_pose": problems,
        "results": [{**dataclasses.asdict(r), "path": str(r.path) if r.path else None} for r in results],
    }
    atomic_write_text(a.out / "render_report.json", json.dumps(report, indent=2))
    print(json.dumps(report["counts"]))
    print(summary)
    for r in results:
        if r.status == "failed":
            print(f"failed {r.image_id}: {r.reason}", file=sys.stderr)
    return 1 if report["counts"].get("failed") else 0
