"""City registry: ``data/cities.yaml`` → validated :class:`CityConfig`; custom areas (a GeoJSON
polygon or a lon/lat box) inside a city's frame, or on their own."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from shapely.geometry import Polygon, shape

from .frames import LocalFrame

__all__ = [
    "CityConfig",
    "UnknownCityError",
    "CityRegistryError",
    "AreaError",
    "load_city",
    "known_cities",
    "area_from_bbox",
    "area_from_geojson",
    "city_with_area",
    "custom_area",
    "load_city_or_area",
    "DATA_DIR",
    "DEFAULT_REGISTRY",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_REGISTRY = DATA_DIR / "cities.yaml"


class UnknownCityError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class CityRegistryError(ValueError):
    pass


class AreaError(ValueError):
    """A custom area (``--polygon`` / ``--bbox``) that cannot be used; the message says why."""


@dataclass(frozen=True)
class CityConfig:
    name: str
    boundary_lonlat: tuple[tuple[float, float], ...]
    reference_lonlat: tuple[float, float]
    osm_source: str  # resolved absolute path, or an http(s) URL
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    replay_content: str | None = None  # resolved path of embedded Mapillary replay content, or None

    def __post_init__(self) -> None:
        if len(self.boundary_lonlat) < 3:
            raise CityRegistryError(f"city {self.name!r}: boundary_lonlat needs at least 3 vertices")
        for lon, lat in self.boundary_lonlat:
            if not (-180 <= lon <= 180 and -85 <= lat <= 85):
                raise CityRegistryError(f"city {self.name!r}: boundary vertex ({lon}, {lat}) is not (lon, lat) in degrees")
        if not self.polygon.is_valid:
            raise CityRegistryError(f"city {self.name!r}: boundary polygon is not valid (self-intersecting?)")

    @property
    def polygon(self) -> Polygon:
        """Boundary in lon/lat degrees."""
        return Polygon(self.boundary_lonlat)

    @property
    def frame(self) -> LocalFrame:
        return LocalFrame(*self.reference_lonlat)

    @property
    def osm_is_url(self) -> bool:
        return self.osm_source.startswith(("http://", "https://"))

    def local_osm_path(self, cache_dir: Path | None = None) -> Path:
        """The OSM file to read; for URL sources, where the user must have put the download."""
        if not self.osm_is_url:
            return Path(self.osm_source)
        cache_dir = cache_dir or DATA_DIR / "osm"
        p = cache_dir / self.osm_source.rstrip("/").rsplit("/", 1)[-1]
        if not p.is_file():
            raise FileNotFoundError(
                f"city {self.name!r} reads OSM data from {self.osm_source}; download it to {p} "
                "(s2r does not download OSM extracts itself), then run again"
            )
        return p


def _read_registry(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CityRegistryError(f"city registry {path} not found") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cities"), dict):
        raise CityRegistryError(f"city registry {path}: expected a top-level 'cities:' mapping")
    return doc["cities"]


def known_cities(registry: Path | None = None) -> list[str]:
    return sorted(_read_registry(registry or DEFAULT_REGISTRY))


def load_city(name: str, registry: Path | None = None) -> CityConfig:
    """Look up ``name`` (case-insensitive) in the registry; unknown names list the known ones."""
    path = registry or DEFAULT_REGISTRY
    cities = _read_registry(path)
    key = name.strip().lower()
    if key not in cities:
        raise UnknownCityError(
            f"unknown city {name!r}; known cities: {', '.join(sorted(cities))} (add one to {path})"
        )
    d = cities[key]
    allowed = {"description", "boundary_lonlat", "reference_lonlat", "osm_source", "defaults", "replay"}
    extra = set(d) - allowed
    if extra:
        raise CityRegistryError(f"city {key!r} in {path}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    for req in ("boundary_lonlat", "reference_lonlat", "osm_source"):
        if req not in d:
            raise CityRegistryError(f"city {key!r} in {path}: missing required key {req!r}")
    src = str(d["osm_source"])
    if not src.startswith(("http://", "https://")):
        src = str((path.parent / src).resolve())
    return CityConfig(
        name=key,
        boundary_lonlat=tuple((float(a), float(b)) for a, b in d["boundary_lonlat"]),
        reference_lonlat=(float(d["reference_lonlat"][0]), float(d["reference_lonlat"][1])),
        osm_source=src,
        description=str(d.get("description", "")).strip(),
        defaults=dict(d.get("defaults") or {}),
        replay_content=str((path.parent / str(d["replay"])).resolve()) if d.get("replay") else None,
    )


# ---------------------------------------------------------------------------------------------
# custom areas


def _check_lonlat(vertices: Sequence[Sequence[float]], what: str) -> tuple[tuple[float, float], ...]:
    out = []
    for v in vertices:
        try:
            lon, lat = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError):
            raise AreaError(f"{what}: vertex {v!r} is not a (lon, lat) pair of numbers") from None
        if not (-180 <= lon <= 180 and -85 <= lat <= 85):
            raise AreaError(f"{what}: vertex ({lon}, {lat}) is not (lon, lat) in degrees (WGS84)")
        out.append((lon, lat))
    if len(out) > 1 and out[0] == out[-1]:
        out.pop()  # GeoJSON rings repeat the first vertex
    if len(out) < 3:
        raise AreaError(f"{what}: needs at least 3 distinct vertices")
    poly = Polygon(out)
    if not poly.is_valid or poly.area <= 0:
        raise AreaError(f"{what}: the polygon is not valid (self-intersecting or empty)")
    return tuple(out)


def area_from_bbox(bbox: str | Sequence[float]) -> tuple[tuple[float, float], ...]:
    """``"W,S,E,N"`` (or 4 numbers) in degrees → the box's 4 corners (lon, lat)."""
    what = f"bbox {bbox!r}"
    try:
        parts = [float(x) for x in (bbox.split(",") if isinstance(bbox, str) else bbox)]
    except (TypeError, ValueError):
        raise AreaError(f"{what}: expected 4 numbers W,S,E,N (degrees), e.g. 2.3626,48.8192,2.3676,48.8225") from None
    if len(parts) != 4:
        raise AreaError(f"{what}: expected 4 numbers W,S,E,N (degrees), got {len(parts)}")
    w, s_, e, n = parts
    if not (w < e and s_ < n):
        raise AreaError(f"{what}: need W < E and S < N (order W,S,E,N: west, south, east, north)")
    return _check_lonlat([(w, s_), (e, s_), (e, n), (w, n)], what)


def area_from_geojson(source: str | Path | Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """One polygon's outer ring (lon, lat) from GeoJSON: a file path, a JSON text or a mapping
    holding a Polygon, a one-part MultiPolygon, a Feature or a FeatureCollection of one feature.
    Holes are refused (an area is one outline)."""
    if isinstance(source, Mapping):
        doc, what = dict(source), "GeoJSON"
    else:
        text = str(source)
        if text.lstrip().startswith("{"):
            what, raw = "GeoJSON text", text
        else:
            what = f"GeoJSON file {text}"
            try:
                raw = Path(text).read_text()
            except OSError as e:
                raise AreaError(f"{what}: cannot read it ({e.strerror or e})") from None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise AreaError(f"{what}: not JSON ({e})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
        if len(feats) != 1:
            raise AreaError(f"{what}: a FeatureCollection with {len(feats)} features; give exactly one polygon")
        doc = feats[0]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = doc.get("geometry") or {}
    try:
        geom = shape(doc)
    except Exception as e:  # noqa: BLE001 - shapely raises several types for bad GeoJSON
        raise AreaError(f"{what}: not a GeoJSON geometry ({type(e).__name__}: {e})") from None
    if geom.geom_type == "MultiPolygon" and len(geom.geoms) == 1:
        geom = geom.geoms[0]
    if geom.geom_type != "Polygon":
        raise AreaError(f"{what}: a {geom.geom_type}; give one Polygon (lon, lat degrees)")
    if len(geom.interiors):
        raise AreaError(f"{what}: the polygon has {len(geom.interiors)} hole(s); give an outline without holes")
    return _check_lonlat(list(geom.exterior.coords), what)


def _area_id(boundary_lonlat: Sequence[Sequence[float]]) -> str:
    key = json.dumps([[round(float(a), 7), round(float(b), 7)] for a, b in boundary_lonlat])
    return hashlib.sha1(key.encode()).hexdigest()[:8]


def city_with_area(city: CityConfig, boundary_lonlat: Sequence[Sequence[float]]) -> CityConfig:
    """The part of the work inside ``boundary_lonlat``, in ``city``'s frame: same reference point
    (poses and city model stay comparable with the whole city's), OSM source, defaults and replay
    content. Named ``<city>-area-<8 hex>`` so its outputs never mix with the whole city's."""
    boundary = _check_lonlat(boundary_lonlat, f"area of city {city.name!r}")
    return dataclasses.replace(
        city,
        name=f"{city.name}-area-{_area_id(boundary)}",
        boundary_lonlat=boundary,
        description=f"custom area in {city.name}'s frame",
    )


def custom_area(boundary_lonlat: Sequence[Sequence[float]]) -> CityConfig:
    """An area outside any registry city: named ``area-<8 hex>``; its local frame's reference point
    is the area's centroid (the harvest stores lon/lat, so the frame only matters to later steps,
    which need a registry entry anyway: OSM source, render defaults). No OSM source."""
    boundary = _check_lonlat(boundary_lonlat, "custom area")
    c = Polygon(boundary).centroid
    return CityConfig(
        name=f"area-{_area_id(boundary)}",
        boundary_lonlat=boundary,
        reference_lonlat=(round(c.x, 7), round(c.y, 7)),
        osm_source="",
        description="custom area (reference point: its centroid)",
    )


def load_city_or_area(
    city: str | None,
    *,
    registry: str | Path | None = None,
    polygon: str | Path | Mapping[str, Any] | None = None,
    bbox: str | Sequence[float] | None = None,
) -> CityConfig:
    """A registry city, a custom area inside a registry city's frame (``city`` + ``polygon`` or
    ``bbox``), or a custom area alone (:func:`custom_area`)."""
    if polygon is not None and bbox is not None:
        raise AreaError("give either a polygon or a bbox, not both")
    boundary = area_from_geojson(polygon) if polygon is not None else area_from_bbox(bbox) if bbox is not None else None
    if city is None:
        if boundary is None:
            raise AreaError("no area: give a city name from the registry, or a polygon / bbox")
        return custom_area(boundary)
    cfg = load_city(city, Path(registry) if registry is not None else None)
    return city_with_area(cfg, boundary) if boundary is not None else cfg
