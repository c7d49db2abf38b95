"""``python -m s2r_data.render``: render poses of a city model with one supervised Blender worker.

Example::

    python -m s2r_data.render --city-model outputs/city/sample/city_model.npz \\
        --poses poses.json --out outputs/renders --width 1024

``poses.json``: a list of :meth:`s2r_data.poses.Pose.to_dict` objects, or ``{"poses": [...]}``.
Writes ``<out>/<image_id>.npz`` (labels) or ``.jpg`` (photo) and ``<out>/render_report.json``.
Exit code 0 when no pose failed, 1 otherwise, 2 on bad arguments or setup errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

from ..atomic import atomic_write_text
from ..citymodel import CityModelError
from ..poses import Pose
from .settings import RenderSettings

__all__ = ["main", "parse_args", "load_poses_json"]


def load_poses_json(path: Path) -> list[Pose]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--poses {path}: cannot read JSON ({e})")
    items = doc.get("poses") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SystemExit(f"--poses {path}: expected a list of poses or {{'poses': [...]}}")
    try:
        return [Pose.from_dict(d) for d in items]
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"--poses {path}: entry is not a Pose dict (image_id, center_local_m, R_world_to_cam_opensfm): {e}")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, RenderSettings]:
    d = RenderSettings()
    p = argparse.ArgumentParser(prog="python -m s2r_data.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--city-model", type=Path, required=True, help="city_model.npz (python -m s2r_data.osm build)")
    p.add_argument("--poses", type=Path, required=True, help="JSON list of Pose dicts")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--width", type=int, default=d.width, help="panorama width in px (even; height = width/2)")
    p.add_argument("--mode", choices=["labels", "photo"], default=d.mode)
    p.add_argument("--samples", type=int, default=None, help="Cycles samples (labels: 1; photo default 4)")
    p.add_argument("--threads", type=int, default=d.threads, help="Cycles threads (0 = all cores)")
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
            denoise=a.denoise, compress=a.compress,
        )
    except ValueError as e:
        p.error(str(e))
    return a, settings


def main(argv: list[str] | None = None) -> int:
    from .batch import RenderError, render_poses

    a, settings = parse_args(argv)
    if a.dry_run:
        print(json.dumps(settings.to_dict(), indent=2))
        return 0
    poses = load_poses_json(a.poses)
    try:
        results = render_poses(a.city_model, poses, a.out, settings, progress=not a.no_progress)
    except (CityModelError, RenderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {
        "settings": settings.to_dict(),
        "city_model": str(a.city_model),
        "counts": dict(Counter(r.status for r in results)),
        "results": [{**dataclasses.asdict(r), "path": str(r.path) if r.path else None} for r in results],
    }
    atomic_write_text(a.out / "render_report.json", json.dumps(report, indent=2))
    print(json.dumps(report["counts"]))
    for r in results:
        if r.status == "failed":
            print(f"failed {r.image_id}: {r.reason}", file=sys.stderr)
    return 1 if report["counts"].get("failed") else 0
