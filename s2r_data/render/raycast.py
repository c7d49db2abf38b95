"""First-hit ray casting against a :class:`~s2r_data.citymodel.CityModel` with Embree (``embreex``).

The fast render backend and the engine behind pose refinement. One BVH over all triangles of the
model (:class:`RaycastScene`, built once per process), then:

* :meth:`RaycastScene.cast` — rays in ``local_m`` → :class:`RayHits` (distance, class, normal, triangle);
* :meth:`RaycastScene.occluded` — is anything between points A and B;
* :meth:`RaycastScene.render` — one ray per pixel centre of an equirectangular panorama →
  :class:`~s2r_data.render.sim_passes.SimPasses`, the same outputs as the Blender labels mode.

Conventions (those of the Blender backend, blender-passes notes §1–§2, checked against Blender by
``tests/render/test_raycast_agreement.py``):

* pixel (c, r) looks along λ = 2π(c + ½)/W − π, φ = π(½ − (r + ½)/H) in ``cam_opensfm``
  (:func:`s2r_data.equirect.pixel_to_bearing`), rotated to ``local_m`` by ``R_world_to_cam_opensfmᵀ``;
* rays start at the camera centre moved :data:`~.settings.CLIP_START_M` along the ray (Cycles'
  near clip) and end at ``clip_end_m``: nothing nearer than the near clip is seen, anything farther
  than ``clip_end_m`` is sky;
* depth = Euclidean distance from the camera centre; normal = the triangle's unit face normal in
  ``local_m``, flipped to face the viewer (dot(normal, ray) ≤ 0), as Cycles does for back faces;
* sky: label 0, DiffCol 0, normal 0, depth 0, ``sky_mask`` True.

Work is split into chunks of at most ``chunk_rays`` rays cast by ``threads`` threads (embreex
releases the GIL), so memory beyond the outputs stays bounded at any panorama size. No bpy, no
Prefect.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..citymodel import CLASSES, MESH_CLASSES, CLASS_BY_NAME, CityModel, CityModelError
from ..poses import Pose
from .pose_checks import PoseFlagger, check_renderable_pose
from .settings import CLIP_START_M, check_width
from .sim_passes import SimPasses

__all__ = [
    "RayHits",
    "RaycastScene",
    "RAYCAST_BACKEND_VERSION",
    "DEFAULT_CHUNK_RAYS",
    "equirect_row_directions_cam",
    "resolve_threads",
]

# Bump when a change alters any output pixel (part of every output's content key).
RAYCAST_BACKEND_VERSION = "1"
DEFAULT_CHUNK_RAYS = 1 << 15  # 32k rays: ≈ 2 MB of temporaries per thread
# Where Cycles' single sample per pixel lands (BOX filter 0.01 px, sample 0), relative to the pixel
# centre, in (right, down) pixels, measured on grazing planes whose depth resolves 1e-5 px
# (tests/render/test_raycast_agreement.py re-measures it): 1/2000 px, nothing for geometry, but at
# grazing angles (far street surface) it moves the depth by centimetres, so the ray caster samples
# the same spot.
CYCLES_SAMPLE_OFFSET_PX = (0.0005, -0.0005)
_NO_HIT = 1e37  # embreex's tfar for a miss (its default "infinity")


def resolve_threads(threads: int) -> int:
    """``0`` → the CPU cores this process may use; otherwise ``threads`` (≥ 1)."""
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads={threads!r}: must be an integer >= 0 (0 = all cores)")
    if threads:
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RayHits:
    """First hits of N rays (arrays aligned with the rays)."""

    dist_m: np.ndarray  # float32 (N,), Euclidean distance origin→hit; np.inf where nothing is hit
    class_index: np.ndarray  # uint8 (N,), s2r_data.citymodel class of the hit triangle; 0 (sky) where no hit
    normal_local: np.ndarray  # float32 (N, 3), unit local_m normal facing the ray origin (Blender Normal pass); 0 where no hit
    tri_index: np.ndarray  # int64 (N,), index into RaycastScene.triangle_classes etc.; -1 where no hit

    @property
    def hit(self) -> np.ndarray:
        return self.tri_index >= 0


def equirect_row_directions_cam(width: int, r0: int, r1: int, *, sample_offset_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """float64 (r1 − r0, W, 3): unit ``cam_opensfm`` ray directions through the pixel centres of
    rows ``r0 … r1−1`` of a W × W/2 equirectangular panorama (the :mod:`s2r_data.equirect` model),
    moved by ``sample_offset_px`` = (right, down) pixels."""
    height = width // 2
    dx, dy = sample_offset_px
    lon = (np.arange(width, dtype=np.float64) + 0.5 + dx) * (2 * np.pi / width) - np.pi
    lat = np.pi * (0.5 - (np.arange(r0, r1, dtype=np.float64) + 0.5 + dy) / height)
    cos_lat, sin_lat = np.cos(lat)[:, None], np.sin(lat)[:, None]
    out = np.empty((r1 - r0, width, 3))
    out[..., 0] = cos_lat * np.sin(lon)[None, :]
    out[..., 1] = -sin_lat
    out[..., 2] = cos_lat * np.cos(lon)[None, :]
    return out


class RaycastScene:
    """One Embree BVH over all triangles of a CityModel (built once, reused for every pose).

    Per-triangle tables (aligned with :attr:`RayHits.tri_index`): :attr:`triangle_classes` (uint8
    class index), :attr:`triangle_normals_local` (float32 unit face normals, CCW = outward, as
    stored), :attr:`triangle_model_class` (the mesh class name of each triangle's source mesh via
    ``MESH_CLASSES[triangle_classes - 1]``). Thread-safe for concurrent ``cast``/``render`` calls.
    """

    def __init__(self, model: CityModel, *, threads: int = 0, chunk_rays: int = DEFAULT_CHUNK_RAYS):
        from embreex import mesh_construction, rtcore_scene

        self.threads = resolve_threads(threads)
        if not isinstance(chunk_rays, (int, np.integer)) or chunk_rays < 256:
            raise ValueError(f"chunk_rays={chunk_rays!r}: must be an integer >= 256")
        self.chunk_rays = int(chunk_rays)
        verts, tris, classes = _validated_triangles(model)
        self.vertices_local_m = verts  # float32 (V, 3)
        self.triangles = tris  # int32 (M, 3)
        self.triangle_classes = classes  # uint8 (M,)
        v = verts.astype(np.float64)
        n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
        self.triangle_normals_local = n.astype(np.float32)
        # Gather tables with a leading "no hit" row, indexed by tri_index + 1 (−1 → sky).
        self._class_by_slot = np.concatenate([[0], classes]).astype(np.uint8)
        self._normal_by_slot = np.concatenate([np.zeros((1, 3), np.float32), self.triangle_normals_local])
        self._colour_by_class = np.zeros((256, 3), np.float16)
        for c in CLASSES:
            self._colour_by_class[c.index] = c.colour_linear
        t0 = time.perf_counter()
        # Robust traversal (no cracks between triangles sharing an edge); Cycles builds its Embree
        # scenes with the same flag.
        self._scene = rtcore_scene.EmbreeScene(robust=True)
        self._mesh = mesh_construction.TriangleMesh(self._scene, verts, tris)
        self._scene.run(np.zeros((1, 3), np.float32), np.array([[0, 0, 1]], np.float32))  # commit (BVH build) now
        self.build_s = time.perf_counter() - t0
        self._flagger = PoseFlagger(model)
        self.model_meta = dict(model.meta)
        self.model_path: Path | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_path(cls, city_model_path: str | Path, *, threads: int = 0) -> "RaycastScene":
        scene = cls(CityModel.load(city_model_path), threads=threads)
        scene.model_path = Path(city_model_path)
        return scene

    @property
    def n_triangles(self) -> int:
        return int(len(self.triangles))

    # ---- threads ------------------------------------------------------------------------------
    def _map(self, fn: Callable[[int, int], None], n: int, step: int) -> None:
        """Run ``fn(start, stop)`` over ``range(0, n, step)`` on the scene's threads."""
        spans = [(s, min(s + step, n)) for s in range(0, n, step)]
        if self.threads == 1 or len(spans) <= 1:
            for s, e in spans:
                fn(s, e)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="raycast")
        for f in [self._pool.submit(fn, s, e) for s, e in spans]:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "RaycastScene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the primitive -----------------------------------------------------------------------
    def _first_hit(self, origins32: np.ndarray, dirs32: np.ndarray, tfar32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tri_index int32, t float32) of the first hit per ray; −1 / ≥ 1e37 where none."""
        r = self._scene.run(origins32, dirs32, dists=tfar32, output=1)
        return r["primID"], r["tfar"]

    # ---- public API ----------------------------------------------------------------------------
    def cast(self, origins_local_m: np.ndarray, dirs_local_m: np.ndarray, *, max_dist_m: float = np.inf) -> RayHits:
        """First hit of each ray. ``origins`` (N, 3) or (3,) (shared), ``dirs`` (N, 3) unit vectors;
        hits farther than ``max_dist_m`` count as misses. Normals face the ray origin."""
        d = np.asarray(dirs_local_m, dtype=np.float64)
        if d.ndim != 2 or d.shape[1] != 3:
            raise ValueError(f"dirs_local_m must be (N, 3); got {d.shape}")
        o = np.asarray(origins_local_m, dtype=np.float64)
        if o.shape == (3,):
            o = o[None, :]
        if o.ndim != 2 or o.shape[1] != 3 or o.shape[0] not in (1, len(d)):
            raise ValueError(f"origins_local_m must be (3,) or (N, 3) with N = {len(d)}; got {o.shape}")
        if not (np.isfinite(o).all() and np.isfinite(d).all()):
            raise ValueError("origins_local_m and dirs_local_m must be finite")
        norms = np.linalg.norm(d, axis=1)
        if len(d) and not np.allclose(norms, 1.0, atol=1e-4):
            raise ValueError(f"dirs_local_m must be unit vectors (norms range {norms.min():.4g}..{norms.max():.4g})")
        if not max_dist_m > 0:
            raise ValueError(f"max_dist_m={max_dist_m!r} must be > 0")
        n = len(d)
        dist = np.empty(n, np.float32)
        tri = np.empty(n, np.int64)
        tfar = np.float32(min(float(max_dist_m), _NO_HIT))

        def work(s: int, e: int) -> None:
            oc = np.ascontiguousarray(o[s:e] if len(o) > 1 else np.broadcast_to(o[0], (e - s, 3)), dtype=np.float32)
            prim, t = self._first_hit(oc, np.ascontiguousarray(d[s:e], dtype=np.float32), np.full(e - s, tfar, np.float32))
            hit = (prim >= 0) & (t <= tfar)
            tri[s:e] = np.where(hit, prim, -1)
            dist[s:e] = np.where(hit, t, np.inf)

        self._map(work, n, self.chunk_rays)
        slot = tri + 1
        normal = self._normal_by_slot[slot]
        flip = np.einsum("ij,ij->i", normal.astype(np.float64), d) > 0
        normal[flip] *= -1
        return RayHits(dist, self._class_by_slot[slot], normal, tri)

    def occluded(self, origins_local_m: np.ndarray, targets_local_m: np.ndarray, *, eps_m: float = 0.05) -> np.ndarray:
        """bool (N,): True where a triangle lies between origin and target, ignoring the last
        ``eps_m`` before the target (so a point on a surface does not occlude itself)."""
        t = np.asarray(targets_local_m, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"targets_local_m must be (N, 3); got {t.shape}")
        o = np.broadcast_to(np.asarray(origins_local_m, dtype=np.float64), t.shape)
        v = t - o
        length = np.linalg.norm(v, axis=1)
        out = np.zeros(len(t), dtype=bool)
        todo = np.flatnonzero(length > eps_m)
        if not len(todo):
            return out
        dirs = v[todo] / length[todo, None]
        reach = length[todo] - eps_m
        n = len(todo)

        def work(s: int, e: int) -> None:
            prim, tt = self._first_hit(
                np.ascontiguousarray(o[todo[s:e]], dtype=np.float32),
                np.ascontiguousarray(dirs[s:e], dtype=np.float32),
                np.ascontiguousarray(reach[s:e], dtype=np.float32),
            )
            out[todo[s:e]] = (prim >= 0) & (tt <= reach[s:e])

        self._map(work, n, self.chunk_rays)
        return out

    def render(self, pose: Pose, width: int, *, rows: tuple[int, int] | None = None,
               clip_end_m: float = 20_000.0) -> SimPasses:
        """The Blender labels-mode passes of ``pose`` at ``width`` × ``width/2`` (see module doc).

        ``rows=(r0, r1)`` casts only rows r0 … r1−1 (the rest is sky/0: a cheap region of
        interest). ``meta``: image_id, width, height, flags (outside_bounds, inside_building,
        below_ground, also as top-level keys like the Blender backend), render_time_s, backend,
        backend_version, clip_end_m, rows.
        """
        t0 = time.perf_counter()
        check_width(width)
        check_renderable_pose(pose)
        if not clip_end_m > 1.0:
            raise ValueError(f"clip_end_m={clip_end_m!r}: must be > 1 m")
        height = width // 2
        r0, r1 = (0, height) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= r0 < r1 <= height:
            raise ValueError(f"rows={rows!r}: need 0 <= r0 < r1 <= {height} for width {width}")
        diffcol = np.zeros((3, height, width), np.float16)
        normal = np.zeros((3, height, width), np.float16)
        depth = np.zeros((1, height, width), np.float32)
        label = np.zeros((1, height, width), np.uint8)
        sky = np.ones((1, height, width), bool)
        R_cam_to_local = pose.R_world_to_cam_opensfm.T  # columns: camera axes in local_m
        C = pose.center_local_m
        tfar = np.float32(clip_end_m - CLIP_START_M)
        rows_per_chunk = max(1, self.chunk_rays // width)

        def work(a: int, b: int) -> None:
            d = equirect_row_directions_cam(width, a, b, sample_offset_px=CYCLES_SAMPLE_OFFSET_PX).reshape(-1, 3) @ R_cam_to_local.T
            o32 = (C + CLIP_START_M * d).astype(np.float32)
            prim, t = self._first_hit(o32, d.astype(np.float32), np.full(len(d), tfar, np.float32))
            hit = (prim >= 0) & (t <= tfar)
            slot = np.where(hit, prim + 1, 0)
            cls = self._class_by_slot[slot]
            n = self._normal_by_slot[slot]
            facing_away = np.einsum("ij,ij->i", n, d) > 0
            n = np.where(facing_away[:, None], -n, n)
            label[0, a:b] = cls.reshape(b - a, width)
            sky[0, a:b] = ~hit.reshape(b - a, width)
            depth[0, a:b] = np.where(hit, t + np.float32(CLIP_START_M), np.float32(0)).reshape(b - a, width)
            normal[:, a:b] = n.T.reshape(3, b - a, width)
            diffcol[:, a:b] = self._colour_by_class[cls].T.reshape(3, b - a, width)

        self._map(lambda s, e: work(r0 + s, r0 + e), r1 - r0, rows_per_chunk)
        flags = self._flagger.flags(pose)
        meta = {
            "image_id": pose.image_id, "mode": "labels", "width": width, "height": height,
            **flags, "flags": flags, "render_time_s": time.perf_counter() - t0,
            "backend": "raycast", "backend_version": RAYCAST_BACKEND_VERSION, "clip_end_m": float(clip_end_m),
            "rows": [r0, r1], "pose": pose.to_dict(),
        }
        return SimPasses(diffcol, normal, depth, label, sky, meta=meta)


def _validated_triangles(model: CityModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All class meshes → (vertices float32 (V, 3), triangles int32 (M, 3), class uint8 (M,)).

    Raises :class:`CityModelError` naming the problem: no triangles at all, non-finite vertices,
    triangle indices out of range."""
    verts, tris, classes, offset = [], [], [], 0
    for name in MESH_CLASSES:
        mesh = model.meshes[name]
        if not len(mesh.triangles):
            continue
        v = mesh.vertices_local_m
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise CityModelError(
                f"city model{_where(model)}: {int(bad.sum())} of {len(v)} {name!r} vertices are not finite "
                f"(first at index {int(np.flatnonzero(bad)[0])}); rebuild the model (`s2r city build`)"
            )
        t = mesh.triangles
        if t.min() < 0 or t.max() >= len(v):
            raise CityModelError(f"city model{_where(model)}: {name!r} triangles index vertices outside 0..{len(v) - 1}; rebuild the model")
        verts.append(v)
        tris.append(t + offset)
        classes.append(np.full(len(t), CLASS_BY_NAME[name].index, np.uint8))
        offset += len(v)
    if not tris:
        raise CityModelError(f"city model{_where(model)} has no triangles (every class mesh is empty); nothing can be rendered — check the OSM extract and rebuild (`s2r city build`)")
    return (np.ascontiguousarray(np.concatenate(verts), np.float32), np.ascontiguousarray(np.concatenate(tris), np.int32),
            np.concatenate(classes))


def _where(model: CityModel) -> str:
    city = model.meta.get("city")
    return f" of city {city!r}" if city else ""
