"""CLI: ``python -m s2r_data.osm build --city NAME --out DIR [--force] [--margin-m M]``.

Builds (or reuses) ``DIR/city_model.npz`` + ``summary.json``, writes ``DIR/preview.png`` and
prints a summary. Exit code 2 on a bad city or bad OSM input (the message says what to fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..cities import CityRegistryError, UnknownCityError, load_city
from ..citymodel import CityModel, CityModelError
from ..preview import render_topdown_png
from .builder import build_or_load_city_model


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m s2r_data.osm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the city model from the city's OSM extract")
    b.add_argument("--city", required=True, help="city name in data/cities.yaml (e.g. sample)")
    b.add_argument("--out", required=True, type=Path, help="output folder (e.g. outputs/city/sample)")
    b.add_argument("--registry", type=Path, default=None, help="city registry YAML (default: data/cities.yaml)")
    b.add_argument("--osm", type=Path, default=None, help="OSM file to use instead of the city's osm_source")
    b.add_argument("--margin-m", type=float, default=200.0, help="buffer around the city polygon (default 200 m)")
    b.add_argument("--level-height-m", type=float, default=3.0, help="metres per building level (default 3)")
    b.add_argument("--force", action="store_true", help="rebuild even if a matching model exists")
    b.add_argument("--px-per-m", type=float, default=None, help="preview resolution (default: fit 2048 px)")
    b.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    return p


def _summary_lines(model: CityModel, path: Path, elapsed_s: float) -> list[str]:
    m = model.meta
    c = m["counts"]
    lo, hi = model.bbox_local_m()
    lines = [
        f"city model  {path}  ({elapsed_s:.2f} s)",
        f"city        {m['city']}  reference lon/lat {m['reference_lonlat'][0]:.6f}, {m['reference_lonlat'][1]:.6f}",
        f"source      {m['source']['file']}  sha256 {m['source']['sha256'][:12]}…  builder {m['builder_version']}",
        f"buildings   {c['buildings']} solids ({c['building_outlines']} outlines, {c['parts']} parts, "
        f"{c['outlines_replaced_by_parts']} replaced, {c['outlines_trimmed_by_parts']} trimmed; "
        f"{c['buildings_in_city_polygon']} in the city polygon)",
        f"flat layers roads {c['roads']}, water {c['water']}, green {c['green']}",
        f"bbox        x {lo[0]:.0f}…{hi[0]:.0f} m, y {lo[1]:.0f}…{hi[1]:.0f} m, z {lo[2]:.1f}…{hi[2]:.1f} m",
    ]
    for name, mesh in model.meshes.items():
        lines.append(f"  {name:<7} {len(mesh.vertices_local_m):>9,} vertices {len(mesh.triangles):>9,} triangles")
    lines.append(m["attribution"])
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        city = load_city(args.city, args.registry)
        path = build_or_load_city_model(
            city, args.out, force=args.force, margin_m=args.margin_m,
            level_height_m=args.level_height_m, osm_path=args.osm,
        )
        model = CityModel.load(path)
    except (UnknownCityError, CityRegistryError, CityModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    print("\n".join(_summary_lines(model, path, elapsed)))
    if not args.no_preview:
        png = render_topdown_png(model, Path(args.out) / "preview.png", px_per_m=args.px_per_m)
        print(f"preview     {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
