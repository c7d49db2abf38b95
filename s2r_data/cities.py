"""City registry: ``data/cities.yaml`` → validated :class:`CityConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from shapely.geometry import Polygon

from .frames import LocalFrame

__all__ = ["CityConfig", "UnknownCityError", "CityRegistryError", "load_city", "known_cities", "DATA_DIR", "DEFAULT_REGISTRY"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_REGISTRY = DATA_DIR / "cities.yaml"


class UnknownCityError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class CityRegistryError(ValueError):
    pass


@dataclass(frozen=True)
class CityConfig:
    name: str
    boundary_lonlat: tuple[tuple[float, float], ...]
    reference_lonlat: tuple[float, float]
    osm_source: str  # resolved absolute path, or an http(s) URL
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

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
    allowed = {"description", "boundary_lonlat", "reference_lonlat", "osm_source", "defaults"}
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
    )
