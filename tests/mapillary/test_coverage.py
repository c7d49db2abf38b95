import mapbox_vector_tile
import mercantile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from s2r_data.mapillary.coverage import (
    EXTENT,
    decode_coverage_tile,
    encode_coverage_tile,
    lonlat_to_tile_px,
    select_panos,
    tile_px_to_lonlat,
)

TILE = mercantile.tile(2.3651, 48.8208, 14)


def _rec(i, lon, lat, **kw):
    r = {"id": str(10**15 + i), "computed_geometry": {"type": "Point", "coordinates": [lon, lat]}, "is_pano": True}
    r.update(kw)
    return r


def test_decoder_uses_y_down_north_point_stays_north():
    b = mercantile.bounds(TILE)
    lon = b.west + 0.25 * (b.east - b.west)
    lat_north = b.south + 0.9 * (b.north - b.south)  # near the top edge of the tile
    data = encode_coverage_tile(TILE, [_rec(1, lon, lat_north)], computed=True)
    (p,) = decode_coverage_tile(data, TILE)
    assert p.lat_deg == pytest.approx(lat_north, abs=2e-5)
    assert p.lon_deg == pytest.approx(lon, abs=2e-5)
    # the raw pixel row is small (near the top) only with y_coord_down=True; the library default flips it
    down = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})["image"]["features"][0]
    flipped = mapbox_vector_tile.decode(data)["image"]["features"][0]
    assert down["geometry"]["coordinates"][1] < EXTENT * 0.2
    assert flipped["geometry"]["coordinates"][1] > EXTENT * 0.8


@settings(max_examples=60, deadline=None)
@given(st.floats(0, EXTENT), st.floats(0, EXTENT))
def test_tile_px_round_trip(x, y):
    lon, lat = tile_px_to_lonlat(TILE, x, y)
    x2, y2 = lonlat_to_tile_px(TILE, lon, lat)
    assert x2 == pytest.approx(x, abs=1e-6) and y2 == pytest.approx(y, abs=1e-6)


def test_properties_types_and_layers():
    recs = [
        _rec(1, 2.3650, 48.8207, sequence="seqA", captured_at=1718445600000, computed_compass_angle=12.25,
             creator={"id": "77", "username": "u"}, organization_id=5),
        _rec(2, 2.3652, 48.8209, sequence="seqA", captured_at=1718445602000),
    ]
    data = encode_coverage_tile(TILE, recs, computed=True)
    layers = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    assert set(layers) == {"image", "sequence"}
    f0 = layers["image"]["features"][0]["properties"]
    assert isinstance(f0["id"], int) and f0["sequence_id"] == "seqA" and f0["creator_id"] == 77
    assert f0["organization_id"] == 5 and "organization_id" not in layers["image"]["features"][1]["properties"]
    pts = decode_coverage_tile(data, TILE)
    assert [p.image_id for p in pts] == [recs[0]["id"], recs[1]["id"]]  # ids come back as strings
    assert all(isinstance(p.image_id, str) for p in pts)
    assert pts[0].compass_angle_deg == 12.25 and pts[0].creator_id == "77"
    seq = layers["sequence"]["features"][0]["properties"]
    assert seq["id"] == "seqA" and seq["image_id"] == int(recs[0]["id"])


def test_public_layer_uses_gps_geometry():
    r = _rec(1, 2.3650, 48.8207, geometry={"type": "Point", "coordinates": [2.3655, 48.8210]})
    (p,) = decode_coverage_tile(encode_coverage_tile(TILE, [r], computed=False), TILE)
    assert p.lon_deg == pytest.approx(2.3655, abs=2e-5)
    (q,) = decode_coverage_tile(encode_coverage_tile(TILE, [r], computed=True), TILE)
    assert q.lon_deg == pytest.approx(2.3650, abs=2e-5)


def test_select_panos_filters_and_dedupes():
    inside = box(2.3644, 48.8204, 2.3658, 48.8213)
    recs = [
        _rec(3, 2.3650, 48.8207),
        _rec(1, 2.3651, 48.8208),
        _rec(2, 2.3652, 48.8209, is_pano=False),
        _rec(4, 2.3700, 48.8208),  # outside the polygon, inside the tile
    ]
    pts = decode_coverage_tile(encode_coverage_tile(TILE, recs, computed=True), TILE)
    pts = pts + pts[:1]  # a duplicate id (e.g. from a neighbouring tile)
    sel = select_panos(pts, inside)
    assert [p.image_id for p in sel] == sorted([recs[0]["id"], recs[1]["id"]])


def test_empty_tile_decodes_to_nothing():
    assert decode_coverage_tile(b"", TILE) == []
    assert decode_coverage_tile(encode_coverage_tile(TILE, [], computed=True), TILE) == []
