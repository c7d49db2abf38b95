import pytest

from s2r_data.mapillary.records import make_row, pano_problem, pose_problem

from .conftest import good_records

PANO = {"id": "1", "is_pano": True, "camera_type": "spherical", "width": 5760, "height": 2880, "exif_orientation": 1}


@pytest.mark.parametrize(
    "change,reason",
    [
        ({}, None),
        ({"camera_type": "equirectangular"}, None),
        ({"is_pano": False}, "not_pano: is_pano=False"),
        ({"is_pano": None}, "not_pano: is_pano missing"),
        ({"camera_type": "fisheye"}, "not_pano: camera_type='fisheye'"),
        ({"width": 4000, "height": 3000}, "not_2to1: original 4000x3000"),
        ({"exif_orientation": 6}, "exif_orientation=6 (only 1 is supported)"),
        ({"exif_orientation": None}, "exif_orientation missing"),
    ],
)
def test_pano_filter(change, reason):
    rec = {k: v for k, v in {**PANO, **change}.items() if v is not None}
    assert pano_problem(rec) == reason


def test_pano_filter_checks_downloaded_shape():
    rec = {k: v for k, v in PANO.items() if k not in ("width", "height")}
    assert pano_problem(rec) is None
    assert pano_problem(rec, image_wh=(2048, 1024)) is None
    assert pano_problem(rec, image_wh=(2048, 1536)) == "not_2to1: image 2048x1536"


def test_pose_problem(city):
    rec = good_records(city, 1)[0]
    assert pose_problem(rec, city.frame) == ("sfm", None)
    bad = {k: v for k, v in rec.items() if k not in ("computed_rotation", "computed_compass_angle", "compass_angle")}
    assert pose_problem(bad, city.frame) == (None, "no_pose: no_orientation")
    assert pose_problem({"id": "9"}, city.frame) == (None, "no_pose: no_position")


def test_make_row_keeps_no_url_and_string_ids(city):
    rec = good_records(city, 1)[0]
    rec["thumb_2048_url"] = "https://cdn/x.jpg?oh=SIG&oe=FFFF"
    row = make_row(image_id=int(rec["id"]), tile="14/1/2", status="harvested", reason=None, harvested_at_ms=1, record=rec)
    assert row["image_id"] == rec["id"] and isinstance(row["image_id"], str)
    assert not any("http" in str(v) for v in row.values())
    assert row["lon"] == rec["computed_geometry"]["coordinates"][0] and row["position_source"] == "computed"
    assert row["creator_username"] == "s2r-sample" and row["sequence_id"] == rec["sequence"]
    with pytest.raises(ValueError, match="status"):
        make_row(image_id="1", tile="t", status="done", reason=None, harvested_at_ms=1)


def test_make_row_position_fallbacks():
    r = make_row(image_id="1", tile="t", status="missing", reason="x", harvested_at_ms=1, fallback_lonlat=(2.0, 48.0))
    assert (r["lon"], r["lat"], r["position_source"]) == (2.0, 48.0, "tile")
    r = make_row(image_id="1", tile="t", status="no_pose", reason="x", harvested_at_ms=1,
                 record={"geometry": {"type": "Point", "coordinates": [3.0, 49.0]}}, fallback_lonlat=(2.0, 48.0))
    assert (r["lon"], r["position_source"]) == (3.0, "original")
