"""Mapillary coverage vector tiles (MVT, z14 ``image`` layer) ↔ image points.

Pixel coordinates inside a tile run x right, **y down** from the tile's north-west corner over
``extent`` units (4096). ``mapbox_vector_tile`` flips y unless ``y_coord_down=True`` is passed,
both when decoding and when encoding: we always pass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import mapbox_vector_tile
import mercantile
from shapely.geometry import LineString, box
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

__all__ = [
    "CoveragePoint",
    "EXTENT",
    "decode_coverage_tile",
    "select_panos",
    "encode_coverage_tile",
    "lonlat_to_tile_px",
    "tile_px_to_lonlat",
]

EXTENT = 4096


@dataclass(frozen=True)
class CoveragePoint:
    image_id: str  # properties.id as a string (ints in tiles, strings in Graph)
    lon_deg: float
    lat_deg: float
    is_pano: bool | None
    sequence_id: str | None
    captured_at_ms: int | None
    compass_angle_deg: float | None
    creator_id: str | None


def tile_px_to_lonlat(tile: mercantile.Tile, x_px: float, y_px: float, extent: int = EXTENT) -> tuple[float, float]:
    """Tile pixel (x right, y down from the NW corner) → lon/lat degrees."""
    b = mercantile.xy_bounds(tile)
    mx = b.left + (x_px / extent) * (b.right - b.left)
    my = b.top - (y_px / extent) * (b.top - b.bottom)
    lon, lat = mercantile.lnglat(mx, my)
    return float(lon), float(lat)


def lonlat_to_tile_px(tile: mercantile.Tile, lon_deg: float, lat_deg: float, extent: int = EXTENT) -> tuple[float, float]:
    """Inverse of :func:`tile_px_to_lonlat` (not rounded)."""
    b = mercantile.xy_bounds(tile)
    mx, my = mercantile.xy(lon_deg, lat_deg)
    return (mx - b.left) / (b.right - b.left) * extent, (b.top - my) / (b.top - b.bottom) * extent


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _opt_num(v: Any, typ):
    try:
        return None if v is None or v == "" else typ(v)
    except (TypeError, ValueError):
        return None


def decode_coverage_tile(data: bytes, tile: mercantile.Tile) -> list[CoveragePoint]:
    """All points of the ``image`` layer (empty list if the tile has none)."""
    if not data:
        return []
    layers = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    layer = layers.get("image")
    if not layer:
        return []
    extent = int(layer.get("extent", EXTENT))
    out: list[CoveragePoint] = []
    for feat in layer.get("features", []):
        geom = feat.get("geometry") or {}
        props = feat.get("properties") or {}
        if geom.get("type") == "Point":
            coords = [geom["coordinates"]]
        elif geom.get("type") == "MultiPoint":
            coords = list(geom["coordinates"])
        else:
            continue
        image_id = _opt_str(props.get("id"))
        if image_id is None:
            continue
        is_pano = props.get("is_pano")
        for x_px, y_px in coords:
            lon, lat = tile_px_to_lonlat(tile, x_px, y_px, extent)
            out.append(
                CoveragePoint(
                    image_id=image_id,
                    lon_deg=lon,
                    lat_deg=lat,
                    is_pano=None if is_pano is None else bool(is_pano),
                    sequence_id=_opt_str(props.get("sequence_id")),
                    captured_at_ms=_opt_num(props.get("captured_at"), int),
                    compass_angle_deg=_opt_num(props.get("compass_angle"), float),
                    creator_id=_opt_str(props.get("creator_id")),
                )
            )
    return out


def select_panos(points: Iterable[CoveragePoint], polygon_lonlat: BaseGeometry) -> list[CoveragePoint]:
    """Points flagged ``is_pano`` inside (or on) the polygon, first occurrence per id, sorted by id."""
    pp = prep(polygon_lonlat)
    from shapely.geometry import Point

    seen: dict[str, CoveragePoint] = {}
    for p in points:
        if p.is_pano is not True or p.image_id in seen:
            continue
        if pp.covers(Point(p.lon_deg, p.lat_deg)):
            seen[p.image_id] = p
    return [seen[k] for k in sorted(seen)]


def _point_lonlat(record: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    g = record.get(key)
    if isinstance(g, Mapping) and isinstance(g.get("coordinates"), (list, tuple)) and len(g["coordinates"]) >= 2:
        return float(g["coordinates"][0]), float(g["coordinates"][1])
    return None


def encode_coverage_tile(
    tile: mercantile.Tile,
    records: Sequence[Mapping[str, Any]],
    *,
    computed: bool,
    extent: int = EXTENT,
) -> bytes:
    """Encode Graph-style image records as a Mapillary coverage tile (layers ``image`` + ``sequence``).

    ``computed`` picks ``computed_geometry``/``computed_compass_angle`` (``mly1_computed_public``)
    or ``geometry``/``compass_angle`` (``mly1_public``). Records outside the tile are left out.
    Property types follow the live tiles: ``id``/``creator_id``/``organization_id`` ints,
    ``sequence_id`` string, ``captured_at`` epoch ms int, ``compass_angle`` float.
    """
    geom_keys = ("computed_geometry", "geometry") if computed else ("geometry",)
    angle_key = "computed_compass_angle" if computed else "compass_angle"
    image_features: list[dict[str, Any]] = []
    by_seq: dict[str, list[tuple[int, float, float, Mapping[str, Any]]]] = {}
    for rec in records:
        ll = None
        for k in geom_keys:
            ll = _point_lonlat(rec, k)
            if ll:
                break
        if ll is None:
            continue
        x, y = lonlat_to_tile_px(tile, *ll, extent=extent)
        if not (0 <= x < extent and 0 <= y < extent):
            continue
        props: dict[str, Any] = {"id": int(rec["id"])}
        if rec.get("captured_at") is not None:
            props["captured_at"] = int(rec["captured_at"])
        ang = rec.get(angle_key, rec.get("compass_angle"))
        if ang is not None:
            props["compass_angle"] = float(ang)
        seq = rec.get("sequence")
        if seq is not None:
            props["sequence_id"] = str(seq)
        if rec.get("organization_id") is not None:  # often absent in live tiles
            props["organization_id"] = int(rec["organization_id"])
        if rec.get("is_pano") is not None:
            props["is_pano"] = bool(rec["is_pano"])
        creator = rec.get("creator")
        if isinstance(creator, Mapping) and creator.get("id") is not None:
            props["creator_id"] = int(creator["id"])
        image_features.append({"geometry": f"POINT ({x!r} {y!r})", "properties": props, "id": len(image_features) + 1})
        if seq is not None:
            by_seq.setdefault(str(seq), []).append((int(rec.get("captured_at") or 0), x, y, rec))
    seq_features: list[dict[str, Any]] = []
    clip = box(-64, -64, extent + 64, extent + 64)
    for seq, pts in sorted(by_seq.items()):
        pts.sort(key=lambda t: t[0])
        first = pts[0][3]
        props = {"id": seq, "image_id": int(first["id"]), "captured_at": pts[0][0]}
        if first.get("is_pano") is not None:
            props["is_pano"] = bool(first["is_pano"])
        if first.get("organization_id") is not None:
            props["organization_id"] = int(first["organization_id"])
        if len(pts) >= 2:
            line = LineString([(p[1], p[2]) for p in pts]).intersection(clip)
            if not line.is_empty:
                seq_features.append({"geometry": line.wkt, "properties": props, "id": len(seq_features) + 1})
    layers = [{"name": "image", "features": image_features}]
    if seq_features:
        layers.append({"name": "sequence", "features": seq_features})
    return mapbox_vector_tile.encode(layers, default_options={"y_coord_down": True, "extents": extent})
