"""The **true world** of the realistic stand-in content: the OSM city model as it "really" is.

Stand-in data generation only (never imported by the pipeline). Real OSM footprints sit metres
off and their heights are guesses, and streets hold trees, parked vehicles, poles and people that
OSM does not model (``../shared/notes/alignment.md``). The true world is the OSM model with:

* **per-building changes** (:class:`BuildingChange`, keyed by the building solid's OSM id):
  a horizontal offset (σ = ``offset_sigma_m`` per axis; ``offset_shared_fraction`` of the
  variance is shared by touching buildings, which were traced together), a small rotation per
  group of touching buildings about its centroid, and a change of the roof height (σ =
  ``height_sigma_m``, a fraction ``p_height_outlier`` of buildings off by much more);
* **occluders** (:class:`Occluder`) along the streets, in ``local_m``: rows of trees (trunk +
  crown) at the kerb, parked vehicles in the outer lane, street-light poles, people on the
  sidewalks; clear of buildings, of the travel lanes (except parked vehicles) and of the cameras.

The flat layers (ground, roads, water, green) are the OSM model's. The occluders are photo-only
meshes (:mod:`s2r_data.photo_extras`): they appear in the stand-in photos, not in any label pass.
All randomness comes from the ``numpy.random.Generator`` passed in (seeded by the caller).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from ..citymodel import CityModel, Mesh
from ..osm.buildings import FOOTPRINT_MAX_BASE_M, BuildingSolids
from ..osm.mesh import extrude_polygons

__all__ = [
    "WorldConfig",
    "BuildingChange",
    "Occluder",
    "StreetWay",
    "tangent_heading_deg",
    "draw_building_changes",
    "apply_building_changes",
    "true_city_model",
    "place_occluders",
    "occluder_footprint",
    "occluder_meshes",
]


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """How the true world differs from the OSM model (lengths in metres, angles in degrees)."""

    offset_sigma_m: float = 1.0  # per building, per horizontal axis
    offset_shared_fraction: float = 0.5  # of the offset variance shared by a group of touching buildings
    rotation_sigma_deg: float = 1.0  # per group of touching buildings, about its centroid
    height_sigma_m: float = 3.0  # roof height change per building
    p_height_outlier: float = 0.1  # buildings whose height is much further off
    height_outlier_m: tuple[float, float] = (8.0, 20.0)  # |change| of those, uniform, either sign
    min_building_height_m: float = 3.0  # a lowered roof stays this far above the base
    # occluders along street sides (each side of each street way near a camera)
    p_tree_row: float = 0.5  # a side gets a row of trees
    tree_spacing_m: tuple[float, float] = (7.0, 11.0)
    p_parking: float = 0.6  # a side has a parking lane
    parking_slot_m: float = 6.0
    parking_occupancy: float = 0.6
    p_van: float = 0.15
    p_light_side: float = 0.7  # a side has street lights
    light_spacing_m: tuple[float, float] = (20.0, 30.0)
    people_per_100m: float = 2.0  # per side
    occluder_range_m: float = 120.0  # only along streets within this distance of a camera
    camera_clearance_m: float = 1.5  # occluder footprint (trees: crown) ↔ camera

    def __post_init__(self) -> None:
        for name in ("offset_sigma_m", "rotation_sigma_deg", "height_sigma_m", "min_building_height_m", "occluder_range_m",
                     "camera_clearance_m", "parking_slot_m", "people_per_100m"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r} must be >= 0")
        for name in ("offset_shared_fraction", "p_height_outlier", "p_tree_row", "p_parking", "parking_occupancy", "p_van", "p_light_side"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r} must be in [0, 1]")
        for name in ("height_outlier_m", "tree_spacing_m", "light_spacing_m"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r} must be (low, high) with 0 <= low <= high")
        if self.tree_spacing_m[0] <= 0 or self.light_spacing_m[0] <= 0 or self.parking_slot_m <= 0:
            raise ValueError("WorldConfig: spacings must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- buildings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildingChange:
    """How one building solid (OSM id) differs in the true world: rotated by ``rotation_deg``
    (counter-clockwise seen from above) about ``pivot_xy_m``, then moved by (``dx_m``, ``dy_m``);
    its roof moved by ``top_change_m`` (after clamping to ``min_building_height_m``)."""

    dx_m: float
    dy_m: float
    rotation_deg: float
    pivot_xy_m: tuple[float, float]
    top_change_m: float
    group: int  # index of the group of touching buildings (shared offset part and rotation)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pivot_xy_m": list(self.pivot_xy_m)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BuildingChange":
        return cls(float(d["dx_m"]), float(d["dy_m"]), float(d["rotation_deg"]), tuple(float(v) for v in d["pivot_xy_m"]),  # type: ignore[arg-type]
                   float(d["top_change_m"]), int(d["group"]))


def _touching_groups(polys: np.ndarray, solid_of_poly: np.ndarray, n_solids: int, gap_m: float = 0.5) -> np.ndarray:
    """Group index per solid: solids whose polygons come within ``gap_m`` share a group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_solids == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = shapely.STRtree(polys).query(polys, predicate="dwithin", distance=gap_m)
    sa, sb = solid_of_poly[a], solid_of_poly[b]
    graph = coo_matrix((np.ones(len(sa)), (sa, sb)), shape=(n_solids, n_solids))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def draw_building_changes(solids: BuildingSolids, config: WorldConfig, rng: np.random.Generator) -> dict[str, BuildingChange]:
    """One :class:`BuildingChange` per building solid, keyed by its OSM id (``solids.solid_ids``).

    Offsets: ``offset_sigma_m`` per axis, ``offset_shared_fraction`` of the variance from the
    group of touching solids, the rest per solid. Heights: normal(0, ``height_sigma_m``), or with
    probability ``p_height_outlier`` a change of uniform ``height_outlier_m`` magnitude."""
    n = len(solids.solid_ids)
    if n == 0:
        return {}
    polys, sop = solids.polygons, solids.solid
    groups = _touching_groups(polys, sop, n)
    n_groups = int(groups.max()) + 1
    s_shared = config.offset_sigma_m * math.sqrt(config.offset_shared_fraction)
    s_own = config.offset_sigma_m * math.sqrt(1.0 - config.offset_shared_fraction)
    shared = rng.normal(0.0, 1.0, size=(n_groups, 2)) * s_shared
    rot = rng.normal(0.0, 1.0, size=n_groups) * config.rotation_sigma_deg
    own = rng.normal(0.0, 1.0, size=(n, 2)) * s_own
    dh = rng.normal(0.0, 1.0, size=n) * config.height_sigma_m
    outlier = rng.random(n) < config.p_height_outlier
    mag = rng.uniform(*config.height_outlier_m, size=n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    dh = np.where(outlier, sign * mag, dh)
    # group pivots: centroid of the group's polygons
    cx, cy = shapely.get_x(shapely.centroid(polys)), shapely.get_y(shapely.centroid(polys))
    area = shapely.area(polys)
    g_of_poly = groups[sop]
    w = np.bincount(g_of_poly, weights=area, minlength=n_groups)
    px = np.bincount(g_of_poly, weights=area * cx, minlength=n_groups) / np.maximum(w, 1e-12)
    py = np.bincount(g_of_poly, weights=area * cy, minlength=n_groups) / np.maximum(w, 1e-12)
    out: dict[str, BuildingChange] = {}
    for i, sid in enumerate(solids.solid_ids):
        g = int(groups[i])
        out[sid] = BuildingChange(
            float(shared[g, 0] + own[i, 0]), float(shared[g, 1] + own[i, 1]), float(rot[g]),
            (float(px[g]), float(py[g])), float(dh[i]), g,
        )
    return out


def apply_building_changes(
    solids: BuildingSolids, changes: dict[str, BuildingChange], *, min_building_height_m: float = 3.0
) -> tuple[BuildingSolids, dict[str, float]]:
    """The true building solids and the applied roof change per id (after clamping the top to
    ``min_building_height_m`` above the base). Solids without a change stay as they are; raised
    solids (base above :data:`FOOTPRINT_MAX_BASE_M`: arcades, upper parts) move but keep their
    heights."""
    polys = np.array(solids.polygons, dtype=object, copy=True)
    base = np.asarray(solids.base_m, dtype=np.float64).copy()
    top = np.asarray(solids.top_m, dtype=np.float64).copy()
    applied: dict[str, float] = {}
    for i, sid in enumerate(solids.solid_ids):
        c = changes.get(sid)
        sel = np.flatnonzero(solids.solid == i)
        if c is None or len(sel) == 0:
            continue
        t = math.radians(c.rotation_deg)
        cos_t, sin_t = math.cos(t), math.sin(t)
        px, py = c.pivot_xy_m

        def move(xy: np.ndarray, cos_t=cos_t, sin_t=sin_t, px=px, py=py, c=c) -> np.ndarray:
            x, y = xy[:, 0] - px, xy[:, 1] - py
            return np.column_stack([px + cos_t * x - sin_t * y + c.dx_m, py + sin_t * x + cos_t * y + c.dy_m])

        polys[sel] = shapely.transform(polys[sel], move)
        if np.all(base[sel] <= FOOTPRINT_MAX_BASE_M):
            new_top = np.maximum(top[sel] + c.top_change_m, base[sel] + min_building_height_m)
            applied[sid] = float(np.max(new_top - top[sel]))
            top[sel] = new_top
        else:
            applied[sid] = 0.0
    true = BuildingSolids(polys, base, top, solids.solid, list(solids.solid_ids), dict(solids.counts))
    return true, applied


def true_city_model(osm_model: CityModel, true_solids: BuildingSolids, occluders: Sequence["Occluder"] = ()) -> CityModel:
    """The OSM model with its walls and roofs rebuilt from ``true_solids`` (flat layers kept);
    ``meta['standin']`` records what changed. The occluders are not in it (photo extras)."""
    ext = extrude_polygons(true_solids.polygons, true_solids.base_m, true_solids.top_m)
    meshes = {name: Mesh(m.vertices_local_m.copy(), m.triangles.copy()) for name, m in osm_model.meshes.items()}
    meshes["wall"], meshes["roof"] = ext.walls, ext.roofs
    kinds: dict[str, int] = {}
    for o in occluders:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    meta = {
        **osm_model.meta,
        "standin": {"true_world": True, "osm_cache_key": osm_model.meta.get("cache_key"), "occluders": kinds},
    }
    meta.pop("cache_key", None)  # not the OSM builder's output any more
    return CityModel(meshes, shapely.to_wkb(true_solids.footprint_union()), meta)


# ---- occluders ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreetWay:
    """A street centreline (``local_m``) and its carriageway width."""

    key: str
    line: LineString
    width_m: float
    highway: str = ""


@dataclass(frozen=True)
class Occluder:
    """One unmodelled object. ``kind``: ``tree`` (``trunk_radius_m``, ``trunk_height_m``,
    ``crown_radius_m``, ``crown_height_m``), ``vehicle``/``van`` (``length_m``, ``width_m``,
    ``height_m``), ``pole`` (``radius_m``, ``height_m``), ``person`` (``length_m``, ``width_m``,
    ``height_m``). Position = centre of the base on the ground (z = 0); heading clockwise from grid
    north (the long side of vehicles)."""

    id: str
    kind: str
    x_m: float
    y_m: float
    heading_deg: float
    size: dict[str, float] = field(default_factory=dict)
    street: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "xy_m": [self.x_m, self.y_m], "heading_deg": self.heading_deg,
                "size": dict(self.size), "street": self.street}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Occluder":
        return cls(str(d["id"]), str(d["kind"]), float(d["xy_m"][0]), float(d["xy_m"][1]), float(d["heading_deg"]),
                   {k: float(v) for k, v in d["size"].items()}, str(d.get("street", "")))


def _oriented_rect(x: float, y: float, heading_deg: float, length: float, width: float) -> Polygon:
    h = math.radians(heading_deg)
    fx, fy = math.sin(h), math.cos(h)  # forward (clockwise from north)
    rx, ry = fy, -fx  # right
    pts = [(x + sf * fx * length / 2 + sr * rx * width / 2, y + sf * fy * length / 2 + sr * ry * width / 2)
           for sf, sr in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    return Polygon(pts)


def occluder_footprint(o: Occluder, *, crown: bool = True) -> shapely.Geometry:
    """Footprint seen from above (``local_m``): trees by their crown (``crown=False``: the trunk
    and its planting pit), others by their base."""
    if o.kind == "tree":
        r = o.size["crown_radius_m"] if crown else o.size["trunk_radius_m"] + 0.3
        return Point(o.x_m, o.y_m).buffer(r, quad_segs=4)
    if o.kind == "pole":
        return Point(o.x_m, o.y_m).buffer(max(o.size["radius_m"], 0.3), quad_segs=2)
    return _oriented_rect(o.x_m, o.y_m, o.heading_deg, o.size["length_m"], o.size["width_m"])


def tangent_heading_deg(line: LineString, s: float) -> float:
    """Direction of ``line`` at arc length ``s`` (over ±0.5 m), clockwise from grid north, [0, 360)."""
    a = line.interpolate(max(0.0, s - 0.5))
    b = line.interpolate(min(line.length, s + 0.5))
    return math.degrees(math.atan2(b.x - a.x, b.y - a.y)) % 360.0


def _side_point(line: LineString, s: float, offset_m: float) -> tuple[float, float, float]:
    """(x, y, heading) at arc length ``s``, ``offset_m`` to the right of the line's direction."""
    p = line.interpolate(s)
    h = math.radians(tangent_heading_deg(line, s))
    return p.x + offset_m * math.cos(h), p.y - offset_m * math.sin(h), math.degrees(h) % 360.0


class _Grid:
    """Placed footprints in 10 m cells, for overlap checks."""

    def __init__(self, cell_m: float = 10.0):
        self.cell, self.cells = cell_m, {}

    def _keys(self, g: shapely.Geometry) -> Iterable[tuple[int, int]]:
        x0, y0, x1, y1 = g.bounds
        for i in range(int(math.floor(x0 / self.cell)), int(math.floor(x1 / self.cell)) + 1):
            for j in range(int(math.floor(y0 / self.cell)), int(math.floor(y1 / self.cell)) + 1):
                yield i, j

    def clear_of(self, g: shapely.Geometry, gap_m: float) -> bool:
        grown = g.buffer(gap_m, quad_segs=2) if gap_m > 0 else g
        return not any(grown.intersects(o) for k in self._keys(grown) for o in self.cells.get(k, ()))

    def add(self, g: shapely.Geometry) -> None:
        for k in self._keys(g):
            self.cells.setdefault(k, []).append(g)


def place_occluders(
    streets: Sequence[StreetWay],
    true_footprints: shapely.Geometry,
    cameras_xy_m: np.ndarray,
    config: WorldConfig,
    rng: np.random.Generator,
) -> list[Occluder]:
    """Occluders along both sides of every street way within ``occluder_range_m`` of a camera.

    Trees (kerb + 1 m), street lights (kerb + 0.4 m) and people (sidewalk, kerb + 1–3 m) stay off
    every carriageway; parked vehicles stand in the outer 2.2 m of their own carriageway and off
    the travel lanes of all; nothing touches a (true) building or comes within
    ``camera_clearance_m`` of a camera (trees: their crown; crowns may overhang the street)."""
    cams = np.asarray(cameras_xy_m, dtype=np.float64).reshape(-1, 2)
    if not len(streets) or not len(cams):
        return []
    cam_pts = shapely.points(cams)
    cam_tree = shapely.STRtree(cam_pts)
    near = [w for w in streets if cam_tree.query(w.line, predicate="dwithin", distance=config.occluder_range_m).size]
    lines = np.array([w.line for w in streets], dtype=object)
    widths = np.array([w.width_m for w in streets])
    carriageway = shapely.union_all(shapely.buffer(lines, widths / 2.0, quad_segs=2))
    travel = shapely.union_all(shapely.buffer(lines, np.maximum(widths / 2.0 - 2.2, 1.0), quad_segs=2))
    buildings = true_footprints.buffer(0.3, quad_segs=2) if not true_footprints.is_empty else shapely.GeometryCollection()
    for g in (carriageway, travel, buildings):
        shapely.prepare(g)
    grid = _Grid()
    out: list[Occluder] = []
    counters: dict[str, int] = {}

    def try_add(o: Occluder, *, on_road: bool) -> None:
        """Keep ``o`` (numbered per kind) if it is clear of buildings, lanes, cameras, others."""
        reach, base = occluder_footprint(o), occluder_footprint(o, crown=False)  # differ for trees only
        if buildings.intersects(reach) or (travel if on_road else carriageway).intersects(base):
            return
        if cam_tree.query(reach, predicate="dwithin", distance=config.camera_clearance_m).size or not grid.clear_of(base, 0.3):
            return
        grid.add(base)
        counters[o.kind] = counters.get(o.kind, 0) + 1
        out.append(replace(o, id=f"{o.kind}{counters[o.kind]:05d}"))

    for way in near:
        line, half = way.line, way.width_m / 2.0
        L = line.length
        for side in (1.0, -1.0):  # right, left of the way's direction
            # trees
            if rng.random() < config.p_tree_row:
                s = rng.uniform(0, config.tree_spacing_m[1])
                while s < L:
                    r_crown = float(rng.uniform(1.8, 3.0))
                    x, y, _ = _side_point(line, s, side * (half + 1.0))
                    size = {"trunk_radius_m": float(rng.uniform(0.12, 0.22)), "trunk_height_m": float(rng.uniform(2.6, 3.6)),
                            "crown_radius_m": r_crown, "crown_height_m": float(r_crown * rng.uniform(1.0, 1.4))}
                    try_add(Occluder("", "tree", x + rng.normal(0, 0.3), y + rng.normal(0, 0.3), float(rng.uniform(0, 360)), size, way.key), on_road=False)
                    s += rng.uniform(*config.tree_spacing_m)
            # parked vehicles
            if rng.random() < config.p_parking and half >= 2.5:
                s = config.parking_slot_m / 2
                while s < L:
                    if rng.random() < config.parking_occupancy:
                        van = rng.random() < config.p_van
                        x, y, h = _side_point(line, s + rng.normal(0, 0.4), side * (half - 1.1))
                        size = ({"length_m": float(rng.uniform(5.0, 6.0)), "width_m": float(rng.uniform(1.9, 2.05)), "height_m": float(rng.uniform(2.1, 2.6))}
                                if van else
                                {"length_m": float(rng.uniform(3.8, 4.8)), "width_m": float(rng.uniform(1.7, 1.85)), "height_m": float(rng.uniform(1.4, 1.6))})
                        kind = "van" if van else "vehicle"
                        try_add(Occluder("", kind, x, y, (h + rng.normal(0, 1.5)) % 360.0, size, way.key), on_road=True)
                    s += config.parking_slot_m
            # street lights
            if rng.random() < config.p_light_side:
                s = rng.uniform(0, config.light_spacing_m[1])
                while s < L:
                    x, y, h = _side_point(line, s, side * (half + 0.4))
                    size = {"radius_m": float(rng.uniform(0.06, 0.1)), "height_m": float(rng.uniform(5.0, 8.0))}
                    try_add(Occluder("", "pole", x, y, float(h), size, way.key), on_road=False)
                    s += rng.uniform(*config.light_spacing_m)
            # people
            for _ in range(int(rng.poisson(config.people_per_100m * L / 100.0))):
                x, y, _h = _side_point(line, rng.uniform(0, L), side * (half + rng.uniform(1.0, 3.0)))
                size = {"length_m": float(rng.uniform(0.4, 0.55)), "width_m": float(rng.uniform(0.25, 0.4)), "height_m": float(rng.uniform(1.55, 1.9))}
                try_add(Occluder("", "person", x, y, float(rng.uniform(0, 360)), size, way.key), on_road=False)
    return out


# ---- occluder meshes ---------------------------------------------------------------------------
def _box(x: float, y: float, heading_deg: float, length: float, width: float, z0: float, z1: float) -> Mesh:
    """Closed oriented box (outward normals)."""
    rect = np.asarray(_oriented_rect(x, y, heading_deg, length, width).exterior.coords)[:4]
    if shapely.is_ccw(shapely.linearrings(rect)):
        ring = rect
    else:
        ring = rect[::-1]
    return _prism_from_ring(ring, z0, z1)


def _prism_from_ring(ring_ccw: np.ndarray, z0: float, z1: float) -> Mesh:
    """Closed prism over a convex counter-clockwise ring (outward normals)."""
    n = len(ring_ccw)
    bottom = np.column_stack([ring_ccw, np.full(n, z0)])
    top = np.column_stack([ring_ccw, np.full(n, z1)])
    k = np.arange(n)
    nxt = (k + 1) % n
    sides = np.concatenate([np.column_stack([k, nxt, n + nxt]), np.column_stack([k, n + nxt, n + k])])
    fan = np.column_stack([np.zeros(n - 2, int), np.arange(1, n - 1), np.arange(2, n)])
    caps = np.concatenate([fan + n, fan[:, ::-1]])  # top faces up, bottom faces down
    return Mesh(np.concatenate([bottom, top]), np.concatenate([sides, caps]))


def _cylinder(x: float, y: float, radius: float, z0: float, z1: float, n: int = 8) -> Mesh:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _prism_from_ring(np.column_stack([x + radius * np.cos(a), y + radius * np.sin(a)]), z0, z1)


def _ellipsoid(x: float, y: float, z: float, rxy: float, rz: float, n_lon: int = 10, n_lat: int = 6) -> Mesh:
    """Closed low-poly ellipsoid (outward normals): poles + (n_lat − 1) rings of n_lon vertices."""
    lats = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)[1:-1]
    lons = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lats, lons, indexing="ij")
    ring = np.column_stack([x + rxy * np.cos(la).ravel() * np.cos(lo).ravel(), y + rxy * np.cos(la).ravel() * np.sin(lo).ravel(),
                            z + rz * np.sin(la).ravel()])
    verts = np.concatenate([ring, [[x, y, z - rz], [x, y, z + rz]]])
    south, north = len(ring), len(ring) + 1
    tris = []
    R = len(lats)
    for i in range(R - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [[a, b, d], [a, d, c]]
    for j in range(n_lon):
        tris.append([south, (j + 1) % n_lon, j])
        a, b = (R - 1) * n_lon + j, (R - 1) * n_lon + (j + 1) % n_lon
        tris.append([a, b, north])
    return Mesh(verts, np.asarray(tris))


def occluder_meshes(occluders: Sequence[Occluder]) -> dict[str, Mesh]:
    """Photo-only meshes by material key (:data:`s2r_data.photo_extras.PHOTO_EXTRA_KEYS`)."""
    parts: dict[str, list[Mesh]] = {}

    def put(key: str, m: Mesh) -> None:
        parts.setdefault(key, []).append(m)

    for o in occluders:
        s = o.size
        if o.kind == "tree":
            put("tree_trunk", _cylinder(o.x_m, o.y_m, s["trunk_radius_m"], 0.0, s["trunk_height_m"] + 0.5 * s["crown_height_m"], n=6))
            cz = s["trunk_height_m"] + 0.7 * s["crown_height_m"]
            put("tree_crown", _ellipsoid(o.x_m, o.y_m, cz, s["crown_radius_m"], s["crown_height_m"]))
        elif o.kind in ("vehicle", "van"):
            L, W, H = s["length_m"], s["width_m"], s["height_m"]
            h = math.radians(o.heading_deg)
            if o.kind == "vehicle":
                put("vehicle_body", _box(o.x_m, o.y_m, o.heading_deg, L, W, 0.22, 0.62 * H))
                back = 0.08 * L  # cabin a little behind the centre
                put("vehicle_glass", _box(o.x_m - back * math.sin(h), o.y_m - back * math.cos(h), o.heading_deg, 0.5 * L, W - 0.1, 0.62 * H, H))
            else:
                put("vehicle_body", _box(o.x_m, o.y_m, o.heading_deg, L, W, 0.3, 0.78 * H))
                put("vehicle_glass", _box(o.x_m, o.y_m, o.heading_deg, 0.96 * L, W - 0.05, 0.78 * H, H))
        elif o.kind == "pole":
            put("pole", _cylinder(o.x_m, o.y_m, s["radius_m"], 0.0, s["height_m"], n=6))
            put("pole", _box(o.x_m, o.y_m, o.heading_deg, 0.6, 0.3, s["height_m"], s["height_m"] + 0.2))  # lamp head
        elif o.kind == "person":
            put("person", _box(o.x_m, o.y_m, o.heading_deg, s["length_m"], s["width_m"], 0.0, s["height_m"]))
        else:
            raise ValueError(f"occluder {o.id}: unknown kind {o.kind!r} (tree, vehicle, van, pole, person)")
    return {k: Mesh.concat(v) for k, v in parts.items()}
