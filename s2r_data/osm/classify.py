"""Which OSM objects become which mesh class, and how wide line features are (pure, tag-based).

**Buildings** (class ``wall`` + ``roof``): areas (closed ways, multipolygon relations) with
``building`` or ``building:part`` (value not ``no``), except ``location=underground``.

**Roads** (class ``road``, flat at z = 0.02 m): ``highway`` lines in :data:`ROAD_WIDTH_M`,
buffered to ``width`` if tagged (0.5–100 m), else ``lanes`` × :data:`LANE_WIDTH_M`, else the
class width below; plus pedestrian areas (``highway=*`` + ``area=yes``, or ``area:highway=*``).
Skipped: tunnels (``tunnel`` other than ``no``/``building_passage``), ``indoor=yes``,
``location=underground``, and classes not in the table (``proposed``, ``construction``,
``platform``, ``corridor``, ``elevator``, ...).

==================================================  ===========
highway                                             width (m)
==================================================  ===========
motorway                                            11
trunk, primary                                      10
secondary                                           8
tertiary, raceway                                   7
unclassified, residential, road                     6
living_street, pedestrian                           5
motorway_link … tertiary_link                       5
service, busway, bus_guideway                       4
track                                               3
cycleway, footway, bridleway, steps                 2
path                                                1.5
==================================================  ===========

**Water** (class ``water``, z = 0.01 m): areas ``natural=water``, ``waterway=riverbank|dock``,
``landuse=reservoir|basin``; ``waterway`` lines buffered by ``width`` or
:data:`WATERWAY_WIDTH_M` (river 10, canal 8, tidal_channel 5, stream 2, drain 1.5, ditch 1).
Skipped: tunnels/culverts, ``covered=yes``. ``natural=coastline`` is not handled (a limitation:
sea areas need coastline assembly).

**Green** (class ``green``, z = 0.015 m): ``landuse`` grass, park, meadow, forest,
village_green, recreation_ground; ``leisure`` park, garden; ``natural`` wood, scrub, grassland,
heath. Water areas are cut out of green areas (a pond in a park stays visible).
"""

from __future__ import annotations

from typing import Mapping

from .heights import parse_length_m, parse_levels

__all__ = [
    "ROAD_WIDTH_M",
    "LANE_WIDTH_M",
    "WATERWAY_WIDTH_M",
    "OSM_KEYS",
    "classify_area",
    "classify_line",
    "road_width_m",
    "waterway_width_m",
]

ROAD_WIDTH_M: dict[str, float] = {
    "motorway": 11.0, "trunk": 10.0, "primary": 10.0, "secondary": 8.0, "tertiary": 7.0, "raceway": 7.0,
    "unclassified": 6.0, "residential": 6.0, "road": 6.0, "living_street": 5.0, "pedestrian": 5.0,
    "motorway_link": 5.0, "trunk_link": 5.0, "primary_link": 5.0, "secondary_link": 5.0, "tertiary_link": 5.0,
    "service": 4.0, "busway": 4.0, "bus_guideway": 4.0, "track": 3.0,
    "cycleway": 2.0, "footway": 2.0, "bridleway": 2.0, "steps": 2.0, "path": 1.5,
}
LANE_WIDTH_M = 3.25
WATERWAY_WIDTH_M: dict[str, float] = {
    "river": 10.0, "canal": 8.0, "tidal_channel": 5.0, "stream": 2.0, "drain": 1.5, "ditch": 1.0,
}
WATER_AREA_TAGS = {"natural": {"water"}, "waterway": {"riverbank", "dock"}, "landuse": {"reservoir", "basin"}}
GREEN_AREA_TAGS = {
    "landuse": {"grass", "park", "meadow", "forest", "village_green", "recreation_ground"},
    "leisure": {"park", "garden"},
    "natural": {"wood", "scrub", "grassland", "heath"},
}
# keys that can make an object interesting (pre-filter in the reader)
OSM_KEYS = ("building", "building:part", "highway", "area:highway", "natural", "waterway", "landuse", "leisure")
_MIN_WIDTH_M, _MAX_WIDTH_M = 0.5, 100.0


def _underground(tags: Mapping[str, str]) -> bool:
    tunnel = tags.get("tunnel", "no")
    return (
        tunnel not in ("no", "building_passage")
        or tags.get("location") == "underground"
        or tags.get("indoor") == "yes"
        or tags.get("covered") == "yes"
    )


def _matches(tags: Mapping[str, str], table: Mapping[str, set[str]]) -> bool:
    return any(tags.get(k) in values for k, values in table.items())


def classify_area(tags: Mapping[str, str]) -> str | None:
    """``"building"``, ``"road"``, ``"water"``, ``"green"`` or ``None`` for an OSM area's tags."""
    b, part = tags.get("building"), tags.get("building:part")
    if (b is not None and b != "no") or (part is not None and part != "no"):
        return None if tags.get("location") == "underground" else "building"
    if _underground(tags):
        return None
    if "area:highway" in tags or (tags.get("highway") in ROAD_WIDTH_M and tags.get("area") == "yes"):
        return "road"
    if _matches(tags, WATER_AREA_TAGS):
        return "water"
    if _matches(tags, GREEN_AREA_TAGS):
        return "green"
    return None


def classify_line(tags: Mapping[str, str]) -> str | None:
    """``"road"``, ``"water"`` or ``None`` for an OSM way drawn as a buffered line."""
    if tags.get("area") == "yes" or _underground(tags):
        return None
    if tags.get("highway") in ROAD_WIDTH_M:
        return "road"
    if tags.get("waterway") in WATERWAY_WIDTH_M:
        return "water"
    return None


def _tagged_width(tags: Mapping[str, str]) -> float | None:
    w = parse_length_m(tags.get("width"))
    return w if w is not None and _MIN_WIDTH_M <= w <= _MAX_WIDTH_M else None


def road_width_m(tags: Mapping[str, str]) -> float:
    """Full paved width of a highway line (``width``, else ``lanes``, else the class table)."""
    w = _tagged_width(tags)
    if w is not None:
        return w
    lanes = parse_levels(tags.get("lanes"))
    if lanes is not None and 1 <= lanes <= 16:
        return lanes * LANE_WIDTH_M
    return ROAD_WIDTH_M.get(tags.get("highway", ""), ROAD_WIDTH_M["road"])


def waterway_width_m(tags: Mapping[str, str]) -> float:
    w = _tagged_width(tags)
    return w if w is not None else WATERWAY_WIDTH_M.get(tags.get("waterway", ""), 2.0)
