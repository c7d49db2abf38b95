"""Height tag parsing and per-building height rules (s2r_data.osm.heights), tag classes and widths."""

from __future__ import annotations

import math

import pytest

from s2r_data.osm.classify import (
    LANE_WIDTH_M,
    ROAD_WIDTH_M,
    classify_area,
    classify_line,
    road_width_m,
    waterway_width_m,
)
from s2r_data.osm.heights import (
    AREA_LEVELS,
    building_height,
    default_levels,
    parse_length_m,
    parse_levels,
)


@pytest.mark.parametrize(
    "value, metres",
    [
        ("12", 12.0),
        ("12 m", 12.0),
        ("12m", 12.0),
        ("12.5", 12.5),
        ("12,5", 12.5),
        ("12,5 m", 12.5),
        (" 7 metres ", 7.0),
        ("40 ft", 40 * 0.3048),
        ("40ft", 40 * 0.3048),
        ("30'", 30 * 0.3048),
        ("30'6\"", 30 * 0.3048 + 6 * 0.0254),
        ("1200 cm", 12.0),
        ("0", 0.0),
        ("102", 102.0),
    ],
)
def test_parse_length_m_accepts_units(value: str, metres: float) -> None:
    assert parse_length_m(value) == pytest.approx(metres)


@pytest.mark.parametrize("value", [None, "", "~12", "10-12", "-3", "abc", "12 storeys", "nan", "inf", "2000", "12;14"])
def test_parse_length_m_rejects_garbage(value) -> None:
    assert parse_length_m(value) is None


@pytest.mark.parametrize(
    "value, levels", [("3", 3.0), ("2.5", 2.5), ("2,5", 2.5), ("3;4", 4.0), (" 0 ", 0.0), ("x;2", 2.0)]
)
def test_parse_levels(value: str, levels: float) -> None:
    assert parse_levels(value) == levels


@pytest.mark.parametrize("value", [None, "", "many", "-1", "1e9"])
def test_parse_levels_rejects(value) -> None:
    assert parse_levels(value) is None


def test_height_tag_wins_over_levels_and_building_height_is_fallback() -> None:
    h = building_height({"building": "yes", "height": "40 ft", "building:levels": "10"}, 100.0)
    assert (h.top_m, h.base_m, h.top_source) == (pytest.approx(12.192), 0.0, "height")
    h = building_height({"building": "yes", "building:height": "21", "building:levels": "10"}, 100.0)
    assert (h.top_m, h.top_source) == (21.0, "height")


def test_levels_times_level_height_plus_roof_levels() -> None:
    h = building_height({"building": "yes", "building:levels": "4", "roof:levels": "1"}, 100.0, level_height_m=3.0)
    assert (h.top_m, h.top_source) == (15.0, "levels")
    h = building_height({"building": "yes", "building:levels": "4"}, 100.0, level_height_m=2.5)
    assert h.top_m == 10.0


def test_base_from_min_height_or_min_level() -> None:
    h = building_height({"building:part": "yes", "height": "18", "min_height": "10"}, 50.0)
    assert (h.base_m, h.top_m) == (10.0, 18.0)
    h = building_height({"building:part": "yes", "building:levels": "6", "building:min_level": "2"}, 50.0)
    assert (h.base_m, h.top_m) == (6.0, 18.0)


def test_top_not_above_base_gets_one_level() -> None:
    h = building_height({"building:part": "yes", "height": "5", "min_height": "8"}, 50.0)
    assert (h.base_m, h.top_m) == (8.0, 11.0)


def test_roof_canopy_default_is_raised_slab() -> None:
    h = building_height({"building": "roof"}, 80.0)
    assert (h.base_m, h.top_m, h.top_source) == (3.0, 4.0, "default")


@pytest.mark.parametrize(
    "btype, area, levels",
    [("garage", 5000.0, 1), ("house", 5000.0, 2), ("school", 10.0, 3), ("apartments", 10.0, 5),
     ("cathedral", 100.0, 7), ("yes", 10.0, 1), ("yes", 150.0, 2), ("yes", 500.0, 4), ("yes", 5e4, 5),
     ("something_new", 150.0, 2)],
)
def test_untagged_defaults_by_type_and_area(btype: str, area: float, levels: float) -> None:
    assert default_levels(btype, area) == levels
    h = building_height({"building": btype}, area)
    assert (h.top_m, h.base_m, h.top_source) == (3.0 * levels, 0.0, "default")


def test_area_table_is_increasing() -> None:
    bounds = [b for b, _ in AREA_LEVELS]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])


@pytest.mark.parametrize(
    "tags, kind",
    [
        ({"building": "yes"}, "building"),
        ({"building:part": "yes"}, "building"),
        ({"building": "no", "landuse": "grass"}, "green"),
        ({"building": "yes", "location": "underground"}, None),
        ({"highway": "pedestrian", "area": "yes"}, "road"),
        ({"area:highway": "footway"}, "road"),
        ({"highway": "residential"}, None),  # a closed street (roundabout) is not an area
        ({"natural": "water"}, "water"),
        ({"waterway": "riverbank"}, "water"),
        ({"landuse": "reservoir"}, "water"),
        ({"leisure": "park"}, "green"),
        ({"natural": "wood"}, "green"),
        ({"landuse": "residential"}, None),
    ],
)
def test_classify_area(tags: dict, kind) -> None:
    assert classify_area(tags) == kind


@pytest.mark.parametrize(
    "tags, kind",
    [
        ({"highway": "primary"}, "road"),
        ({"highway": "footway"}, "road"),
        ({"highway": "primary", "tunnel": "yes"}, None),
        ({"highway": "service", "tunnel": "building_passage"}, "road"),
        ({"highway": "proposed"}, None),
        ({"highway": "pedestrian", "area": "yes"}, None),
        ({"waterway": "river"}, "water"),
        ({"waterway": "stream", "tunnel": "culvert"}, None),
        ({"railway": "rail"}, None),
    ],
)
def test_classify_line(tags: dict, kind) -> None:
    assert classify_line(tags) == kind


def test_road_width_prefers_width_then_lanes_then_class() -> None:
    assert road_width_m({"highway": "primary", "width": "7,5 m", "lanes": "4"}) == 7.5
    assert road_width_m({"highway": "primary", "lanes": "4"}) == 4 * LANE_WIDTH_M
    assert road_width_m({"highway": "primary"}) == ROAD_WIDTH_M["primary"]
    assert road_width_m({"highway": "primary", "width": "500"}) == ROAD_WIDTH_M["primary"]  # implausible
    assert waterway_width_m({"waterway": "river"}) == 10.0
    assert waterway_width_m({"waterway": "stream", "width": "3"}) == 3.0
