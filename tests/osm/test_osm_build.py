"""End-to-end OSM → CityModel on the three real extracts in data/osm (ODbL, see ATTRIBUTION.md)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from s2r_data.cities import load_city
from s2r_data.citymodel import MESH_CLASSES, CityModel
from s2r_data.osm import ATTRIBUTION, BUILDER_VERSION, build_city_model
from s2r_data.osm.builder import Z_GREEN_M, Z_ROAD_M, Z_WATER_M, city_building_solids, city_clip_polygons
from s2r_data.osm.mesh import closed_surface_defects, extrude_polygons, ring_layout
from s2r_data.osm.reader import read_osm

MODELS = ["sample_model", "helsinki_model", "liechtenstein_model"]

# name → tagged height (m) of the Olympiades towers in paris-13e-olympiades.osm
OLYMPIADES_TOWERS = {
    "Tour Bologne": 102.0,
    "Tour Ancône": 102.0,
    "Résidence Ferrare": 102.0,
    "Tour Rimini": 92.0,
    "Tour Puccini": 95.0,
    "Tour Verdi": 95.0,
    "Résidence Mantoue": 95.0,  # a building:part standing on the Galerie Masséna slab
}


def test_sample_counts(sample_model: CityModel, sample_city) -> None:
    c = sample_model.meta["counts"]
    # The file holds 20 building areas: 19 outlines + 1 part (Résidence Mantoue) that stands on the two
    # overlapping Galerie Masséna outlines, which are trimmed (not replaced) around it. With the default
    # 200 m margin, two outlines more than 200 m outside the (360 m × 360 m) polygon are left out.
    assert (c["building_outlines"], c["building_parts"]) == (17, 1)
    assert (c["outlines_replaced_by_parts"], c["outlines_trimmed_by_parts"]) == (0, 2)
    assert c["buildings"] == 18
    assert c["buildings_in_city_polygon"] == 16
    wide = build_city_model(sample_city, margin_m=1000.0).meta["counts"]
    assert (wide["buildings"], wide["building_outlines"], wide["building_parts"]) == (20, 19, 1)


def test_helsinki_counts(helsinki_model: CityModel) -> None:
    c = helsinki_model.meta["counts"]
    # 572 building areas = 439 outlines + 133 parts. Outlines whose parts cover them (remainder < 4 m²
    # after a 0.5 m opening) disappear: 7 in this file have parts covering 100 % of them (checked by
    # intersecting outlines with their parts' union); 43 more keep an uncovered remainder.
    assert (c["building_outlines"], c["building_parts"]) == (439, 133)
    assert 1 <= c["outlines_replaced_by_parts"] <= 12
    assert c["buildings"] == 572 - c["outlines_replaced_by_parts"]
    assert 560 <= c["buildings"] <= 571
    assert c["buildings_in_city_polygon"] == 572
    assert c["roads"] > 1500 and c["water"] > 5 and c["green"] > 100


def test_liechtenstein_counts(liechtenstein_model: CityModel) -> None:
    c = liechtenstein_model.meta["counts"]
    assert c["buildings"] == 3723 and c["building_parts"] == 0
    assert c["heights_from_default"] == 3723  # no height tags in this extract
    assert c["roads"] > 2000 and c["water"] > 50 and c["green"] > 50


def test_olympiades_tower_heights(sample_model: CityModel, sample_city) -> None:
    feats = read_osm(sample_city.local_osm_path())
    b = feats["building"]
    from s2r_data.osm.builder import _to_local

    geoms = _to_local(b.geometries_lonlat(), sample_city.frame)
    walls = sample_model.meshes["wall"]
    v = walls.vertices_local_m.astype(np.float64)
    found = {}
    for tags, g in zip(b.tags, geoms):
        name = tags.get("name")
        if name in OLYMPIADES_TOWERS:
            inside = shapely.contains_xy(shapely.buffer(g, 0.01), v[:, 0], v[:, 1])
            found[name] = v[inside, 2].max()
    assert set(found) == set(OLYMPIADES_TOWERS)
    for name, tallest in found.items():
        assert 92.0 <= tallest <= 102.0
        assert tallest == pytest.approx(OLYMPIADES_TOWERS[name], abs=1e-3), name


@pytest.mark.parametrize("fixture", MODELS)
def test_meshes_are_finite_indexed_and_in_layers(fixture: str, request) -> None:
    model: CityModel = request.getfixturevalue(fixture)
    assert set(model.meshes) == set(MESH_CLASSES)
    for name, m in model.meshes.items():
        assert np.isfinite(m.vertices_local_m).all(), name
        if len(m.triangles):
            assert m.triangles.min() >= 0 and m.triangles.max() < len(m.vertices_local_m), name
    for name, z in (("road", Z_ROAD_M), ("water", Z_WATER_M), ("green", Z_GREEN_M), ("ground", 0.0)):
        m = model.meshes[name]
        assert np.all(m.vertices_local_m[:, 2] == np.float32(z)), name
        if len(m.triangles):
            n = m.face_normals()
            area2 = np.linalg.norm(np.cross(*(m.vertices_local_m[m.triangles[:, i]] - m.vertices_local_m[m.triangles[:, 0]] for i in (1, 2))), axis=1)
            assert (n[area2 > 1e-4, 2] > 0.999).all(), name
    for name in ("wall", "roof", "road"):
        assert len(model.meshes[name].triangles) > 0, name
    assert np.isfinite(model.meshes["wall"].face_normals()).all()


@pytest.mark.parametrize("fixture", MODELS)
def test_flat_layers_clipped_to_buffered_city(fixture: str, request) -> None:
    model: CityModel = request.getfixturevalue(fixture)
    x0, y0, x1, y1 = model.meta["clip_bounds_local_m"]
    for name in ("road", "water", "green"):
        v = model.meshes[name].vertices_local_m
        if len(v):
            assert v[:, 0].min() >= x0 - 0.01 and v[:, 0].max() <= x1 + 0.01, name
            assert v[:, 1].min() >= y0 - 0.01 and v[:, 1].max() <= y1 + 0.01, name
    g = model.meshes["ground"].vertices_local_m
    assert np.allclose([g[:, 0].min(), g[:, 1].min(), g[:, 0].max(), g[:, 1].max()], [x0, y0, x1, y1], atol=0.01)


@pytest.mark.parametrize("fixture", MODELS)
def test_building_solids_are_closed(fixture: str, request) -> None:
    """walls + roofs + implied floors: every directed edge once, its reverse once."""
    model: CityModel = request.getfixturevalue(fixture)
    walls, roofs = model.meshes["wall"], model.meshes["roof"]
    P = len(roofs.vertices_local_m)
    assert np.array_equal(walls.vertices_local_m[P:], roofs.vertices_local_m)  # shared positions: no cracks
    assert closed_surface_defects(walls, roofs) == 0


@pytest.mark.parametrize("city_name", ["sample", "helsinki", "liechtenstein"])
def test_wall_normals_point_out_of_their_footprint(city_name: str, request) -> None:
    """Rebuild the solids the builder extrudes, check they are the model's, then probe each wall:
    a point 5 mm along its normal is outside its own footprint, 5 mm against it is inside."""
    model: CityModel = request.getfixturevalue(f"{city_name}_model")
    city = load_city(city_name)
    boundary, clip = city_clip_polygons(city, model.meta["build_config"]["margin_m"])
    solids, _ = city_building_solids(read_osm(city.local_osm_path()), city, boundary, clip, 3.0)
    ext = extrude_polygons(solids.polygons, solids.base_m, solids.top_m)
    assert np.array_equal(ext.walls.triangles, model.meshes["wall"].triangles)
    assert np.array_equal(ext.walls.vertices_local_m, model.meshes["wall"].vertices_local_m)

    polys = solids.polygons
    lay = ring_layout(polys)
    P = len(lay.xy)
    t = ext.walls.triangles[: 2 * P : 2]
    n = ext.walls.face_normals()[: 2 * P : 2]
    assert np.abs(n[:, 2]).max() < 1e-3
    xy = lay.xy  # float64 positions of the same vertices
    a, b = xy[t[:, 0]], xy[t[:, 1]]
    ok = np.linalg.norm(b - a, axis=1) > 0.05
    mid = (a + b) / 2
    owner = polys[lay.vertex_poly[t[:, 0]]]
    out_pt, in_pt = mid + 5e-3 * n[:, :2], mid - 5e-3 * n[:, :2]
    outside = ~shapely.contains_xy(owner, out_pt[:, 0], out_pt[:, 1])
    inside = shapely.contains_xy(owner, in_pt[:, 0], in_pt[:, 1])
    assert ok.sum() > 0.9 * len(ok)
    assert outside[ok].all() and inside[ok].all()


@pytest.mark.parametrize("fixture", MODELS)
def test_meta_and_footprints(fixture: str, request) -> None:
    model: CityModel = request.getfixturevalue(fixture)
    m = model.meta
    assert m["attribution"] == ATTRIBUTION and "OpenStreetMap" in m["attribution"] and "ODbL" in m["attribution"]
    assert m["builder_version"] == BUILDER_VERSION
    assert len(m["source"]["sha256"]) == 64 and m["source"]["file"].startswith(("paris", "helsinki", "liechtenstein"))
    assert "+proj=tmerc" in m["proj"] and len(m["reference_lonlat"]) == 2
    for key in ("buildings", "parts", "roads", "water", "green"):
        assert isinstance(m["counts"][key], int)
    fp = model.footprints()
    assert fp.is_valid and fp.area > 0
    roof_area = np.linalg.norm(np.cross(*(model.meshes["roof"].vertices_local_m[model.meshes["roof"].triangles[:, i]].astype(float)
                                          - model.meshes["roof"].vertices_local_m[model.meshes["roof"].triangles[:, 0]].astype(float) for i in (1, 2))), axis=1).sum() / 2
    assert fp.area <= roof_area * 1.001  # union ≤ sum of (possibly overlapping) roofs


def test_save_load_roundtrip(sample_model: CityModel, tmp_path) -> None:
    path = sample_model.save(tmp_path / "city_model.npz")
    back = CityModel.load(path)
    assert back.meta == sample_model.meta
    for name in MESH_CLASSES:
        assert np.array_equal(back.meshes[name].vertices_local_m, sample_model.meshes[name].vertices_local_m)
        assert np.array_equal(back.meshes[name].triangles, sample_model.meshes[name].triangles)
    assert back.footprints().equals(sample_model.footprints())


@pytest.mark.parametrize("layer", ["road", "green"])
def test_flat_layers_have_no_overlapping_triangles(sample_model: CityModel, helsinki_model: CityModel, layer: str) -> None:
    # overlapping coplanar pieces (a footway over a street's edge) shade black in lit renders:
    # each flat layer is one union, so its triangles tile the plane without double cover
    import shapely

    for model in (sample_model, helsinki_model):
        mesh = model.meshes[layer]
        tri = mesh.vertices_local_m[mesh.triangles][:, :, :2].astype(np.float64)
        if not len(tri):
            continue
        polys = shapely.polygons(np.concatenate([tri, tri[:, :1]], axis=1))
        total = float(shapely.area(polys).sum())
        union = float(shapely.union_all(polys, grid_size=0.001).area)
        assert abs(total - union) <= 1e-3 * total, (layer, total, union)
