"""Prism/flat meshes from polygons (s2r_data.osm.mesh): closed, outward-facing, exact areas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.osm.mesh import (
    clean_polygons,
    closed_surface_defects,
    extrude_polygons,
    flat_polygons,
    ring_layout,
)


def _star(cx: float, cy: float, radii: list[float], phase: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (cx + r * math.cos(phase + 2 * math.pi * i / n), cy + r * math.sin(phase + 2 * math.pi * i / n))
        for i, r in enumerate(radii)
    ]


@st.composite
def building_polygons(draw):
    """Star-shaped simple polygons (some CW, some with a hole, some multipart) plus base/top."""
    n = draw(st.integers(1, 4))
    geoms, bases, tops = [], [], []
    for k in range(n):
        radii = draw(st.lists(st.floats(5.0, 30.0), min_size=3, max_size=12))
        phase = draw(st.floats(0, 2 * math.pi))
        cy = draw(st.floats(-50, 50))
        shell = _star(100.0 * k, cy, radii, phase)
        if draw(st.booleans()):
            shell = shell[::-1]  # clockwise input must be re-oriented
        holes = []
        if draw(st.booleans()) and len(radii) >= 3:
            hole_r = min(radii) * 0.3
            holes.append(_star(100.0 * k, cy, [hole_r] * 5, 0.0))  # inside: the star contains its centre disc
        poly = shapely.Polygon(shell, holes)
        if not poly.is_valid or poly.area < 1.0:
            poly = shapely.Polygon(_star(100.0 * k, 0.0, [10.0] * 4, 0.3))
        geoms.append(poly)
        base = draw(st.sampled_from([0.0, 0.0, 3.0, 10.5]))
        bases.append(base)
        tops.append(base + draw(st.floats(1.0, 120.0)))
    return np.array(geoms, dtype=object), np.array(bases), np.array(tops)


def _wall_side_checks(polys: np.ndarray, ext, eps_m: float = 5e-3) -> tuple[int, int]:
    """(# side walls whose outward probe is inside their own polygon, # whose inward probe is outside)."""
    lay = ring_layout(polys)
    P = len(lay.xy)
    t = ext.walls.triangles[: 2 * P : 2]  # first triangle of each edge quad: (k, nxt, P + nxt)
    v = ext.walls.vertices_local_m.astype(np.float64)
    n = ext.walls.face_normals()[: 2 * P : 2]
    a, b = v[t[:, 0], :2], v[t[:, 1], :2]
    long_enough = np.linalg.norm(b - a, axis=1) > 0.05
    mid = (a + b) / 2
    owner = polys[lay.vertex_poly[t[:, 0]]]
    out_pt = mid + n[:, :2] * eps_m
    in_pt = mid - n[:, :2] * eps_m
    bad_out = shapely.contains_xy(owner, out_pt[:, 0], out_pt[:, 1]) & long_enough
    bad_in = ~shapely.contains_xy(owner, in_pt[:, 0], in_pt[:, 1]) & long_enough
    return int(bad_out.sum()), int(bad_in.sum())


@settings(max_examples=60, deadline=None)
@given(building_polygons())
def test_extrusion_is_closed_outward_and_exact(data) -> None:
    geoms, base, top = data
    polys, src = clean_polygons(geoms)
    ext = extrude_polygons(polys, base[src], top[src])
    walls, roofs = ext.walls, ext.roofs
    assert ext.earcut_fallbacks == 0
    for m in (walls, roofs):
        assert np.isfinite(m.vertices_local_m).all()
        assert (m.triangles >= 0).all() and (m.triangles < len(m.vertices_local_m)).all()
    # roof vertices are exactly the wall tops (shared positions → no cracks)
    P = len(roofs.vertices_local_m)
    assert np.array_equal(walls.vertices_local_m[P:], roofs.vertices_local_m)
    assert closed_surface_defects(walls, roofs) == 0
    # roofs face up and cover exactly the footprint; side walls are vertical with area perimeter × height
    rn = roofs.face_normals()
    rv = roofs.vertices_local_m.astype(np.float64)
    tri_area = 0.5 * np.linalg.norm(np.cross(rv[roofs.triangles[:, 1]] - rv[roofs.triangles[:, 0]],
                                             rv[roofs.triangles[:, 2]] - rv[roofs.triangles[:, 0]]), axis=1)
    assert (rn[tri_area > 1e-6, 2] > 0.999).all()
    assert tri_area.sum() == pytest.approx(shapely.area(polys).sum(), rel=1e-4)
    wn = walls.face_normals()[: 2 * P]
    assert np.abs(wn[:, 2]).max() < 1e-3
    wv = walls.vertices_local_m.astype(np.float64)
    wt = walls.triangles[: 2 * P]
    wall_area = 0.5 * np.linalg.norm(np.cross(wv[wt[:, 1]] - wv[wt[:, 0]], wv[wt[:, 2]] - wv[wt[:, 0]]), axis=1).sum()
    expected = (shapely.length(polys) * (top[src] - base[src])).sum()
    assert wall_area == pytest.approx(expected, rel=1e-4)
    # undersides only for raised solids, facing down
    under = walls.triangles[2 * P :]
    raised = walls.vertices_local_m[:P, 2][roofs.triangles[:, 0]] > 0
    assert len(under) == int(raised.sum())
    under_n = walls.face_normals()[2 * P :]
    assert (under_n[tri_area[raised] > 1e-6, 2] < -0.999).all()
    assert _wall_side_checks(polys, ext) == (0, 0)


def test_square_with_hole_by_hand() -> None:
    sq = shapely.Polygon([(0, 0), (0, 10), (10, 10), (10, 0)], [[(4, 4), (6, 4), (6, 6), (4, 6)]])  # CW shell, CCW hole
    polys, src = clean_polygons(np.array([sq], dtype=object))
    ext = extrude_polygons(polys, np.array([0.0]), np.array([12.0]))
    assert len(ext.walls.vertices_local_m) == 2 * 8
    assert len(ext.walls.triangles) == 2 * 8  # no underside: base 0
    assert len(ext.roofs.triangles) == 8  # n + 2 holes − 2
    assert closed_surface_defects(ext.walls, ext.roofs) == 0
    n = ext.walls.face_normals()
    c = ext.walls.vertices_local_m[ext.walls.triangles].mean(1)
    outer = (np.abs(c[:, 0] - 5) > 4.9) | (np.abs(c[:, 1] - 5) > 4.9)
    # outer walls face away from the centre, hole walls face the centre (into the courtyard)
    radial = (c[:, :2] - 5) / np.linalg.norm(c[:, :2] - 5, axis=1, keepdims=True)
    dots = (n[:, :2] * radial).sum(1)
    assert (dots[outer] > 0).all() and (dots[~outer] < 0).all()


def test_clean_polygons_fixes_bowtie_and_drops_slivers() -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    tiny = shapely.box(0, 0, 0.05, 0.05)
    multi = shapely.MultiPolygon([shapely.box(20, 0, 25, 5), shapely.box(30, 0, 35, 5)])
    polys, src = clean_polygons(np.array([bowtie, tiny, multi], dtype=object))
    assert all(p.is_valid for p in polys)
    assert list(src) == [0, 0, 2, 2]
    assert all(p.exterior.is_ccw for p in polys)


def test_flat_polygons_face_up_at_height() -> None:
    polys, _ = clean_polygons(np.array([shapely.box(0, 0, 3, 2).buffer(1.0, quad_segs=2)], dtype=object))
    mesh, fb = flat_polygons(polys, 0.02)
    assert fb == 0
    assert np.all(mesh.vertices_local_m[:, 2] == np.float32(0.02))
    assert (mesh.face_normals()[:, 2] > 0.999).all()


def test_closed_surface_defects_detects_a_missing_triangle() -> None:
    polys, _ = clean_polygons(np.array([shapely.box(0, 0, 4, 3)], dtype=object))
    ext = extrude_polygons(polys, np.array([0.0]), np.array([5.0]))
    ext.walls.triangles = ext.walls.triangles[1:]
    assert closed_surface_defects(ext.walls, ext.roofs) > 0
