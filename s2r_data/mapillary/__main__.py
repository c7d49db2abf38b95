"""``python -m s2r_data.mapillary --city sample --out outputs/sample/harvest [--graph-url URL ...]``

Harvests a city's panoramas (token from ``$MAPILLARY_TOKEN``). Point ``--graph-url`` and
``--tiles-url`` at a replay server (``python -m s2r_data.mapillary.replay``) to work offline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..cities import load_city
from .config import DEFAULT_GRAPH_URL, DEFAULT_TILES_URL, HarvestConfig
from .errors import MapillaryError
from .harvest import harvest_city, harvest_tiles
from .table import merge_harvest_tables


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s2r_data.mapillary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", required=True, help="a name from data/cities.yaml")
    ap.add_argument("--out", required=True, help="harvest directory (images/, tiles/, harvest.parquet)")
    ap.add_argument("--graph-url", default=DEFAULT_GRAPH_URL)
    ap.add_argument("--tiles-url", default=DEFAULT_TILES_URL)
    ap.add_argument("--layer", default="mly1_computed_public", choices=("mly1_computed_public", "mly1_public"))
    ap.add_argument("--image-size", default="2048", choices=("2048", "original"))
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--incremental", action="store_true", help="re-read coverage; fetch only ids not in the table")
    ap.add_argument("--tiles", nargs="*", default=None, help="only these z14 tiles ('14/x/y'); default: the whole city")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = HarvestConfig(
        graph_url=args.graph_url,
        tiles_url=args.tiles_url,
        layer=args.layer,
        image_size=args.image_size,
        max_concurrency=args.concurrency,
        incremental=args.incremental,
        progress=not args.no_progress,
    )
    city = load_city(args.city)
    try:
        if args.tiles:
            report = harvest_tiles(city, args.tiles, args.out, config)
            merge_harvest_tables(args.out, {"city": city.name})
        else:
            report = harvest_city(city, args.out, config)
    except MapillaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
