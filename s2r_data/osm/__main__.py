"""CLI: ``python -m s2r_data.osm build --city NAME --out DIR [--force] [--margin-m M]``.

Builds (or reuses) ``DIR/city_model.npz`` + ``summary.json``, writes ``DIR/preview.png`` and
prints a summary (flat-layer areas, dropped/repaired buildings, clamped heights, warnings).
Exit code 2 on a bad city or bad OSM input (the message says what to fix, naming the
``--registry`` file or ``--osm`` path actually used).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..cities import DEFAULT_REGISTRY, CityRegistryError, UnknownCityError, load_city
from ..citymodel import CityModel, CityModelError
from ..preview import render_topdown_png
from .builder import build_or_load_city_model
from .heights import DEFAULT_MAX_HEIGHT_M


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
    b.add_argument("--max-height-m", type=float, default=DEFAULT_MAX_HEIGHT_M,
                   help=f"clamp building tops above this, with a warning (default {DEFAULT_MAX_HEIGHT_M:g} m)")
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
        *_area_lines(m),
        *_building_issue_lines(m),
        f"bbox        x {lo[0]:.0f}…{hi[0]:.0f} m, y {lo[1]:.0f}…{hi[1]:.0f} m, z {lo[2]:.1f}…{hi[2]:.1f} m",
    ]
    for name, mesh in model.meshes.items():
        lines.append(f"  {name:<7} {len(mesh.vertices_local_m):>9,} vertices {len(mesh.triangles):>9,} triangles")
    lines.append(m["attribution"])
    lines += [f"warning     {w}" for w in m.get("warnings", [])]
    return lines


def _area_lines(meta: dict) -> list[str]:
    layers, clip_m2 = meta.get("flat_layers", {}), meta.get("clip_area_m2") or 0.0
    out = []
    for name, a in layers.items():
        share = f", {100 * a['mesh_area_m2'] / clip_m2:.1f} % of the clip" if clip_m2 else ""
        out.append(f"  {name:<7} {a['mesh_area_m2']:>12,.0f} m² mesh of {a['union_area_m2']:,.0f} m² union "
                   f"({100 * a['mesh_ratio']:.2f} %{share})")
    return out


def _building_issue_lines(meta: dict) -> list[str]:
    c = meta["counts"]
    if "buildings_dropped" not in c:
        return []
    lines = [
        f"dropped     {c['buildings_dropped']} buildings ({c['buildings_dropped_incomplete']} incomplete, "
        f"{c['buildings_dropped_invalid']} invalid, {c['buildings_dropped_degenerate']} degenerate; ids and reasons "
        f"in summary.json), {c['buildings_repaired']} repaired, {c['building_heights_clamped']} heights clamped"
    ]
    for h in meta.get("clamped_heights", [])[:5]:
        lines.append(f"  clamped {h['id']}: {h['height_m']:.0f} m ({h['tags']}) → {h['clamped_to_m']:.0f} m")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        city = load_city(args.city, args.registry)
        path = build_or_load_city_model(
            city, args.out, force=args.force, margin_m=args.margin_m, level_height_m=args.level_height_m,
            max_height_m=args.max_height_m, osm_path=args.osm, registry=args.registry or DEFAULT_REGISTRY,
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
