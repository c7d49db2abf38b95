import json
from pathlib import Path

import pytest

from s2r_data.cities import (
    AreaError,
    CityRegistryError,
    UnknownCityError,
    area_from_bbox,
    area_from_geojson,
    known_cities,
    load_city,
    load_city_or_area,
)
from s2r_data.tiles import parse_tile_id, tile_polygon_lonlat, tiles_for_polygon


def test_known_cities():
    names = known_cities()
    assert {"sample", "paris", "helsinki", "liechtenstein"} <= set(names)


def test_sample_city_files_exist_and_frame_is_centred():
    c = load_city("Sample")
    assert c.name == "sample" and c.local_osm_path().is_file()
    x, y = c.frame.lonlat_to_local(*c.reference_lonlat)
    assert abs(x) < 1e-6 and abs(y) < 1e-6
    assert c.polygon.contains(c.polygon.centroid)


def test_paris_polygon_contains_thesis_area_and_excludes_suburbs():
    from shapely.geometry import Point

    p = load_city("paris").polygon
    for name, lonlat in {
        "Eiffel Tower": (2.2945, 48.8584),
        "Trocadéro": (2.2876, 48.8616),
        "Champ de Mars": (2.2983, 48.8556),
        "Notre-Dame": (2.3499, 48.8530),
        "Bois de Vincennes": (2.4350, 48.8330),
    }.items():
        assert p.contains(Point(lonlat)), name
    for name, lonlat in {"La Défense": (2.2380, 48.8920), "Saint-Denis": (2.3590, 48.9360), "Versailles": (2.1300, 48.8049)}.items():
        assert not p.contains(Point(lonlat)), name
    assert 30 <= len(p.exterior.coords) - 1 <= 60
    assert load_city("paris").osm_is_url


def test_url_source_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download it to"):
        load_city("paris").local_osm_path(cache_dir=tmp_path)


def test_unknown_city_lists_known_names():
    with pytest.raises(UnknownCityError) as e:
        load_city("atlantis")
    msg = str(e.value)
    assert "atlantis" in msg and "paris" in msg and "sample" in msg


def test_registry_validation(tmp_path):
    reg = tmp_path / "cities.yaml"
    reg.write_text("cities:\n  x:\n    boundary_lonlat: [[0,0],[1,0],[1,1]]\n    reference_lonlat: [0.5, 0.5]\n    osm_sorce: a.osm\n")
    with pytest.raises(CityRegistryError, match="osm_sorce"):
        load_city("x", registry=reg)
    reg.write_text("cities:\n  x:\n    boundary_lonlat: [[48.8,2.3],[48.9,2.3],[48.9,100.4]]\n    reference_lonlat: [0.5, 0.5]\n    osm_source: a.osm\n")
    with pytest.raises(CityRegistryError, match="lon, lat"):
        load_city("x", registry=reg)


def test_tiles_intersect_polygon_not_bbox():
    from shapely.geometry import Polygon

    # a thin diagonal triangle: its bbox covers many z14 tiles, the triangle far fewer
    tri = Polygon([(2.25, 48.80), (2.45, 48.92), (2.45, 48.915)])
    ids = tiles_for_polygon(tri)
    w, s, e, n = tri.bounds
    import mercantile

    bbox_count = len(list(mercantile.tiles(w, s, e, n, zooms=[14])))
    assert 0 < len(ids) < bbox_count / 2
    for tid in ids:
        assert tile_polygon_lonlat(parse_tile_id(tid)).intersects(tri)
    assert ids == sorted(ids, key=lambda t: tuple(int(v) for v in t.split("/")[1:]))


def test_sample_city_tiles_and_paris_tile_count():
    assert tiles_for_polygon(load_city("sample").polygon) == ["14/8299/5638", "14/8299/5639"]
    assert 40 < len(tiles_for_polygon(load_city("paris").polygon)) < 80


@pytest.mark.parametrize("bad", ["14/8300", "a/b/c", "14/99999/1"])
def test_bad_tile_ids(bad):
    with pytest.raises(ValueError, match="tile id"):
        parse_tile_id(bad)


def test_sample_names_its_replay_content(tmp_path):
    c = load_city("sample")
    assert c.replay_content and (Path(c.replay_content) / "images.json").is_file()
    assert load_city("paris").replay_content is None
    reg = tmp_path / "cities.yaml"
    reg.write_text("cities:\n  x:\n    boundary_lonlat: [[0,0],[1,0],[1,1]]\n    reference_lonlat: [0.5, 0.5]\n"
                   "    osm_source: a.osm\n    replay: here/replay\n")
    assert load_city("x", registry=reg).replay_content == str(tmp_path / "here" / "replay")  # relative to the registry


def test_bbox_area():
    assert area_from_bbox("2.36,48.81,2.37,48.82") == ((2.36, 48.81), (2.37, 48.81), (2.37, 48.82), (2.36, 48.82))
    assert area_from_bbox([2.36, 48.81, 2.37, 48.82]) == area_from_bbox(" 2.36, 48.81 ,2.37,48.82")
    for bad, match in (("2.37,48.81,2.36,48.82", "W < E"), ("1,2,3", "got 3"), ("a,b,c,d", "4 numbers"),
                       ("48.81,2.36,48.82,200", "not \\(lon, lat\\)")):  # fmt: skip
        with pytest.raises(AreaError, match=match):
            area_from_bbox(bad)


def test_geojson_area_file_text_feature_collection(tmp_path):
    ring = [[2.36, 48.81], [2.37, 48.81], [2.37, 48.82], [2.36, 48.81]]
    poly = {"type": "Polygon", "coordinates": [ring]}
    expected = ((2.36, 48.81), (2.37, 48.81), (2.37, 48.82))
    f = tmp_path / "area.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": poly}]}))
    assert area_from_geojson(str(f)) == area_from_geojson(json.dumps(poly)) == area_from_geojson(poly) == expected
    assert area_from_geojson({"type": "MultiPolygon", "coordinates": [[ring]]}) == expected
    hole = [[2.362, 48.812], [2.363, 48.812], [2.363, 48.813], [2.362, 48.812]]
    for doc, match in (({"type": "Polygon", "coordinates": [ring, hole]}, "hole"),
                       ({"type": "Point", "coordinates": [2.36, 48.81]}, "a Point"),
                       ({"type": "FeatureCollection", "features": []}, "0 features"),
                       ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "not valid")):  # fmt: skip
        with pytest.raises(AreaError, match=match):
            area_from_geojson(doc)
    with pytest.raises(AreaError, match="GeoJSON file .*missing.geojson"):
        area_from_geojson(str(tmp_path / "missing.geojson"))


def test_area_in_a_city_keeps_its_frame_and_a_lone_area_uses_its_centroid():
    sample = load_city("sample")
    box = "2.3630,48.8195,2.3650,48.8205"
    a = load_city_or_area("sample", bbox=box)
    assert a.name.startswith("sample-area-") and a.name == load_city_or_area("Sample", bbox=box).name
    assert a.reference_lonlat == sample.reference_lonlat and a.osm_source == sample.osm_source
    assert a.replay_content == sample.replay_content and a.boundary_lonlat == area_from_bbox(box)
    assert load_city_or_area("sample", bbox="2.3630,48.8195,2.3651,48.8205").name != a.name
    lone = load_city_or_area(None, bbox=box)
    assert lone.name.startswith("area-") and lone.reference_lonlat == pytest.approx((2.3640, 48.8200))
    assert load_city_or_area("sample") == sample
    with pytest.raises(AreaError, match="not both"):
        load_city_or_area("sample", bbox=box, polygon={"type": "Polygon", "coordinates": []})
    with pytest.raises(AreaError, match="give a city name"):
        load_city_or_area(None)
