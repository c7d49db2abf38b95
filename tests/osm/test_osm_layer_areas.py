"""Flat layers keep their area (issue 17): on every real extract and on generated stress cases the
mesh covers ≥ 99 % of the layer's union inside the clip polygon, and no triangle lies outside it;
a build that would lose area fails, naming the layer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.cities import load_city
from s2r_data.citymodel import CityModel, Mesh
from s2r_data.osm import FlatLayerAreaError, build_or_load_city_model
from s2r_data.osm import builder as builder_mod
from s2r_data.osm.builder import _query_bbox_lonlat, city_clip_polygons, city_flat_layers, flat_layer_mesh
from s2r_data.osm.layer_areas import (
    MIN_MESH_AREA_RATIO,
    ROAD_SHARE_MIN,
    FlatLayerArea,
    check_flat_layer,
    road_share_warning,
)
from s2r_data.osm.mesh import _safe_step, clean_polygons
from s2r_data.osm.reader import read_osm

LAYERS = ("road", "water", "green")
SAMPLE_POINTS_BARY = np.array([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])


def _union(pieces: np.ndarray) -> shapely.Geometry:
    pieces = np.asarray(pieces, dtype=object)
    if len(pieces) == 0:
        return shapely.GeometryCollection()
    return shapely.union_all(shapely.make_valid(pieces))


def _outside_points(mesh: Mesh, region: shapely.Geometry, tol_m: float = 0.02) -> int:
    """How many of each triangle's centroid and three inner points lie outside ``region`` grown by
    ``tol_m`` (0 for a mesh inside the region)."""
    if len(mesh.triangles) == 0:
        return 0
    tri = mesh.vertices_local_m[mesh.triangles][:, :, :2].astype(np.float64)  # (M, 3, 2)
    pts = np.einsum("kj,mjd->mkd", SAMPLE_POINTS_BARY, tri).reshape(-1, 2)
    shapely.prepare(region)
    out = pts[~shapely.contains_xy(region, pts[:, 0], pts[:, 1])]  # then: how far outside (few points)
    return int((~shapely.dwithin(region, shapely.points(out), tol_m)).sum()) if len(out) else 0


def assert_layer_conserves_area(mesh: Mesh, union: shapely.Geometry, clip: shapely.Geometry, label: str) -> None:
    union_m2, mesh_m2 = float(union.area), mesh.area_xy_m2()
    assert mesh_m2 >= MIN_MESH_AREA_RATIO * union_m2, f"{label}: mesh {mesh_m2:.1f} m² of union {union_m2:.1f} m²"
    assert mesh_m2 <= union_m2 * 1.001 + 0.01, f"{label}: mesh {mesh_m2:.1f} m² > union {union_m2:.1f} m² (overlaps?)"
    assert _outside_points(mesh, union) == 0, f"{label}: triangles outside the layer's union"
    assert _outside_points(mesh, clip) == 0, f"{label}: triangles outside the clip polygon"


# ---- the real extracts in data/osm ------------------------------------------------------------


@pytest.fixture(scope="module")
def extract_layers(request) -> dict:
    """Per extract (built once per module): the layers' clipped pieces as the builder makes them."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            city = load_city(name)
            _, clip = city_clip_polygons(city, 200.0)
            feats = read_osm(city.local_osm_path(), bbox_lonlat=_query_bbox_lonlat(city, 200.0))
            pieces, _ = city_flat_layers(feats, clip, city.frame)
            cache[name] = (clip, {k: _union(v) for k, v in pieces.items()})
        return cache[name]

    return get


@pytest.mark.parametrize(
    "city_name",
    ["sample", pytest.param("helsinki", marks=pytest.mark.slow), pytest.param("liechtenstein", marks=pytest.mark.slow)],
)
def test_real_extract_layers_keep_their_area(city_name: str, extract_layers, request) -> None:
    model: CityModel = request.getfixturevalue(f"{city_name}_model")
    clip, unions = extract_layers(city_name)
    for layer in LAYERS:
        union = unions[layer]
        recorded = model.meta["flat_layers"][layer]
        assert recorded["union_area_m2"] == pytest.approx(union.area, rel=1e-6, abs=1e-3), layer
        assert recorded["mesh_area_m2"] == pytest.approx(model.meshes[layer].area_xy_m2(), rel=1e-6, abs=1e-3)
        assert_layer_conserves_area(model.meshes[layer], union, clip, f"{city_name}/{layer}")
    assert model.meta["clip_area_m2"] == pytest.approx(clip.area, rel=1e-9)


def test_helsinki_keeps_its_roads(helsinki_model: CityModel) -> None:
    # issue 17: 392 triangles, ≈ 4,056 m² of a ≈ 320,738 m² union before the fix
    a = helsinki_model.meta["flat_layers"]["road"]
    assert a["union_area_m2"] == pytest.approx(320_738, rel=0.01)
    assert a["mesh_ratio"] >= 0.999 and len(helsinki_model.meshes["road"].triangles) > 10_000
    assert road_share_warning(helsinki_model.meta) is None


# ---- generated stress cases ------------------------------------------------------------------

BOX = shapely.box(-10.0, -10.0, 510.0, 510.0)


def _street_grid(n: int = 21, spacing_m: float = 25.0, width_m: float = 6.0, angle_deg: float = 0.0) -> np.ndarray:
    lines = [shapely.LineString([(0, y), (spacing_m * (n - 1), y)]) for y in np.arange(n) * spacing_m]
    lines += [shapely.LineString([(x, 0), (x, spacing_m * (n - 1))]) for x in np.arange(n) * spacing_m]
    lines = shapely.affinity.rotate(shapely.GeometryCollection(lines), angle_deg, origin=(250, 250)).geoms
    return shapely.buffer(np.array(list(lines), dtype=object), width_m / 2, quad_segs=2)


def _ring_roads(centre=(250.0, 250.0), radii=(40.0, 80.0, 80.004, 120.0, 160.0), width_m: float = 8.0) -> np.ndarray:
    rings = [shapely.Point(centre).buffer(r, quad_segs=64).exterior for r in radii]  # 80/80.004: nearly coincident
    spokes = [shapely.LineString([centre, (centre[0] + 200 * math.cos(a), centre[1] + 200 * math.sin(a))])
              for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    return shapely.buffer(np.array(rings + spokes, dtype=object), width_m / 2, quad_segs=2)


def _jittered_polyline(rng: np.random.Generator, n: int = 400) -> shapely.LineString:
    """A wiggly street whose vertices come in nearly repeated, nearly collinear clusters (mm apart)."""
    t = np.linspace(0, 1, n)
    base = np.column_stack([20 + 460 * t, 250 + 150 * np.sin(6 * t)])
    reps = np.repeat(base, 3, axis=0) + rng.normal(0, 0.002, (3 * n, 2))
    return shapely.LineString(reps)


def _collapsing_hole_polygon() -> shapely.Polygon:
    """A street grid's union plus a sliver hole that repeated-point removal at 1 cm turns into a
    3-point ring: the shape that made Helsinki lose 98.7 % of its road area."""
    u = shapely.union_all(_street_grid())
    hole = [(100.0, 1.0), (100.5, 1.0), (100.505, 1.0000001)]
    return shapely.Polygon(u.exterior, [*u.interiors, hole])


STRESS = {
    "dense street grid": lambda: _street_grid(n=41, spacing_m=12.5),
    "rotated grid": lambda: _street_grid(angle_deg=0.7),
    "ring roads with holes": _ring_roads,
    "nearly collinear repeated points": lambda: shapely.buffer(
        np.array([_jittered_polyline(np.random.default_rng(s)) for s in range(3)], dtype=object), 3.0, quad_segs=2
    ),
    "sliver hole collapsing to 3 points": lambda: np.array([_collapsing_hole_polygon()], dtype=object),
}


@pytest.mark.parametrize("case", list(STRESS))
def test_stress_layers_keep_their_area(case: str) -> None:
    pieces = builder_mod._clip(STRESS[case](), BOX)
    union = _union(pieces)
    mesh, area = flat_layer_mesh("road", pieces)
    assert area.union_area_m2 == pytest.approx(union.area, rel=1e-9)
    assert_layer_conserves_area(mesh, union, BOX, case)
    # exact: nothing of the mesh outside the union (small enough to union the triangles)
    tris = shapely.polygons(mesh.vertices_local_m[mesh.triangles][:, :, :2].astype(np.float64))
    assert shapely.difference(shapely.union_all(tris), shapely.buffer(union, 0.01)).area < 1e-3


def test_sliver_hole_used_to_lose_the_polygon() -> None:
    """The cause of issue 17 in one polygon: clean_polygons keeps it (it returned nothing before)."""
    poly = _collapsing_hole_polygon()
    assert poly.is_valid
    assert not shapely.is_valid(shapely.remove_repeated_points(poly, tolerance=0.01))  # what broke it
    polys, src = clean_polygons(np.array([poly], dtype=object))
    assert len(polys) == 1 and list(src) == [0] and polys[0].is_valid
    assert shapely.area(polys).sum() == pytest.approx(poly.area, rel=1e-5)


@st.composite
def street_networks(draw):
    """Random straight and curved streets (1.5–12 m wide), ring roads and duplicated vertices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    geoms = []
    for _ in range(draw(st.integers(1, 40))):
        k = int(rng.integers(2, 8))
        pts = rng.uniform(0, 500, (k, 2))
        if rng.random() < 0.3:  # nearly repeated vertices
            pts = np.repeat(pts, 2, axis=0) + rng.normal(0, 0.003, (2 * k, 2))
        geoms.append(shapely.buffer(shapely.LineString(pts), rng.uniform(0.75, 6.0), quad_segs=2))
    for _ in range(draw(st.integers(0, 3))):
        c, r = rng.uniform(100, 400, 2), rng.uniform(10, 150)
        geoms.append(shapely.buffer(shapely.Point(c).buffer(r, quad_segs=16).exterior, rng.uniform(1, 5), quad_segs=2))
    return np.array(geoms, dtype=object)


@settings(max_examples=40, deadline=None)
@given(street_networks())
def test_random_street_networks_keep_their_area(pieces: np.ndarray) -> None:
    pieces = builder_mod._clip(pieces, BOX)
    union = _union(pieces)
    mesh, area = flat_layer_mesh("road", pieces)
    assert area.mesh_ratio >= MIN_MESH_AREA_RATIO
    assert_layer_conserves_area(mesh, union, BOX, "random")


def test_safe_step_keeps_the_polygon_a_step_breaks() -> None:
    """A step (which only drops vertices) is undone per polygon where it raises, leaves an invalid
    polygon or changes the area; other polygons keep its result."""
    good = shapely.Polygon([(0, 0), (5, -1), (10, 0), (10, 10), (0, 10)])
    other = shapely.Polygon([(20, 0), (25, 0), (30, 0), (30, 10), (20, 10)])  # (25, 0) is redundant
    shrink = shapely.Polygon([(40, 0), (45, 0), (50, 0), (50, 10), (40, 10)])

    def step(g):
        if isinstance(g, np.ndarray):
            raise shapely.errors.GEOSException("one bad ring")  # the batch fails: per polygon
        if g.equals(good):
            return shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # a bow-tie: invalid
        if g.equals(shrink):
            return shapely.Polygon([(40, 0), (50, 0), (50, 10)])  # half the area
        return shapely.remove_repeated_points(shapely.simplify(g, 0.01), 0.01)

    out = _safe_step(np.array([good, other, shrink], dtype=object), step, rel_area=1e-3, abs_area_m2=1e-4)
    assert out[0].equals_exact(good, 0) and out[2].equals_exact(shrink, 0)  # kept as they were
    assert shapely.get_num_coordinates(out[1]) == 5 and out[1].area == pytest.approx(100.0)  # simplified


# ---- the build fails loudly; summary.json records the areas -------------------------------------


def test_check_flat_layer_names_layer_areas_and_step() -> None:
    check_flat_layer(FlatLayerArea("road", 1000.0, 999.0, 995.0), "x")  # 99.5 %: fine
    with pytest.raises(FlatLayerAreaError, match=r"'road'.*4,056 m² of the 320,738 m² union.*lost in cleaning"):
        check_flat_layer(FlatLayerArea("road", 320_738.0, 4_056.0, 4_056.0), "helsinki")
    with pytest.raises(FlatLayerAreaError, match=r"'green'.*lost in triangulation"):
        check_flat_layer(FlatLayerArea("green", 1000.0, 1000.0, 900.0), "x")
    check_flat_layer(FlatLayerArea("water", 0.0, 0.0, 0.0), "x")  # an empty layer is fine


def test_build_fails_instead_of_writing_a_model_without_roads(tmp_path: Path, sample_city, monkeypatch) -> None:
    real = builder_mod.clean_polygons

    def lossy(geoms, **kw):  # what the old cleaning did to Helsinki: keep the smallest piece only
        polys, idx = real(geoms, **kw)
        if len(polys) < 2:
            return polys, idx
        k = int(np.argmin(shapely.area(polys)))
        return polys[k : k + 1], idx[k : k + 1]

    monkeypatch.setattr(builder_mod, "clean_polygons", lossy)
    out = tmp_path / "out"
    with pytest.raises(FlatLayerAreaError, match=r"city 'sample', layer 'road': the mesh covers [\d,]+ m² of the [\d,]+ m²"):
        build_or_load_city_model(sample_city, out)
    assert not (out / "city_model.npz").exists() and not (out / "summary.json").exists()


def test_summary_json_records_layer_areas(tmp_path: Path, sample_city) -> None:
    path = build_or_load_city_model(sample_city, tmp_path)
    summary = json.loads(path.with_name("summary.json").read_text())
    model = CityModel.load(path)
    assert summary["clip_area_m2"] > 0
    for layer in LAYERS:
        a = summary["flat_layers"][layer]
        assert set(a) >= {"union_area_m2", "clean_area_m2", "mesh_area_m2", "mesh_ratio", "triangulation_fallbacks"}
        assert a["mesh_area_m2"] == pytest.approx(model.meshes[layer].area_xy_m2(), abs=1e-3)
    assert summary["flat_layers"]["road"]["mesh_area_m2"] > 25_000


# ---- road-share sanity check ---------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["sample_model", "helsinki_model", "liechtenstein_model"])
def test_real_extracts_have_a_plausible_road_share(fixture: str, request) -> None:
    meta = request.getfixturevalue(fixture).meta
    share = meta["flat_layers"]["road"]["mesh_area_m2"] / meta["clip_area_m2"]
    assert share >= 2 * ROAD_SHARE_MIN, share  # the threshold keeps a margin below every real extract
    assert road_share_warning(meta) is None and meta["warnings"] == []


def test_road_share_warning_flags_a_city_without_streets(helsinki_model: CityModel) -> None:
    meta = json.loads(json.dumps(helsinki_model.meta))
    meta["flat_layers"]["road"]["mesh_area_m2"] = 4_056.0  # the issue-17 model
    w = road_share_warning(meta)
    assert w is not None and "helsinki" in w and "4,056 m²" in w and "0.14 %" in w
    assert road_share_warning({"city": "old"}) is None  # models without recorded areas: nothing to say
