"""Polygons in ``local_m`` → triangle meshes (pure numpy/shapely; vectorised over all polygons).

* :func:`extrude_polygons`: prisms. Walls are two triangles per ring edge between the base and
  the top; the polygons are oriented first (exterior counter-clockwise, holes clockwise, seen
  from above), which makes every wall triangle face outward (away from the solid). Roofs are the
  polygon triangulated by earcut at the top, facing up; solids whose base is above the ground
  also get their underside (facing down) in the wall mesh. Walls and roof share vertex
  positions exactly, so wall + roof (+ the implicit floor for solids standing on the ground) is
  a closed, consistently oriented surface.
* :func:`flat_polygons`: polygons triangulated flat at a given height, facing up.
* :func:`clean_polygons` (their input): valid, oriented single Polygons without repeated or
  nearly collinear vertices, each step validated per polygon so that no polygon loses its area
  (a large unioned road layer with thousands of holes included).

All rings of all polygons are handled as one coordinate array; only the earcut call runs once
per polygon (its output is collected and concatenated once).
"""

from __future__ import annotations

from dataclasses import dataclass

import mapbox_earcut
import numpy as np
import shapely

from ..citymodel import Mesh

__all__ = [
    "RingLayout",
    "ring_layout",
    "polygon_parts",
    "repair_polygonal",
    "clean_polygons",
    "triangulate",
    "Extrusion",
    "extrude_polygons",
    "flat_polygons",
    "closed_surface_defects",
]


def polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty Polygons inside each geometry (Multi* and GeometryCollections flattened at any
    depth; points and lines dropped). Returns ``(polygons, source_index)``."""
    parts, idx = shapely.get_parts(np.asarray(geoms, dtype=object), return_index=True)
    while True:
        multi = shapely.get_type_id(parts) >= 4  # Multi* or GeometryCollection (from make_valid)
        if not multi.any():
            break
        sub, sub_idx = shapely.get_parts(parts[multi], return_index=True)
        parts = np.concatenate([parts[~multi], sub])
        idx = np.concatenate([idx[~multi], idx[multi][sub_idx]])
    keep = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    order = np.argsort(idx[keep], kind="stable")
    return parts[keep][order], idx[keep][order].astype(np.int64)


def repair_polygonal(geoms: np.ndarray) -> np.ndarray:
    """Invalid geometries replaced by ``shapely.make_valid`` of them (valid ones untouched); the
    result may hold lines or points beside the polygons (:func:`polygon_parts` drops them)."""
    geoms = np.asarray(geoms, dtype=object).copy()
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def _fill_small_holes(polys: np.ndarray, min_area_m2: float) -> np.ndarray:
    """Valid Polygons without their holes smaller than ``min_area_m2`` (still valid: removing a
    hole cannot make a valid polygon invalid)."""
    if not (shapely.get_num_interior_rings(polys) > 0).any():
        return polys
    rings, ring_poly = shapely.get_rings(polys, return_index=True)  # per polygon: exterior, then holes
    is_shell = np.r_[True, ring_poly[1:] != ring_poly[:-1]]
    keep = is_shell | (shapely.area(shapely.polygons(rings)) >= min_area_m2)
    if keep.all():
        return polys
    return shapely.polygons(rings[keep], indices=ring_poly[keep])


def _safe_step(polys: np.ndarray, step, *, rel_area: float, abs_area_m2: float) -> np.ndarray:
    """``step(polys)`` per polygon where the result is a valid Polygon whose area is within
    ``rel_area`` × area + ``abs_area_m2`` of the input's, else the input polygon (validate after
    every step; a GEOS error on one polygon, such as a ring collapsing to two points, keeps that
    polygon as it was)."""
    try:
        after = step(polys)
    except shapely.errors.GEOSException:
        after = np.empty(len(polys), dtype=object)
        for i, p in enumerate(polys):
            try:
                after[i] = step(p)
            except shapely.errors.GEOSException:
                after[i] = p
    # the steps only drop vertices: the same vertex count means the same polygon (nothing to check)
    changed = shapely.get_num_coordinates(after) != shapely.get_num_coordinates(polys)
    a0, a1 = shapely.area(polys[changed]), shapely.area(after[changed])
    ok = np.ones(len(polys), dtype=bool)
    ok[changed] = (shapely.get_type_id(after[changed]) == 3) & shapely.is_valid(after[changed]) & (
        np.abs(a1 - a0) <= rel_area * a0 + abs_area_m2
    )
    return np.where(ok, after, polys)


def clean_polygons(
    geoms: np.ndarray, *, min_area_m2: float = 0.01, tolerance_m: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(Multi)polygons → oriented, valid single Polygons without repeated or nearly collinear points.

    Returns ``(polygons, source_index)``: one row per polygon piece, with the index of the input
    geometry it came from. Steps, each checked per polygon so one bad piece cannot cost another
    its area:

    1. invalid inputs repaired (``make_valid``) and split into single Polygons (lines dropped);
    2. pieces smaller than ``min_area_m2`` dropped, and holes smaller than that filled (a
       repeated-point pass would collapse them into invalid rings);
    3. repeated points within ``tolerance_m`` removed, then nearly collinear vertices simplified
       away (``tolerance_m``, topology preserving): each only where the polygon stays a valid
       Polygon with (almost) its area, else the polygon of the previous step is kept;
    4. exteriors counter-clockwise, holes clockwise.
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    parts, idx = polygon_parts(repair_polygonal(geoms))
    keep = shapely.area(parts) >= min_area_m2
    parts, idx = _fill_small_holes(parts[keep], min_area_m2), idx[keep]
    # 1 cm: drops repeated and nearly collinear vertices (the source of float32-degenerate slivers)
    safe = dict(rel_area=1e-3, abs_area_m2=tolerance_m**2)
    parts = _safe_step(parts, lambda g: shapely.remove_repeated_points(g, tolerance=tolerance_m), **safe)
    parts = _safe_step(parts, lambda g: shapely.simplify(g, tolerance_m, preserve_topology=True), **safe)
    parts = shapely.orient_polygons(parts, exterior_cw=False)
    return parts, idx


@dataclass(frozen=True)
class RingLayout:
    """All rings of ``n`` polygons as one coordinate array (closing points dropped)."""

    xy: np.ndarray  # float64 (P, 2)
    ring_start: np.ndarray  # (R,) first vertex of each ring
    ring_len: np.ndarray  # (R,)
    ring_poly: np.ndarray  # (R,) polygon of each ring
    poly_vertex_start: np.ndarray  # (n + 1,) vertex range of each polygon
    poly_ring_start: np.ndarray  # (n + 1,) ring range of each polygon

    @property
    def vertex_poly(self) -> np.ndarray:
        return np.repeat(self.ring_poly, self.ring_len)

    def next_in_ring(self) -> np.ndarray:
        k = np.arange(len(self.xy))
        nxt = k + 1
        nxt[self.ring_start + self.ring_len - 1] = self.ring_start
        return nxt


def ring_layout(polys: np.ndarray) -> RingLayout:
    n = len(polys)
    rings, ring_poly = shapely.get_rings(polys, return_index=True)  # exterior, then holes
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    n_with_closing = np.bincount(coord_ring, minlength=len(rings))
    keep = np.ones(len(coords), dtype=bool)
    keep[np.cumsum(n_with_closing) - 1] = False
    ring_len = n_with_closing - 1
    ring_start = np.concatenate([[0], np.cumsum(ring_len)[:-1]]).astype(np.int64)
    rings_per_poly = np.bincount(ring_poly, minlength=n)
    verts_per_poly = np.bincount(ring_poly, weights=ring_len, minlength=n).astype(np.int64)
    return RingLayout(
        xy=coords[keep],
        ring_start=ring_start,
        ring_len=ring_len.astype(np.int64),
        ring_poly=ring_poly.astype(np.int64),
        poly_vertex_start=np.concatenate([[0], np.cumsum(verts_per_poly)]),
        poly_ring_start=np.concatenate([[0], np.cumsum(rings_per_poly)]),
    )


def _delaunay_fallback(poly: shapely.Polygon, xy: np.ndarray) -> np.ndarray:
    """Triangles of ``poly`` as indices into ``xy`` (its own vertices) via GEOS constrained Delaunay."""
    tris = shapely.get_parts(shapely.constrained_delaunay_triangles(poly))
    lookup = {(float(x), float(y)): i for i, (x, y) in enumerate(xy)}
    out = []
    for t in tris:
        c = shapely.get_coordinates(t)[:3]
        try:
            out.append([lookup[(float(x), float(y))] for x, y in c])
        except KeyError:  # GEOS added a vertex: cannot share it with the walls
            continue
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def triangulate(polys: np.ndarray, layout: RingLayout) -> tuple[np.ndarray, int]:
    """Earcut every polygon; triangles index ``layout.xy`` and are CCW seen from above.

    Returns ``(triangles (M, 3) int64, n_fallbacks)`` where fallbacks are polygons earcut could not
    fully triangulate (self-touching rings etc.), done by constrained Delaunay instead.
    """
    xy, vs, rs = layout.xy, layout.poly_vertex_start, layout.poly_ring_start
    ends_all = layout.ring_start + layout.ring_len
    chunks: list[np.ndarray] = []
    fallbacks = 0
    for i in range(len(polys)):
        s, e = vs[i], vs[i + 1]
        r0, r1 = rs[i], rs[i + 1]
        ends = (ends_all[r0:r1] - s).astype(np.uint32)
        tri = mapbox_earcut.triangulate_float64(xy[s:e], ends).astype(np.int64).reshape(-1, 3)
        expected = (e - s) + 2 * (r1 - r0 - 1) - 2
        if len(tri) != expected:
            tri = _delaunay_fallback(polys[i], xy[s:e])
            fallbacks += 1
        chunks.append(tri + s)
    if not chunks:
        return np.zeros((0, 3), np.int64), 0
    tris = np.concatenate(chunks)
    # orient each polygon's triangles CCW (from above): flip polygons whose total signed area < 0
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri_poly = layout.vertex_poly[tris[:, 0]]
    flip = np.bincount(tri_poly, weights=area2, minlength=len(polys)) < 0
    sel = flip[tri_poly]
    tris[sel] = tris[sel][:, ::-1]
    return tris, fallbacks


@dataclass
class Extrusion:
    """Vertex layout (a contract the tests rely on): ``walls.vertices_local_m`` is the bottom of
    every ring vertex (P rows) followed by the top of the same vertices (P rows);
    ``roofs.vertices_local_m`` is exactly that top block. Wall triangles: the sides (2 per ring
    edge), then the undersides of solids with base > 0."""

    walls: Mesh  # side walls + undersides of raised solids
    roofs: Mesh
    earcut_fallbacks: int


def extrude_polygons(polys: np.ndarray, base_m: np.ndarray, top_m: np.ndarray) -> Extrusion:
    """Prisms from oriented polygons (see :func:`clean_polygons`) between ``base_m`` and ``top_m``."""
    polys = np.asarray(polys, dtype=object)
    if len(polys) == 0:
        return Extrusion(Mesh.empty(), Mesh.empty(), 0)
    base_m = np.asarray(base_m, dtype=np.float64)
    top_m = np.asarray(top_m, dtype=np.float64)
    lay = ring_layout(polys)
    P = len(lay.xy)
    vpoly = lay.vertex_poly
    bottom = np.column_stack([lay.xy, base_m[vpoly]])
    top = np.column_stack([lay.xy, top_m[vpoly]])
    k = np.arange(P, dtype=np.int64)
    nxt = lay.next_in_ring()
    side = np.empty((2 * P, 3), dtype=np.int64)
    side[0::2] = np.column_stack([k, nxt, P + nxt])
    side[1::2] = np.column_stack([k, P + nxt, P + k])

    roof_tris, fallbacks = triangulate(polys, lay)
    raised = base_m[vpoly[roof_tris[:, 0]]] > 0 if len(roof_tris) else np.zeros(0, bool)
    underside = roof_tris[raised][:, ::-1]  # bottom vertices 0..P-1, facing down
    walls = Mesh(np.concatenate([bottom, top]), np.concatenate([side, underside]))
    roofs = Mesh(top, roof_tris)
    return Extrusion(walls, roofs, fallbacks)


def flat_polygons(polys: np.ndarray, z_m: float) -> tuple[Mesh, int]:
    """Oriented polygons triangulated flat at ``z_m``, facing up. Returns ``(mesh, n_fallbacks)``."""
    polys = np.asarray(polys, dtype=object)
    if len(polys) == 0:
        return Mesh.empty(), 0
    lay = ring_layout(polys)
    tris, fallbacks = triangulate(polys, lay)
    # drop slivers that are degenerate once stored as float32 (zero area, arbitrary facing);
    # flat layers need no closedness, so nothing visible is lost
    xy32 = lay.xy.astype(np.float32).astype(np.float64)
    a, b, c = xy32[tris[:, 0]], xy32[tris[:, 1]], xy32[tris[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    verts = np.column_stack([lay.xy, np.full(len(lay.xy), z_m)])
    return Mesh(verts, tris[area2 > 0]), fallbacks


def closed_surface_defects(walls: Mesh, roofs: Mesh) -> int:
    """Number of directed edges that break closedness of walls + roofs + implied floors.

    The solid of every building is walls + roof + (for bases at z = 0, which the ground closes)
    a floor = the roof triangles reversed at the base. It is closed and consistently oriented iff
    every directed edge occurs exactly once and its reverse exactly once: the result is then 0.
    Uses the vertex layout of :class:`Extrusion` (roof vertex k is wall vertex P + k).
    """
    P = len(roofs.vertices_local_m)
    if len(walls.vertices_local_m) != 2 * P:
        raise ValueError(f"walls have {len(walls.vertices_local_m)} vertices, expected 2 × {P} (Extrusion layout)")
    if P == 0:
        return 0
    bottom_z = walls.vertices_local_m[:P, 2]
    floor = roofs.triangles[bottom_z[roofs.triangles[:, 0]] == 0][:, ::-1]
    tris = np.concatenate([walls.triangles, roofs.triangles + P, floor]).astype(np.int64)
    a = tris.ravel()
    b = tris[:, [1, 2, 0]].ravel()
    key, rkey = a * (2 * P) + b, b * (2 * P) + a
    uniq, counts = np.unique(key, return_counts=True)
    dup = int((counts != 1).sum())
    missing_reverse = int((~np.isin(rkey, uniq)).sum())
    return dup + missing_reverse
