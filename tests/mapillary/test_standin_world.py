"""The true world of the realistic stand-in content differs from the OSM model as configured."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, box

from s2r_data.citymodel import CityModel, Mesh
from s2r_data.mapillary.standin_world import (
    BuildingChange,
    Occluder,
    StreetWay,
    WorldConfig,
    apply_building_changes,
    draw_building_changes,
    occluder_footprint,
    occluder_meshes,
    place_occluders,
    true_city_model,
)
from s2r_data.osm.buildings import building_solids
from s2r_data.photo_extras import PHOTO_EXTRA_KEYS, load_photo_extras, photo_extras_path, save_photo_extras


def _solids(polys, height_m: float = 30.0):
    geoms = np.array(polys, dtype=object)
    tags = [{"building": "yes", "height": str(height_m)} for _ in polys]
    return building_solids(geoms, tags, [f"w{i}" for i in range(len(polys))], level_height_m=3.0)


@pytest.fixture(scope="module")
def many():
    """400 separate 10 × 10 m buildings, 30 m tall (no clamping of lowered roofs)."""
    return _solids([box(30 * i, 30 * j, 30 * i + 10, 30 * j + 10) for i in range(20) for j in range(20)])


def test_offsets_rotations_and_heights_follow_the_config(many):
    cfg = WorldConfig()
    ch = draw_building_changes(many, cfg, np.random.default_rng(0))
    assert sorted(ch) == sorted(many.solid_ids)
    dx = np.array([c.dx_m for c in ch.values()])
    dy = np.array([c.dy_m for c in ch.values()])
    assert dx.std() == pytest.approx(cfg.offset_sigma_m, rel=0.1) and dy.std() == pytest.approx(cfg.offset_sigma_m, rel=0.1)
    rot = np.array([c.rotation_deg for c in ch.values()])
    assert rot.std() == pytest.approx(cfg.rotation_sigma_deg, rel=0.12)
    dh = np.array([c.top_change_m for c in ch.values()])
    big = np.abs(dh) >= cfg.height_outlier_m[0]
    assert big.mean() == pytest.approx(cfg.p_height_outlier, abs=0.04)  # outliers (+ a few 3σ normals)
    assert dh[~big].std() == pytest.approx(cfg.height_sigma_m, rel=0.12)
    assert np.abs(dh).max() <= cfg.height_outlier_m[1] + 1e-9 and (dh[big] > 0).mean() == pytest.approx(0.5, abs=0.2)
    assert len({c.group for c in ch.values()}) == 400  # none touches another

    true, applied = apply_building_changes(many, ch)
    c0, c1 = shapely.centroid(many.polygons), shapely.centroid(true.polygons)
    for k, sid in enumerate(many.solid_ids):  # an isolated building turns about its own centroid
        i = int(np.flatnonzero(many.solid == k)[0])
        assert shapely.get_x(c1[i]) - shapely.get_x(c0[i]) == pytest.approx(ch[sid].dx_m, abs=1e-6)
        assert shapely.get_y(c1[i]) - shapely.get_y(c0[i]) == pytest.approx(ch[sid].dy_m, abs=1e-6)
        assert true.top_m[i] - many.top_m[i] == pytest.approx(applied[sid]) == pytest.approx(ch[sid].top_change_m)
        assert shapely.area(true.polygons[i]) == pytest.approx(shapely.area(many.polygons[i]))


def test_touching_buildings_share_part_of_the_offset_and_the_rotation():
    s = _solids([box(0, 0, 10, 10), box(10, 0, 20, 10), box(100, 100, 110, 110)], height_m=6.0)
    cfg = WorldConfig(offset_shared_fraction=1.0, height_sigma_m=10.0, p_height_outlier=0.0)
    ch = draw_building_changes(s, cfg, np.random.default_rng(3))
    a, b, c = (ch[k] for k in s.solid_ids)
    assert a.group == b.group != c.group
    assert (a.dx_m, a.dy_m, a.rotation_deg, a.pivot_xy_m) == (b.dx_m, b.dy_m, b.rotation_deg, b.pivot_xy_m)
    assert a.pivot_xy_m == pytest.approx((10.0, 5.0))
    true, applied = apply_building_changes(s, ch, min_building_height_m=3.0)
    assert np.all(true.top_m - true.base_m >= 3.0 - 1e-9)  # lowered roofs stay above the base
    assert all(applied[k] >= -3.0 - 1e-9 for k in s.solid_ids)
    assert BuildingChange.from_dict(a.to_dict()) == a


def test_true_city_model_replaces_buildings_only(many):
    flat = Mesh(np.array([[0, 0, 0.02], [5, 0, 0.02], [5, 5, 0.02]]), np.array([[0, 1, 2]]))
    osm = CityModel({"road": flat}, shapely.to_wkb(many.footprint_union()), {"city": "t", "cache_key": "abc"})
    ch = draw_building_changes(many, WorldConfig(), np.random.default_rng(1))
    true, _ = apply_building_changes(many, ch)
    occ = [Occluder("tree00001", "tree", 0, 0, 0, {"trunk_radius_m": 0.2, "trunk_height_m": 3, "crown_radius_m": 2, "crown_height_m": 2})]
    m = true_city_model(osm, true, occ)
    assert np.array_equal(m.meshes["road"].vertices_local_m, flat.vertices_local_m)
    assert len(m.meshes["wall"].triangles) == 400 * 8 and len(m.meshes["roof"].triangles) == 400 * 2
    assert m.meta["standin"]["occluders"] == {"tree": 1} and "cache_key" not in m.meta
    moved = m.footprints().symmetric_difference(osm.footprints()).area
    assert moved > 0.1 * osm.footprints().area  # offsets of ~1 m on 10 m buildings


def _street_scene():
    street = StreetWay("w1", LineString([(0, 0), (200, 0)]), 10.0, "residential")
    houses = shapely.union_all([box(x, 9, x + 18, 20) for x in range(0, 200, 20)] + [box(x, -20, x + 18, -9) for x in range(0, 200, 20)])
    cams = np.array([[x, -2.0] for x in np.arange(20, 180, 3.0)])  # right lane of an eastbound car
    return street, houses, cams


def test_occluders_stand_where_they_belong():
    street, houses, cams = _street_scene()
    cfg = WorldConfig(p_tree_row=1.0, p_parking=1.0, p_light_side=1.0, people_per_100m=6.0)
    occ = place_occluders([street], houses, cams, cfg, np.random.default_rng(0))
    kinds = {o.kind for o in occ}
    assert {"tree", "pole", "person"} <= kinds and kinds & {"vehicle", "van"}
    assert len({o.id for o in occ}) == len(occ)
    carriageway = street.line.buffer(5.0)
    lanes = street.line.buffer(5.0 - 2.2)
    cam_pts = shapely.points(cams)
    for o in occ:
        reach, base = occluder_footprint(o), occluder_footprint(o, crown=False)
        assert not reach.intersects(houses), o
        assert shapely.distance(reach, cam_pts).min() >= cfg.camera_clearance_m - 1e-9, o
        if o.kind in ("vehicle", "van"):
            assert carriageway.buffer(0.5).contains(base) and not lanes.intersects(base), o  # parking lane
        else:
            assert not carriageway.intersects(base), o  # sidewalk
    bases = [occluder_footprint(o, crown=False) for o in occ]
    for i, a in enumerate(bases):
        assert not any(a.intersects(b) for b in bases[i + 1 :])
    again = place_occluders([street], houses, cams, cfg, np.random.default_rng(0))
    assert again == occ and place_occluders([street], houses, cams, cfg, np.random.default_rng(1)) != occ
    assert all(Occluder.from_dict(o.to_dict()) == o for o in occ)


def test_no_occluders_far_from_the_cameras():
    street, houses, cams = _street_scene()
    far = StreetWay("w2", LineString([(0, 500), (200, 500)]), 10.0)
    occ = place_occluders([street, far], houses, cams, WorldConfig(p_tree_row=1.0), np.random.default_rng(0))
    assert occ and all(o.street == "w1" for o in occ)


def _closed_and_outward(m: Mesh) -> tuple[int, float]:
    """(directed edges without exactly one reverse, signed volume)."""
    t = m.triangles.astype(np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    fwd = {tuple(x) for x in e.tolist()}
    bad = sum((b, a) not in fwd for a, b in e.tolist()) + (len(e) - len(fwd))
    v = m.vertices_local_m.astype(np.float64)
    vol = float(np.einsum("ij,ij->i", v[t[:, 0]], np.cross(v[t[:, 1]], v[t[:, 2]])).sum() / 6)
    return bad, vol


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["tree", "vehicle", "van", "pole", "person"]), x=st.floats(-500, 500), y=st.floats(-500, 500),
       heading=st.floats(0, 360))
def test_occluder_meshes_are_closed_solids_with_outward_normals(kind, x, y, heading):
    size = {"tree": {"trunk_radius_m": 0.15, "trunk_height_m": 3.0, "crown_radius_m": 2.0, "crown_height_m": 2.4},
            "pole": {"radius_m": 0.08, "height_m": 6.0}}.get(kind, {"length_m": 4.2, "width_m": 1.8, "height_m": 1.5})
    meshes = occluder_meshes([Occluder("o1", kind, x, y, heading, size)])
    assert set(meshes) <= set(PHOTO_EXTRA_KEYS) and meshes
    for key, m in meshes.items():
        bad, vol = _closed_and_outward(m)  # (a pole is two closed parts: still closed edge-wise)
        assert bad == 0 and vol > 0, key
    top = max(float(m.vertices_local_m[:, 2].max()) for m in meshes.values())
    assert top == pytest.approx(size.get("height_m", 3.0 + 0.7 * 2.4 + 2.4) + (0.2 if kind == "pole" else 0.0), abs=1e-4)


def test_photo_extras_roundtrip_and_unknown_keys(tmp_path):
    model = tmp_path / "city_model.npz"
    assert load_photo_extras(model) == {}
    occ = [Occluder("p1", "person", 1, 2, 30, {"length_m": 0.5, "width_m": 0.3, "height_m": 1.8})]
    path = save_photo_extras(model, occluder_meshes(occ))
    assert path == photo_extras_path(model) == tmp_path / "city_model.photo_extras.npz"
    back = load_photo_extras(model)
    assert list(back) == ["person"] and len(back["person"].triangles) == 12
    with pytest.raises(ValueError, match="unknown photo extra keys"):
        save_photo_extras(model, {"spaceship": back["person"]})


def test_blender_photo_look_has_every_extra_key():
    from blender_scripts.photo_look import _EXTRA_LOOKS  # imports bpy lazily: fine without Blender

    assert sorted(_EXTRA_LOOKS) == sorted(PHOTO_EXTRA_KEYS)
