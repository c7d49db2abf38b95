"""Test scenes made of axis-aligned boxes over a ground quad, and an exact analytic ray caster.

The ray caster uses s2r_data.equirect.pixel_to_ray_local (the documented convention), so
comparing a Blender render with it checks camera placement, pixel convention and passes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from s2r_data.citymodel import CLASS_BY_NAME, CityModel, Mesh
from s2r_data.equirect import bearing_to_pixel, pixel_to_bearing, pixel_to_ray_local
from s2r_data.poses import Pose

# (lo, hi) corner order; faces CCW seen from outside → outward normals
_QUADS = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]


@dataclass(frozen=True)
class Box:
    class_name: str
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.lo) + np.asarray(self.hi)) / 2


def box_mesh(box: Box) -> Mesh:
    lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float)
    v = np.array([[(lo, hi)[ix][0], (lo, hi)[iy][1], (lo, hi)[iz][2]] for iz in (0, 1) for iy in (0, 1) for ix in (0, 1)])
    tris = [t for a, b, c, d in _QUADS for t in ((a, b, c), (a, c, d))]
    return Mesh(v, np.array(tris))


def ground_mesh(half_m: float) -> Mesh:
    h = half_m
    return Mesh(np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], float), np.array([[0, 1, 2], [0, 2, 3]]))


def box_city(boxes: list[Box], *, ground_half_m: float = 500.0, footprint_boxes: list[Box] | None = None) -> CityModel:
    meshes: dict[str, list[Mesh]] = {"ground": [ground_mesh(ground_half_m)]}
    for b in boxes:
        meshes.setdefault(b.class_name, []).append(box_mesh(b))
    fps = [shapely.box(b.lo[0], b.lo[1], b.hi[0], b.hi[1]) for b in (footprint_boxes or [])]
    wkb = shapely.to_wkb(shapely.union_all(fps)) if fps else b""
    return CityModel({k: Mesh.concat(v) for k, v in meshes.items()}, wkb, {"city": "test-boxes"})


@dataclass
class RayCast:
    label: np.ndarray  # uint8 (H, W)
    depth_m: np.ndarray  # float64 (H, W), 0 = sky
    normal: np.ndarray  # float64 (3, H, W), 0 = sky
    box_id: np.ndarray  # int (H, W): index into boxes, -1 ground, -2 sky


def raycast(pose: Pose, width: int, height: int, boxes: list[Box], *, ground_half_m: float = 500.0) -> RayCast:
    px, py = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d = pixel_to_ray_local(px, py, pose, width, height)  # (H, W, 3) unit
    C = pose.center_local_m
    best_t = np.full((height, width), np.inf)
    box_id = np.full((height, width), -2, dtype=np.int64)
    normal = np.zeros((height, width, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        # ground plane z = 0, finite quad
        t = -C[2] / d[..., 2]
        hit = (t > 0) & np.isfinite(t)
        P = C + np.where(hit, t, 0)[..., None] * d
        hit &= (np.abs(P[..., 0]) <= ground_half_m) & (np.abs(P[..., 1]) <= ground_half_m)
        upd = hit & (t < best_t)
        best_t[upd], box_id[upd] = t[upd], -1
        normal[upd] = (0.0, 0.0, 1.0 if C[2] > 0 else -1.0)
        for k, b in enumerate(boxes):
            lo, hi = np.asarray(b.lo), np.asarray(b.hi)
            t1, t2 = (lo - C) / d, (hi - C) / d
            tmin_axes = np.minimum(t1, t2)
            tnear = np.nanmax(tmin_axes, axis=-1)
            tfar = np.nanmin(np.maximum(t1, t2), axis=-1)
            hit = (tfar >= tnear) & (tnear > 0)
            upd = hit & (tnear < best_t)
            axis = np.argmax(tmin_axes, axis=-1)
            n = np.zeros((height, width, 3))
            np.put_along_axis(n, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
            best_t[upd], box_id[upd], normal[upd] = tnear[upd], k, n[upd]
    label = np.zeros((height, width), np.uint8)
    label[box_id == -1] = CLASS_BY_NAME["ground"].index
    for k, b in enumerate(boxes):
        label[box_id == k] = CLASS_BY_NAME[b.class_name].index
    depth = np.where(box_id >= -1, best_t, 0.0)
    return RayCast(label, depth, normal.transpose(2, 0, 1), box_id)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbours (horizontally wrapped) share their value in ``mask`` (any dtype)."""
    m = mask
    same = np.roll(m, 1, axis=1) == m
    same &= np.roll(m, -1, axis=1) == m
    up = np.vstack([m[:1], m[:-1]])
    down = np.vstack([m[1:], m[-1:]])
    return same & (up == m) & (down == m)


def centroid_px(mask: np.ndarray) -> np.ndarray:
    """(px, py) centroid of a boolean mask in pixel space (pixel centres at integers)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def spherical_centroid_px(mask: np.ndarray) -> np.ndarray:
    """(px, py) of the mean viewing direction of a mask's pixels, each weighted by its solid angle
    (∝ cos latitude). Immune to the seam wrap and to the horizontal stretch near the poles."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    b = pixel_to_bearing(xs, ys, w, h)
    weight = np.sqrt(b[:, 0] ** 2 + b[:, 2] ** 2)  # cos(latitude)
    return bearing_to_pixel((b * weight[:, None]).sum(0), w, h)


# ---- sphere markers (symmetric silhouettes: their mean viewing direction is the centre's) --------
@dataclass(frozen=True)
class Sphere:
    class_name: str
    center: tuple[float, float, float]
    radius_m: float


def sphere_mesh(s: Sphere, n_lon: int = 48, n_lat: int = 24) -> Mesh:
    """UV sphere, outward CCW triangles, vertices on the sphere."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    v = np.vstack([[0, 0, -1], ring, [0, 0, 1]]) * s.radius_m + np.asarray(s.center)
    south, north = 0, len(v) - 1
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    tris = [(south, idx(0, j + 1), idx(0, j)) for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j + 1), idx(i + 1, j)
            tris += [(a, b, c), (a, c, d)]
    tris += [(north, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)) for j in range(n_lon)]
    return Mesh(v, np.array(tris))


def sphere_city(spheres: list[Sphere], *, ground_half_m: float = 500.0) -> CityModel:
    meshes: dict[str, list[Mesh]] = {"ground": [ground_mesh(ground_half_m)]}
    for s in spheres:
        meshes.setdefault(s.class_name, []).append(sphere_mesh(s))
    return CityModel({k: Mesh.concat(v) for k, v in meshes.items()}, b"", {"city": "test-spheres"})


def ray_mesh_hit(origin: np.ndarray, dirs: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(N,) bool: does each ray from ``origin`` along ``dirs`` (N, 3) hit a triangle of ``mesh``?
    (Möller–Trumbore, vectorised over rays × triangles.)"""
    v = mesh.vertices_local_m.astype(np.float64)
    t = mesh.triangles
    v0, e1, e2 = v[t[:, 0]], v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]
    hit = np.zeros(len(dirs), dtype=bool)
    for start in range(0, len(dirs), 2048):
        d = dirs[start : start + 2048, None, :]
        p = np.cross(d, e2)
        det = np.einsum("ntk,tk->nt", p, e1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            s = origin - v0
            u = np.einsum("tk,ntk->nt", s, p) * inv
            q = np.cross(s, e1)
            w = (d * q).sum(-1) * inv
            tt = (e2 * q).sum(-1) * inv
        ok = (np.abs(det) > 1e-12) & (u >= 0) & (w >= 0) & (u + w <= 1) & (tt > 0)
        hit[start : start + 2048] = ok.any(axis=1)
    return hit


def sphere_masks(pose: Pose, width: int, height: int, spheres: list[Sphere]) -> list[np.ndarray]:
    """Per sphere, the exact pixel mask of its *triangle mesh* (ray-cast only near the sphere)."""
    px, py = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d = pixel_to_ray_local(px, py, pose, width, height).reshape(-1, 3)
    C = pose.center_local_m
    masks = []
    for s in spheres:
        to_c = np.asarray(s.center) - C
        dist = np.linalg.norm(to_c)
        half_angle = np.arcsin(min(1.0, s.radius_m / dist)) + 4 * 2 * np.pi / width
        near = d @ (to_c / dist) > np.cos(half_angle)
        m = np.zeros(len(d), dtype=bool)
        m[np.flatnonzero(near)] = ray_mesh_hit(C, d[near], sphere_mesh(s))
        masks.append(m.reshape(height, width))
    return masks
