"""Building heights from OSM tags (pure functions, no I/O).

Rules (OSM Simple 3D Buildings; all heights in metres above the ground plane z = 0):

* **Top** ``top_m``: ``height``, else ``building:height``; else (``building:levels`` +
  ``roof:levels``) × ``level_height_m``; else the untagged default below.
* **Base** ``base_m``: ``min_height``, else ``building:min_level`` × ``level_height_m``, else 0
  (``building=roof`` without base tags: ``top_m`` − 1 m, a canopy on pillars).
* Lengths accept ``"12"``, ``"12 m"``, ``"12.5m"``, ``"12,5"`` (decimal comma), ``"40 ft"``,
  ``"30'"``, ``"30'6\\""`` (feet and inches), ``"1200 cm"``; anything else (``"~12"``,
  ``"10-12"``, negative, > 1000 m) is ignored as if untagged. Levels accept ``"3"``, ``"2.5"``,
  ``"2,5"`` and ``"3;4"`` (largest value).
* If the resulting top is not above the base, top = base + one level.
* A top above ``max_height_m`` (default :data:`DEFAULT_MAX_HEIGHT_M`; ``building:levels=250``
  would give 750 m) is clamped to it, the base kept at least one level below; the result says
  what it was clamped from, so the builder can warn with the OSM id.

**Untagged defaults** (deterministic, in levels × ``level_height_m``, 3 m by default), by the
``building`` value (for a ``building:part`` without ``building``: its ``building:part`` value):

* 1 level: garage, garages, carport, shed, hut, kiosk, cabin, toilets, service, bungalow,
  static_caravan, container, guardhouse, greenhouse; ``roof`` (a canopy on pillars): a 1 m slab
  whose base is one level up (3–4 m)
* 2 levels: house, detached, semidetached_house, terrace, farm, barn, farm_auxiliary, stable,
  cowshed, sports_hall
* 3 levels: industrial, warehouse, manufacture, hangar, retail, commercial, supermarket, school,
  kindergarten, public, civic, government, train_station
* 4 levels: church, chapel, mosque, temple, synagogue
* 5 levels: apartments, residential, dormitory, hotel, office, hospital, university
* 7 levels: cathedral
* anything else (``yes``, ...), by footprint area A: 1 level (A < 20 m²), 2 (A < 200 m²),
  4 (A < 1000 m²), 5 (A ≥ 1000 m²)

A ``building:part`` with no height information of its own inherits the tagged top of the
outline it lies in (see :mod:`s2r_data.osm.buildings`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "DEFAULT_LEVEL_HEIGHT_M",
    "DEFAULT_LEVELS_BY_TYPE",
    "AREA_LEVELS",
    "MAX_PLAUSIBLE_HEIGHT_M",
    "DEFAULT_MAX_HEIGHT_M",
    "HEIGHT_TAGS",
    "BuildingHeight",
    "parse_length_m",
    "parse_levels",
    "default_levels",
    "building_height",
]

DEFAULT_LEVEL_HEIGHT_M = 3.0
MAX_PLAUSIBLE_HEIGHT_M = 1000.0  # taller "heights" are typos (cm, mm) and are ignored
# tops above this are clamped (with a warning): above every building in the registry's cities
# (Paris' tallest, Tour Montparnasse, is 210 m); supertall cities (Dubai, Shanghai, New York)
# need a larger BuildConfig.max_height_m
DEFAULT_MAX_HEIGHT_M = 500.0
HEIGHT_TAGS = ("height", "building:height", "building:levels", "roof:levels", "min_height", "building:min_level")

_ONE = ("garage", "garages", "carport", "shed", "hut", "kiosk", "cabin", "toilets", "service", "bungalow",
        "static_caravan", "container", "guardhouse", "greenhouse", "roof")
_TWO = ("house", "detached", "semidetached_house", "terrace", "farm", "barn", "farm_auxiliary", "stable",
        "cowshed", "sports_hall")
_THREE = ("industrial", "warehouse", "manufacture", "hangar", "retail", "commercial", "supermarket", "school",
          "kindergarten", "public", "civic", "government", "train_station")
_FOUR = ("church", "chapel", "mosque", "temple", "synagogue")
_FIVE = ("apartments", "residential", "dormitory", "hotel", "office", "hospital", "university")
DEFAULT_LEVELS_BY_TYPE: dict[str, float] = {
    **{k: 1.0 for k in _ONE},
    **{k: 2.0 for k in _TWO},
    **{k: 3.0 for k in _THREE},
    **{k: 4.0 for k in _FOUR},
    **{k: 5.0 for k in _FIVE},
    "cathedral": 7.0,
}
# (upper bound of footprint area in m², levels) for types not in the table above
AREA_LEVELS: tuple[tuple[float, float], ...] = ((20.0, 1.0), (200.0, 2.0), (1000.0, 4.0), (math.inf, 5.0))
CANOPY_THICKNESS_M = 1.0

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_METRIC = re.compile(rf"^{_NUM}\s*(m|meters?|metres?|cm|km|ft|feet|foot)?$")
_FEET_INCHES = re.compile(rf"^{_NUM}\s*'\s*(?:{_NUM}\s*(?:\"|''))?$")
_UNIT_M = {None: 1.0, "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "cm": 0.01,
           "km": 1000.0, "ft": 0.3048, "feet": 0.3048, "foot": 0.3048}


def _decimal_comma(s: str) -> str:
    # "12,5" → "12.5" (one comma between digits; "1,234" is ambiguous and read the same way)
    return re.sub(r"(?<=\d),(?=\d)", ".", s, count=1)


def parse_length_m(value: str | None) -> float | None:
    """OSM length tag → metres, or ``None`` when missing/unparseable/implausible."""
    if value is None:
        return None
    s = _decimal_comma(str(value).strip().lower())
    m = _METRIC.match(s)
    if m:
        out = float(m.group(1)) * _UNIT_M[m.group(2)]
    else:
        m = _FEET_INCHES.match(s)
        if not m:
            return None
        out = float(m.group(1)) * 0.3048 + (float(m.group(2)) * 0.0254 if m.group(2) else 0.0)
    if not math.isfinite(out) or out > MAX_PLAUSIBLE_HEIGHT_M:
        return None
    return out


def parse_levels(value: str | None) -> float | None:
    """``building:levels``-style count → float ≥ 0, or ``None``. ``"3;4"`` → 4."""
    if value is None:
        return None
    best = None
    for part in str(value).split(";"):
        s = _decimal_comma(part.strip())
        try:
            v = float(s)
        except ValueError:
            continue
        if math.isfinite(v) and 0 <= v <= 300 and (best is None or v > best):
            best = v
    return best


def default_levels(building_type: str, footprint_area_m2: float) -> float:
    """Untagged default number of levels (table in the module docstring)."""
    t = (building_type or "yes").strip().lower()
    if t in DEFAULT_LEVELS_BY_TYPE:
        return DEFAULT_LEVELS_BY_TYPE[t]
    for upper, levels in AREA_LEVELS:
        if footprint_area_m2 < upper:
            return levels
    return AREA_LEVELS[-1][1]


@dataclass(frozen=True)
class BuildingHeight:
    base_m: float
    top_m: float
    top_source: str  # "height" | "levels" | "default" (| "inherited", set by the caller)
    clamped_from_m: float | None = None  # the top before clamping to max_height_m, if it was


def building_height(
    tags: Mapping[str, str],
    footprint_area_m2: float,
    level_height_m: float = DEFAULT_LEVEL_HEIGHT_M,
    max_height_m: float | None = DEFAULT_MAX_HEIGHT_M,
) -> BuildingHeight:
    """Base and top (metres above ground) of one building or building part from its tags; the top
    clamped to ``max_height_m`` (``None``: no clamp)."""
    top = parse_length_m(tags.get("height"))
    if top is None:
        top = parse_length_m(tags.get("building:height"))
    source = "height"
    if top is None:
        levels = parse_levels(tags.get("building:levels"))
        if levels is not None:
            top = (levels + (parse_levels(tags.get("roof:levels")) or 0.0)) * level_height_m
            source = "levels"
    btype = tags.get("building") or tags.get("building:part") or "yes"
    if top is None or top <= 0:
        top = default_levels(btype, footprint_area_m2) * level_height_m
        if btype == "roof":
            top += CANOPY_THICKNESS_M
        source = "default"

    base = parse_length_m(tags.get("min_height"))
    if base is None:
        min_level = parse_levels(tags.get("building:min_level"))
        if min_level is not None:
            base = min_level * level_height_m
    if base is None:
        base = max(top - CANOPY_THICKNESS_M, 0.0) if btype == "roof" else 0.0
    if top <= base:
        top = base + level_height_m
    clamped_from = None
    if max_height_m is not None and top > max_height_m:
        clamped_from, top = top, max_height_m
        base = min(base, max(top - level_height_m, 0.0))
    return BuildingHeight(float(base), float(top), source, None if clamped_from is None else float(clamped_from))
