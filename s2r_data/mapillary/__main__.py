"""``s2r harvest --city sample --out outputs/sample/harvest [--bbox W,S,E,N] [--graph-url URL ...]``

Harvests the Mapillary panoramas of a city, or of a custom area (token from ``$MAPILLARY_TOKEN``).
Point ``--graph-url`` and ``--tiles-url`` at a replay server (``s2r replay``) to work offline.

Area: ``--city NAME`` (from ``data/cities.yaml`` or ``--registry FILE``); with ``--polygon`` /
``--bbox`` only that part of it, in the city's local frame. ``--polygon`` / ``--bbox`` without
``--city`` harvest an area of their own (named ``area-<hash>``, reference point = its centroid; the
harvest table stores lon/lat, so the frame matters only once the area gets a registry entry).

Exit status:
  0  done: every coverage tile read, at least one usable panorama in the table
  2  nothing harvested: bad arguments, token rejected, or the tiles host blocks this IP
  3  some coverage tiles failed after the retries (the cause is printed); rerun to retry them,
     finished work is kept
  4  every tile read, but the region has no (usable) panoramas: "no panoramas in this region"
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..cities import AreaError, CityRegistryError, UnknownCityError, load_city_or_area
from .config import DEFAULT_GRAPH_URL, DEFAULT_TILES_URL, HarvestConfig
from .errors import MapillaryError
from .harvest import HarvestReport, harvest_city, harvest_tiles
from .table import merge_harvest_tables

EXIT_OK, EXIT_FATAL, EXIT_TILES_FAILED, EXIT_NO_PANORAMAS = 0, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    d = HarvestConfig()
    ap = argparse.ArgumentParser(
        prog="s2r harvest",
        description=__doc__.split("\n\n")[1],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--city", default=None, help="a name from the city registry (optional with --polygon/--bbox)")
    ap.add_argument("--registry", type=Path, default=None, help="city registry YAML (default: data/cities.yaml)")
    area = ap.add_mutually_exclusive_group()
    area.add_argument("--polygon", metavar="GEOJSON", default=None,
                      help="only inside this polygon: a GeoJSON file (Polygon, or a Feature/FeatureCollection of one), lon/lat")
    area.add_argument("--bbox", metavar="W,S,E,N", default=None, help="only inside this lon/lat box (degrees)")
    ap.add_argument("--out", required=True, help="harvest directory (images/, tiles/, harvest.parquet)")
    ap.add_argument("--graph-url", default=DEFAULT_GRAPH_URL)
    ap.add_argument("--tiles-url", default=DEFAULT_TILES_URL)
    ap.add_argument("--layer", default="mly1_computed_public", choices=("mly1_computed_public", "mly1_public"))
    ap.add_argument("--image-size", default="2048", choices=("2048", "original"))
    ap.add_argument("--concurrency", type=int, default=d.max_concurrency)
    ap.add_argument("--graph-rate-per-min", type=float, default=d.graph_rate_per_min, help="Graph API requests per minute")
    ap.add_argument("--graph-burst", type=int, default=d.graph_burst, help="Graph requests sent back to back after a pause")
    ap.add_argument("--tiles-rate-per-min", type=float, default=d.tiles_rate_per_min,
                    help="coverage tile requests per minute (lower it after a tiles-host block)")
    ap.add_argument("--tiles-burst", type=int, default=d.tiles_burst)
    ap.add_argument("--max-retries", type=int, default=d.max_retries, help="retries per request for transient errors")
    ap.add_argument("--incremental", action="store_true", help="re-read coverage; fetch only ids not in the table")
    ap.add_argument("--retry-quarantined", action="store_true",
                    help="look again at quarantined images (fresh metadata and download); by default they are final")
    ap.add_argument("--tiles", nargs="*", default=None, help="only these z14 tiles ('14/x/y'); default: the whole area")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def _report_outcome(report: HarvestReport) -> int:
    """Print the summary and what went wrong (without -v); return the exit status."""
    print(report.summary())
    if report.tile_errors:
        print(
            f"error: {len(report.tile_errors)} of {report.tiles_total} coverage tile(s) failed after the retries; "
            "rerun to retry them (finished work is kept):",
            file=sys.stderr,
        )
        for tile, cause in sorted(report.tile_errors.items()):
            print(f"  {tile}: {cause}", file=sys.stderr)
        return EXIT_TILES_FAILED
    empty = report.empty_region_message()
    if empty:
        print(empty)
        return EXIT_NO_PANORAMAS
    return EXIT_OK


def config_from_args(args: argparse.Namespace) -> HarvestConfig:
    return HarvestConfig(
        graph_url=args.graph_url,
        tiles_url=args.tiles_url,
        layer=args.layer,
        image_size=args.image_size,
        max_concurrency=args.concurrency,
        graph_rate_per_min=args.graph_rate_per_min,
        graph_burst=args.graph_burst,
        tiles_rate_per_min=args.tiles_rate_per_min,
        tiles_burst=args.tiles_burst,
        max_retries=args.max_retries,
        incremental=args.incremental,
        retry_quarantined=args.retry_quarantined,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.city is None and args.polygon is None and args.bbox is None:
        ap.error("give --city NAME, or a custom area with --polygon GEOJSON / --bbox W,S,E,N")
    try:
        city = load_city_or_area(args.city, registry=args.registry, polygon=args.polygon, bbox=args.bbox)
        config = config_from_args(args)
    except (UnknownCityError, CityRegistryError, AreaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL
    if args.city is None or city.name != args.city.strip().lower():
        lon, lat = city.reference_lonlat
        print(f"area {city.name}: local frame reference point ({lon:.7f}, {lat:.7f})", file=sys.stderr)
    try:
        if args.tiles:
            report = harvest_tiles(city, args.tiles, args.out, config)
            merge_harvest_tables(args.out, {"city": city.name})
        else:
            report = harvest_city(city, args.out, config)
    except (MapillaryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL
    return _report_outcome(report)


if __name__ == "__main__":
    raise SystemExit(main())
