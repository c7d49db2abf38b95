import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from shapely.geometry import LineString, Point, box

from s2r_data.citymodel import CityModel
from s2r_data.frames import LocalFrame
from s2r_data.poses import heading_pitch_roll_deg, pose_from_mapillary, rodrigues
from s2r_data.mapillary.records import pano_problem
from s2r_data.mapillary.sample_content import (
    Placement,
    finish_photo,
    make_records,
    panorama_record,
    place_panoramas,
    placeholder_jpeg,
)

from .conftest import SAMPLE_CONTENT

import random


def test_placement_clearance_spacing_heading():
    lines = [("a", LineString([(0, 0), (100, 0)])), ("b", LineString([(0, 1), (100, 1)])), ("c", LineString([(50, -50), (50, 50)]))]
    building = box(20, -10, 30, 10)  # straddles street a
    pts = place_panoramas(lines, building, step_m=9.0, clearance_m=1.5, max_count=100, seed=1)
    assert len(pts) >= 15
    for p in pts:
        assert building.distance(Point(p.x_m, p.y_m)) >= 1.5
        if p.street_key in ("a", "b"):
            assert p.heading_grid_deg % 180 == pytest.approx(90.0)
        else:
            assert p.heading_grid_deg % 180 == pytest.approx(0.0, abs=1e-9)
    for i, p in enumerate(pts):
        for q in pts[i + 1 :]:
            assert math.hypot(p.x_m - q.x_m, p.y_m - q.y_m) >= 4.5  # overlapping ways give one pano
    assert len(place_panoramas(lines, building, step_m=9.0, max_count=5)) == 5


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(-8000, 8000), y=st.floats(-8000, 8000), heading=st.floats(0, 359.9),
    pitch=st.floats(-3, 3), roll=st.floats(-3, 3),
)
def test_records_encode_real_enu_rotations(x, y, heading, pitch, roll):
    frame = LocalFrame(2.3651029, 48.8208447)
    rec = panorama_record("1234567890123456", Placement(x, y, heading, "s"), frame, pitch_deg=pitch, roll_deg=roll,
                          sequence_id="q", captured_at_ms=0, rng=random.Random(0))
    R_enu = rodrigues(rec["computed_rotation"])
    # the compass angle is the heading of the true-north ENU rotation (notes §3)
    compass = math.degrees(math.atan2(R_enu[2, 0], R_enu[2, 1]))
    assert abs((compass - rec["computed_compass_angle"] + 180) % 360 - 180) < 1e-5
    pose = pose_from_mapillary(rec, frame)  # back in the city grid: exactly what was placed
    h, p, r = heading_pitch_roll_deg(pose.R_world_to_cam_opensfm)
    assert abs((h - heading + 180) % 360 - 180) < 1e-6 and p == pytest.approx(pitch, abs=1e-6) and r == pytest.approx(roll, abs=1e-6)
    assert pose.center_local_m[:2] == pytest.approx([x, y], abs=1e-4)
    # far from the central meridian the true-north compass differs from the grid heading (convergence)
    gamma = math.degrees(float(frame.grid_convergence_rad(*rec["computed_geometry"]["coordinates"])))
    assert abs((rec["computed_compass_angle"] - (heading - gamma) + 180) % 360 - 180) < 1e-5


def test_make_records_fields():
    frame = LocalFrame(2.3651029, 48.8208447)
    recs = make_records([Placement(0, 0, 10, "a"), Placement(9, 0, 10, "a"), Placement(0, 9, 0, "b")], frame, seed=3)
    assert len({r["id"] for r in recs}) == 3 and all(isinstance(r["id"], str) and len(r["id"]) == 16 for r in recs)
    assert recs[0]["sequence"] == recs[1]["sequence"] != recs[2]["sequence"]
    assert recs[0]["captured_at"] < recs[1]["captured_at"]
    assert all(pano_problem(r) is None for r in recs)


def test_placeholder_is_a_2to1_jpeg():
    im = Image.open(io.BytesIO(placeholder_jpeg(64)))
    assert im.format == "JPEG" and im.size == (64, 32)


def test_finish_photo_keeps_size_and_shrinks_noise():
    rng = __import__("numpy").random.default_rng(0)
    noisy = Image.fromarray(rng.integers(100, 140, size=(128, 256, 3), dtype="uint8"))
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=95)
    out = finish_photo(buf.getvalue())
    assert Image.open(io.BytesIO(out)).size == (256, 128) and len(out) < len(buf.getvalue())


def test_committed_sample_content(city, tmp_path):
    """data/sample/replay is realistic content: ≥ 20 panoramas in several sequences (one street
    captured twice), reported poses served, the truth beside them matching the current OSM model,
    true cameras clear of the true buildings, 2048 × 1024 photos."""
    from s2r_data.mapillary.standin_content import build_true_world
    from s2r_data.mapillary.standin_truth import load_truth

    recs = json.loads((SAMPLE_CONTENT / "images.json").read_text())["images"]
    ids = [r["id"] for r in recs]
    assert len(recs) >= 20 and len(set(ids)) == len(recs)
    total = sum(p.stat().st_size for p in SAMPLE_CONTENT.rglob("*") if p.is_file())
    assert total <= 10e6
    truth = load_truth(SAMPLE_CONTENT)
    assert sorted(truth.images) == sorted(ids) and truth.city == "sample"
    assert len(truth.sequences) >= 3 and any(s["opposite_of"] for s in truth.sequences.values())
    try:
        true_model = CityModel.load(build_true_world(SAMPLE_CONTENT, tmp_path))
    except RuntimeError as e:
        pytest.fail(f"{e}: `python -m s2r_data.mapillary.sample_content --out data/sample/replay --force`")
    footprints = true_model.footprints()
    confidences = set()
    for r in recs:
        t = truth.images[r["id"]]
        assert isinstance(r["id"], str) and pano_problem(r) is None
        assert not any(k.startswith("_replay") for k in r)
        pose = pose_from_mapillary(r, city.frame)
        confidences.add(pose.confidence)
        assert pose.center_local_m == pytest.approx(t.reported_pose.center_local_m, abs=1e-6)
        assert city.polygon.covers(Point(t.true_pose.lon_deg, t.true_pose.lat_deg))
        assert footprints.distance(Point(t.true_pose.center_local_m[:2])) >= 1.5 - 1e-6
        with Image.open(SAMPLE_CONTENT / "images" / f"{r['id']}.jpg") as im:
            assert im.format == "JPEG" and im.size == (r["width"], r["height"]) == (2048, 1024)
    assert "sfm" in confidences
    assert sorted(p.stem for p in (SAMPLE_CONTENT / "images").glob("*.jpg")) == sorted(ids)


def test_selection_takes_runs_and_skips_the_other_carriageway():
    lines = [
        ("near_a", LineString([(-100, 5), (100, 5)])),
        ("near_b", LineString([(-100, 10), (100, 10)])),  # other carriageway, 5 m away
        ("far", LineString([(-100, 60), (100, 60)])),
    ]
    pts = place_panoramas(lines, box(500, 500, 501, 501), step_m=9.0, max_count=12, run_length=6)
    keys = [p.street_key for p in pts]
    assert sorted(set(keys)) == ["far", "near_a"] and keys.count("near_a") == keys.count("far") == 6
    xs = sorted(p.x_m for p in pts if p.street_key == "near_a")
    assert all(b - a == pytest.approx(9.0) for a, b in zip(xs, xs[1:])) and abs(sum(xs) / 6) < 9  # centred run
