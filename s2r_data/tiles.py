"""Web-mercator z14 tiles covering a city polygon (mercantile). Tile ids are ``"14/x/y"``."""

from __future__ import annotations

import mercantile
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

__all__ = ["ZOOM", "tile_id", "parse_tile_id", "tile_polygon_lonlat", "tiles_for_polygon"]

ZOOM = 14  # the only zoom at which Mapillary coverage tiles carry image points


def tile_id(tile: mercantile.Tile) -> str:
    return f"{tile.z}/{tile.x}/{tile.y}"


def parse_tile_id(tid: str) -> mercantile.Tile:
    try:
        z, x, y = (int(p) for p in str(tid).split("/"))
    except ValueError:
        raise ValueError(f"bad tile id {tid!r}; expected 'z/x/y', e.g. '14/8300/5639'") from None
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise ValueError(f"bad tile id {tid!r}: x, y must be in [0, {2**z})")
    return mercantile.Tile(x, y, z)


def tile_polygon_lonlat(tile: mercantile.Tile) -> Polygon:
    b = mercantile.bounds(tile)
    return box(b.west, b.south, b.east, b.north)


def tiles_for_polygon(polygon_lonlat: BaseGeometry, zoom: int = ZOOM) -> list[str]:
    """Ids of the tiles at ``zoom`` that intersect the polygon itself (not merely its bbox),
    sorted by (x, y)."""
    if polygon_lonlat.is_empty:
        return []
    w, s, e, n = polygon_lonlat.bounds
    pp = prep(polygon_lonlat)
    out = [t for t in mercantile.tiles(w, s, e, n, zooms=[zoom]) if pp.intersects(tile_polygon_lonlat(t))]
    return [tile_id(t) for t in sorted(out, key=lambda t: (t.x, t.y))]
