import pytest

from s2r_data.cities import CityRegistryError, UnknownCityError, known_cities, load_city
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
