"""Capture sequences of the realistic stand-in content: spacing, headings, passes, clearance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, box

from s2r_data.mapillary.standin_capture import CaptureConfig, plan_sequences, street_routes
from s2r_data.mapillary.standin_world import StreetWay

BOUNDARY = box(-400, -400, 400, 400)


def _grid_ways() -> list[StreetWay]:
    """Streets every 60 m both ways, split into 2 ways each (merged back into routes)."""
    ways = []
    for k, c in enumerate(range(-300, 301, 60)):
        ways += [StreetWay(f"h{k}a", LineString([(-390, c), (0, c)]), 8.0), StreetWay(f"h{k}b", LineString([(0, c), (390, c)]), 8.0)]
        ways += [StreetWay(f"v{k}", LineString([(c, -390), (c, 390)]), 6.5)]
    return ways


def _houses() -> shapely.Geometry:
    return shapely.union_all([box(x + 8, y + 8, x + 52, y + 52) for x in range(-360, 300, 60) for y in range(-360, 300, 60)])


def _heading_diff(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_routes_merge_continuing_ways_and_stay_inside():
    ways = [StreetWay("a", LineString([(0, 0), (100, 0)]), 7.0), StreetWay("b", LineString([(100, 0), (200, 0)]), 9.0),
            StreetWay("short", LineString([(0, 50), (5, 50)]), 7.0)]
    routes = street_routes(ways, box(-20, -20, 150, 100), inset_m=10.0, min_length_m=15.0, max_length_m=500.0)
    assert len(routes) == 1 and routes[0].key == "a+b" and routes[0].width_m == 7.0
    assert routes[0].line.length == pytest.approx(140.0)  # clipped 10 m inside the boundary
    cut = street_routes(ways, box(-20, -20, 150, 100), inset_m=10.0, max_length_m=50.0)  # one sequence per piece
    assert [r.line.length for r in cut] == pytest.approx([140 / 3] * 3) and len({r.key for r in cut}) == 3


def test_sequences_space_head_and_clear_as_configured():
    routes = street_routes(_grid_ways(), BOUNDARY)
    cfg = CaptureConfig(count=300, p_opposite_pass=0.5)
    seqs = plan_sequences(routes, _houses(), cfg, np.random.default_rng(0))
    assert sum(len(s.images) for s in seqs) == 300 and len(seqs) >= 15
    by_route = {r.key: r for r in routes}
    houses = _houses()
    for s in seqs:
        xy = np.array([[im.x_m, im.y_m] for im in s.images])
        steps = np.hypot(*np.diff(xy, axis=0).T)
        assert np.all(steps >= 2.0 * 0.85 - 1e-6) and np.all(steps <= 5.0 * 1.15 + 1e-6), s.summary()  # 2-5 m captures
        line = by_route[s.route].line
        for im in s.images:
            along = math.degrees(math.atan2(*np.diff(np.asarray(line.coords)[:2], axis=0)[0]))  # straight routes
            assert _heading_diff(im.heading_deg, along if s.direction > 0 else along + 180) < 1e-6
            assert houses.distance(shapely.Point(im.x_m, im.y_m)) >= cfg.clearance_m
            lo, hi = cfg.walker_mount_height_m if s.platform == "walker" else cfg.car_mount_height_m
            assert lo - 0.2 < im.z_m < hi + 0.2
        # the rig keeps right of its travel direction (car lane / sidewalk)
        side = np.cross(np.diff(np.asarray(line.coords)[:2], axis=0)[0] * s.direction, xy[0] - np.asarray(line.coords)[0])
        assert side < 0
        assert np.all(np.diff([im.along_track_m for im in s.images]) > 0) and np.all(np.diff([im.t_s for im in s.images]) > 0)
    twice = [s for s in seqs if s.opposite_of is not None]
    assert twice, "some streets are captured twice"
    for s in twice:
        first = seqs[s.opposite_of]
        assert first.route == s.route and first.direction == -s.direction
    tilt = np.array([[im.pitch_deg, im.roll_deg] for s in seqs for im in s.images])
    expect = math.hypot(cfg.rig_tilt_sigma_deg, cfg.motion_tilt_sigma_deg)
    assert tilt.std() == pytest.approx(expect, rel=0.25)  # real rigs are not level
    again = plan_sequences(routes, _houses(), cfg, np.random.default_rng(0))
    assert again == seqs


def test_short_sequences_where_asked_for():
    routes = street_routes(_grid_ways(), BOUNDARY)
    seqs = plan_sequences(routes, _houses(), CaptureConfig(count=2, images_per_sequence=(2, 2)), np.random.default_rng(0))
    assert [len(s.images) for s in seqs] == [2]


def test_too_few_streets_is_a_clear_error():
    routes = street_routes([StreetWay("a", LineString([(0, 0), (60, 0)]), 7.0)], BOUNDARY)
    with pytest.raises(ValueError, match="hold only .* of the 500 requested panoramas.*--count"):
        plan_sequences(routes, shapely.GeometryCollection(), CaptureConfig(count=500), np.random.default_rng(0))


def test_bad_capture_config_names_the_field():
    with pytest.raises(ValueError, match="images_per_sequence"):
        CaptureConfig(images_per_sequence=(1, 4))
    with pytest.raises(ValueError, match="spacing_m"):
        CaptureConfig(spacing_m=(0.0, 3.0))
