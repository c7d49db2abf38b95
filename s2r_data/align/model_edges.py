"""3-D edges of the city model that show up as photo edges, and their visible sample points per pose.

Edges are extracted once per :class:`~s2r_data.citymodel.CityModel` (pure numpy):

* ``VERTICAL`` — vertical building corners (wall creases ≥ ``crease_min_deg``) and every other
  vertical wall edge, which becomes an image edge where it is a silhouette for the camera (curved
  towers). Their image column does not depend on the building height, only on the footprint
  vertex: the most reliable feature of an OSM model.
* ``GROUND_LINE`` — facade–ground lines (horizontal wall edges at the ground). Their image row
  fixes the camera height and the distance to the facade.
* ``ROOFLINE`` — the other horizontal building edges (roof outlines, bases of raised parts).
  OSM heights are guesses (metres off), so they carry little weight.
* ``GROUND_BOUNDARY`` — outlines of the flat layers (road, green, water) on the ground.

:func:`sample_visible_points` turns the edges near a camera into 3-D sample points (spaced by
angle as seen from the camera), keeps those the ray caster sees, and attaches each point's 3-D
tangent, kind, weight and building id. The refinement projects these points (no render per
evaluation); it refreshes them when the pose has moved.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..citymodel import CityModel

__all__ = [
    "EdgeKind",
    "ModelEdges",
    "EdgePoints",
    "KIND_WEIGHTS",
    "extract_model_edges",
    "sample_visible_points",
    "Occluder",
]


class EdgeKind(enum.IntEnum):
    VERTICAL = 0
    GROUND_LINE = 1
    ROOFLINE = 2
    GROUND_BOUNDARY = 3


# default weight per kind (rooflines low: OSM heights are unreliable)
KIND_WEIGHTS: dict[EdgeKind, float] = {
    EdgeKind.VERTICAL: 1.0,
    EdgeKind.GROUND_LINE: 0.6,
    EdgeKind.ROOFLINE: 0.15,
    EdgeKind.GROUND_BOUNDARY: 0.5,
}

_GROUND_LINE_MAX_Z_M = 0.3  # horizontal wall edges below this are facade–ground lines
_WELD_M = 1e-3


class Occluder(Protocol):
    """What the sampling needs of :class:`s2r_data.render.raycast.RaycastScene`."""

    def occluded(self, origins_local_m: np.ndarray, targets_local_m: np.ndarray, *, eps_m: float = 0.05) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelEdges:
    """Straight 3-D edge segments in ``local_m`` (S of them)."""

    p0_local_m: np.ndarray  # float64 (S, 3)
    p1_local_m: np.ndarray  # float64 (S, 3)
    kind: np.ndarray  # uint8 (S,) EdgeKind
    normal_a: np.ndarray  # float64 (S, 3) unit normal of one adjacent face (0 for ground boundaries)
    normal_b: np.ndarray  # float64 (S, 3) of the other face (= normal_a for mesh boundary edges)
    crease_deg: np.ndarray  # float64 (S,) angle between the two face normals
    building: np.ndarray  # int32 (S,) connected component of the building mesh; −1 on the ground
    source: np.ndarray  # int64 (S,) the mesh edge a piece was cut from (long edges are split)

    def __len__(self) -> int:
        return int(len(self.kind))

    @property
    def n_buildings(self) -> int:
        return int(self.building.max()) + 1 if len(self) and self.building.max() >= 0 else 0

    def counts(self) -> dict[str, int]:
        return {k.name.lower(): int((self.kind == k).sum()) for k in EdgeKind}


def _weld(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ~1 mm: (unique vertices, index of each input vertex)."""
    key = np.round(np.asarray(vertices, dtype=np.float64) / _WELD_M).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return np.asarray(vertices, dtype=np.float64)[first], inverse.reshape(-1)


def _face_normals(v: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    area2 = np.linalg.norm(n, axis=1)
    return n / np.maximum(area2, 1e-12)[:, None], area2


def _mesh_edges(v: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges of a welded triangle mesh: (edges (E, 2), face a (E,), face b (E,), b = a if
    the edge has one face). Degenerate triangles are ignored."""
    n, area2 = _face_normals(v, tris)
    good = area2 > 1e-9
    tris = tris[good]
    face_ids = np.flatnonzero(good)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    f = np.concatenate([face_ids, face_ids, face_ids])
    e = np.sort(e, axis=1)
    keep = e[:, 0] != e[:, 1]
    e, f = e[keep], f[keep]
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, f = e[order], f[order]
    new = np.ones(len(e), dtype=bool)
    new[1:] = np.any(e[1:] != e[:-1], axis=1)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(e)))
    fa = f[starts]
    fb = np.where(counts >= 2, f[np.minimum(starts + 1, len(f) - 1)], fa)
    return e[starts], fa, fb


def _components(n_vertices: int, edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_vertices == 0:
        return np.zeros(0, dtype=np.int32)
    g = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    return connected_components(g, directed=False)[1].astype(np.int32)


def _building_edges(model: CityModel, crease_min_deg: float, ground_z_m: float) -> dict[str, np.ndarray]:
    meshes = [model.meshes["wall"], model.meshes["roof"]]
    verts = np.concatenate([m.vertices_local_m for m in meshes]).astype(np.float64)
    offs = np.cumsum([0] + [len(m.vertices_local_m) for m in meshes])
    tris = np.concatenate([m.triangles.astype(np.int64) + o for m, o in zip(meshes, offs)])
    if len(tris) == 0:
        return {}
    v, inv = _weld(verts)
    tris = inv[tris]
    normals, _ = _face_normals(v, tris)
    edges, fa, fb = _mesh_edges(v, tris)
    comp = _components(len(v), edges)
    p0, p1 = v[edges[:, 0]], v[edges[:, 1]]
    d = p1 - p0
    length = np.linalg.norm(d, axis=1)
    dz = np.abs(d[:, 2]) / np.maximum(length, 1e-12)
    na, nb = normals[fa], normals[fb]
    crease = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", na, nb), -1.0, 1.0)))
    boundary = fa == fb
    vertical = (dz > 0.98) & (length > 0.5)
    # vertical edges: all of them (silhouettes of curved facades are decided per camera)
    horizontal = (dz < 0.05) & (length > 0.2) & ((crease >= crease_min_deg) | boundary)
    z_mid = (p0[:, 2] + p1[:, 2]) / 2
    kind = np.full(len(edges), 255, dtype=np.uint8)
    kind[vertical] = EdgeKind.VERTICAL
    kind[horizontal & (z_mid <= ground_z_m + _GROUND_LINE_MAX_Z_M)] = EdgeKind.GROUND_LINE
    kind[horizontal & (z_mid > ground_z_m + _GROUND_LINE_MAX_Z_M)] = EdgeKind.ROOFLINE
    keep = kind != 255
    # vertical edges point up (p0 at the bottom)
    flip = keep & (kind == EdgeKind.VERTICAL) & (p0[:, 2] > p1[:, 2])
    p0, p1 = np.where(flip[:, None], p1, p0), np.where(flip[:, None], p0, p1)
    return {
        "p0": p0[keep], "p1": p1[keep], "kind": kind[keep], "na": na[keep], "nb": nb[keep],
        "crease": crease[keep], "building": comp[edges[keep, 0]],
    }


def _ground_boundaries(model: CityModel, clip_bounds: tuple[float, float, float, float] | None) -> dict[str, np.ndarray]:
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for name in ("road", "green", "water"):
        m = model.meshes[name]
        if len(m.triangles) == 0:
            continue
        v, inv = _weld(m.vertices_local_m)
        tris = inv[m.triangles.astype(np.int64)]
        edges, fa, fb = _mesh_edges(v, tris)
        b = edges[fa == fb]
        p0, p1 = v[b[:, 0]], v[b[:, 1]]
        if clip_bounds is not None:  # the model's cut at its extent is no edge in the world
            x0, y0, x1, y1 = clip_bounds
            on_clip = np.zeros(len(b), dtype=bool)
            for axis, lim in ((0, x0), (0, x1), (1, y0), (1, y1)):
                on_clip |= (np.abs(p0[:, axis] - lim) < 0.5) & (np.abs(p1[:, axis] - lim) < 0.5)
            p0, p1 = p0[~on_clip], p1[~on_clip]
        out.append((p0, p1))
    if not out:
        return {}
    p0 = np.concatenate([o[0] for o in out])
    p1 = np.concatenate([o[1] for o in out])
    keep = np.linalg.norm(p1 - p0, axis=1) > 0.05
    n = int(keep.sum())
    z = np.zeros((n, 3))
    return {"p0": p0[keep], "p1": p1[keep], "kind": np.full(n, EdgeKind.GROUND_BOUNDARY, np.uint8), "na": z,
            "nb": z, "crease": np.zeros(n), "building": np.full(n, -1, np.int32)}


def _split_long(parts: dict[str, np.ndarray], max_len_m: float) -> dict[str, np.ndarray]:
    """Cut segments longer than ``max_len_m`` into equal pieces (so a long street edge passing
    near the camera is sampled densely where it is near); ``source`` keeps the original edge."""
    L = np.linalg.norm(parts["p1"] - parts["p0"], axis=1)
    k = np.maximum(1, np.ceil(L / max_len_m)).astype(np.int64)
    rep = np.repeat(np.arange(len(L)), k)
    j = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    t0 = (j / np.repeat(k, k))[:, None]
    t1 = ((j + 1) / np.repeat(k, k))[:, None]
    d = parts["p1"][rep] - parts["p0"][rep]
    out = {name: a[rep] for name, a in parts.items()}
    out["p0"] = parts["p0"][rep] + t0 * d
    out["p1"] = parts["p0"][rep] + t1 * d
    out["source"] = parts["source"][rep]
    return out


def extract_model_edges(model: CityModel, *, crease_min_deg: float = 20.0, ground_z_m: float = 0.0,
                        ground_boundaries: bool = True, max_segment_m: float = 5.0) -> ModelEdges:
    """All photo-relevant straight edges of ``model`` (see the module docstring), cut into pieces of
    at most ``max_segment_m``."""
    cb = model.meta.get("clip_bounds_local_m")
    clip = tuple(float(x) for x in cb) if cb is not None and len(cb) == 4 else None
    parts = [_building_edges(model, crease_min_deg, ground_z_m)]
    if ground_boundaries:
        parts.append(_ground_boundaries(model, clip))  # type: ignore[arg-type]
    parts = [p for p in parts if p]
    if not parts:
        z3 = np.zeros((0, 3))
        return ModelEdges(z3, z3, np.zeros(0, np.uint8), z3, z3, np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int64))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    merged["source"] = np.arange(len(merged["kind"]), dtype=np.int64)
    m = _split_long(merged, max_segment_m)
    return ModelEdges(m["p0"], m["p1"], m["kind"], m["na"], m["nb"], m["crease"], m["building"], m["source"])


@dataclass(frozen=True)
class EdgePoints:
    """Visible sample points of model edges for one camera centre (N of them)."""

    xyz_local_m: np.ndarray  # float64 (N, 3)
    tangent_local: np.ndarray  # float64 (N, 3) unit direction of the edge through the point
    kind: np.ndarray  # uint8 (N,)
    weight: np.ndarray  # float64 (N,) kind weight / sqrt(points of the source edge)
    edge: np.ndarray  # int64 (N,) source edge (ModelEdges.source)
    building: np.ndarray  # int32 (N,)
    center_local_m: np.ndarray  # (3,) camera centre they were sampled for

    def __len__(self) -> int:
        return int(len(self.kind))

    def subset(self, mask: np.ndarray) -> "EdgePoints":
        return EdgePoints(self.xyz_local_m[mask], self.tangent_local[mask], self.kind[mask], self.weight[mask],
                          self.edge[mask], self.building[mask], self.center_local_m)

    def n_vertical_corners(self) -> int:
        """Distinct vertical model edges with a visible point (≈ building corners seen)."""
        return int(len(np.unique(self.edge[self.kind == EdgeKind.VERTICAL])))

    def n_buildings(self) -> int:
        return int(len(np.unique(self.building[self.building >= 0])))


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.arctan2(np.linalg.norm(np.cross(an, bn), axis=1), np.einsum("ij,ij->i", an, bn))


def sample_visible_points(
    edges: ModelEdges,
    center_local_m: np.ndarray,
    occluder: Occluder | None,
    *,
    radius_m: float = 300.0,
    step_deg: float = 0.5,
    max_points_per_edge: int = 48,
    min_distance_m: float = 1.0,
    ground_radius_m: float = 40.0,
    crease_min_deg: float = 20.0,
    kind_weights: dict[EdgeKind, float] | None = None,
) -> EdgePoints:
    """Sample points along the edges near ``center_local_m`` (about one per ``step_deg`` of view
    angle), keep those that can form an image edge from there (creases, silhouettes, front faces)
    and that the ray caster sees (``occluder=None`` skips the visibility test)."""
    C = np.asarray(center_local_m, dtype=np.float64).reshape(3)
    weights = {**KIND_WEIGHTS, **(kind_weights or {})}
    kw = np.array([weights[EdgeKind(k)] for k in range(len(EdgeKind))])
    empty = EdgePoints(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.uint8), np.zeros(0), np.zeros(0, np.int64),
                       np.zeros(0, np.int32), C)
    if len(edges) == 0:
        return empty
    p0, p1, kind = edges.p0_local_m, edges.p1_local_m, edges.kind
    # distance from the camera to the segment (horizontal)
    d = p1[:, :2] - p0[:, :2]
    L2 = np.maximum((d**2).sum(1), 1e-12)
    t = np.clip(((C[:2] - p0[:, :2]) * d).sum(1) / L2, 0, 1)
    dist_xy = np.linalg.norm(p0[:, :2] + t[:, None] * d - C[:2], axis=1)
    near = (dist_xy <= radius_m) & (dist_xy >= 0.2) & (kw[kind] > 0)
    near &= (kind != EdgeKind.GROUND_BOUNDARY) | (dist_xy <= ground_radius_m)
    # which faces look at the camera (horizontal wall normals; roof normal up)
    mid = (p0 + p1) / 2
    view = mid - C
    fa = np.einsum("ij,ij->i", edges.normal_a, view) < 0
    fb = np.einsum("ij,ij->i", edges.normal_b, view) < 0
    is_building = kind != EdgeKind.GROUND_BOUNDARY
    crease_ok = edges.crease_deg >= crease_min_deg
    silhouette = fa != fb
    shows = np.where(kind == EdgeKind.VERTICAL, (fa | fb) & (crease_ok | silhouette), fa | fb)
    near &= np.where(is_building, shows, True)
    idx = np.flatnonzero(near)
    if len(idx) == 0:
        return empty
    ang = _angle_between(p0[idx] - C, p1[idx] - C)
    n = np.clip(np.ceil(np.degrees(ang) / step_deg), 1, max_points_per_edge).astype(np.int64)
    rep = np.repeat(idx, n)
    offs = np.cumsum(n) - n
    i_in = np.arange(n.sum()) - np.repeat(offs, n)
    tt = (i_in + 0.5) / np.repeat(n, n)
    X = p0[rep] + tt[:, None] * (p1[rep] - p0[rep])
    tangent = p1[rep] - p0[rep]
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    dist = np.linalg.norm(X - C, axis=1)
    ok = dist >= min_distance_m
    X, tangent, rep = X[ok], tangent[ok], rep[ok]
    if occluder is not None and len(X):
        # lift points a few cm off the ground and stop the ray short of the edge: grazing rays
        # along the surfaces that meet at the edge must not count as occluded
        lift = np.where(X[:, 2] < 0.1, 0.05, 0.0)
        target = X + np.stack([np.zeros_like(lift), np.zeros_like(lift), lift], axis=1)
        vis = ~occluder.occluded(C, target, eps_m=0.05)
        X, tangent, rep = X[vis], tangent[vis], rep[vis]
    k = kind[rep]
    src = edges.source[rep]
    _, inv, cnt = np.unique(src, return_inverse=True, return_counts=True)
    w = kw[k] / np.sqrt(cnt[inv])
    return EdgePoints(X, tangent, k, w, src, edges.building[rep], C)
