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
* rays start at the camera centre and end at ``clip_end_m`` (farther surfaces are sky); like
  Cycles' near clip, nothing nearer than :data:`~.settings.CLIP_START_M` is seen (the few rays
  that hit something that close are cast again from CLIP_START_M out);
* Cycles' one sample per pixel lands :data:`CYCLES_SAMPLE_OFFSET_PX` (1/2000 px) from the centre;
  the ray caster samples the same spot;
* depth = Euclidean distance from the camera centre; normal = the triangle's unit face normal in
  ``local_m``, flipped to face the viewer (dot(normal, ray) ≤ 0), as Cycles does for back faces;
* sky: label 0, DiffCol 0, normal 0, depth 0, ``sky_mask`` True.

Work is split into chunks of at most ``chunk_rays`` rays cast by ``threads`` threads (embreex
releases the GIL), so memory beyond the outputs stays bounded at any panorama size. No bpy, no
Prefect.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..citymodel import CLASS_BY_NAME, CLASSES, MESH_CLASSES, CityModel
from ..poses import Pose
from .pose_checks import PoseFlagger, check_renderable_model, check_renderable_pose
from .settings import CLIP_START_M, check_width
from .sim_passes import ARRAY_SPECS, SimPasses

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
        self._tri_v0 = v[tris[:, 0]]
        self._tri_n64 = n
        colour_by_class = np.zeros((256, 3), np.float16)
        for c in CLASSES:
            colour_by_class[c.index] = c.colour_linear
        self._colour_by_slot = np.ascontiguousarray(colour_by_class[self._class_by_slot].T)  # (3, M + 1)
        self._grids: dict[int, tuple[np.ndarray, ...]] = {}
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
        self._lock = threading.Lock()

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
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="raycast")
            pool = self._pool
        for f in [pool.submit(fn, s, e) for s, e in spans]:
            f.result()

    def close(self) -> None:
        """Stop the scene's threads (a later call starts them again)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

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

        shared_origin = o[0].astype(np.float32) if len(o) == 1 else None

        def work(s: int, e: int) -> None:
            oc = np.ascontiguousarray(o[s:e], dtype=np.float32) if shared_origin is None else np.broadcast_to(shared_origin, (e - s, 3))
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
        return self.render_into(pose, width, rows=rows, clip_end_m=clip_end_m)

    def render_many(self, poses: Iterable[Pose], width: int, *, rows: tuple[int, int] | None = None,
                    clip_end_m: float = 20_000.0, reuse_arrays: bool = False) -> Iterator[SimPasses]:
        """:meth:`render` for each pose, in order (a batch, e.g. the candidates of a pose search).
        ``reuse_arrays=True`` renders every pose into the same arrays: each result is valid only
        until the next one is produced (no allocation per pose)."""
        previous: SimPasses | None = None
        for pose in poses:
            previous = self.render_into(pose, width, rows=rows, clip_end_m=clip_end_m, out=previous if reuse_arrays else None)
            yield previous

    def render_into(self, pose: Pose, width: int, *, rows: tuple[int, int] | None = None,
                    clip_end_m: float = 20_000.0, out: SimPasses | None = None) -> SimPasses:
        """:meth:`render`, reusing the arrays of ``out`` (a previous result of the same size, no
        longer needed) instead of allocating new ones: saves page faults in long batches."""
        t0 = time.perf_counter()
        check_width(width)
        check_renderable_pose(pose)
        if not clip_end_m > 1.0:
            raise ValueError(f"clip_end_m={clip_end_m!r}: must be > 1 m")
        height = width // 2
        r0, r1 = (0, height) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= r0 < r1 <= height:
            raise ValueError(f"rows={rows!r}: need 0 <= r0 < r1 <= {height} for width {width}")
        arrays = _output_arrays(height, width, out, zero=(r0, r1) != (0, height))
        diffcol, normal, depth, label, sky = (arrays[k] for k in ("diffcol", "normal", "depth_m", "label", "sky_mask"))
        C = pose.center_local_m
        R_cam_to_local = pose.R_world_to_cam_opensfm.T  # columns: the camera axes in local_m
        cos_lat, sin_lat, lon_part = self._pixel_grid(width, R_cam_to_local)
        # Rows of (W·3) floats, so that numpy's inner loops run along a whole row, not 3 elements:
        # lon_row = (sin λ x_cam + cos λ z_cam) per pixel, up_row = y_cam repeated per pixel.
        lon_row = lon_part.reshape(1, width * 3)
        up_row = np.tile(R_cam_to_local[:, 1].astype(np.float32), width)[None, :]
        cos_col, sin_col = cos_lat[:, None], sin_lat.astype(np.float32)[:, None]
        origin32 = C.astype(np.float32)
        normal_by_slot, colour_by_slot = self._oriented_tables(C)
        tfar = np.float32(clip_end_m)
        clip_start = np.float32(CLIP_START_M)
        rows_per_chunk = max(1, self.chunk_rays // width)

        def work(a: int, b: int) -> None:
            # d = cos φ (sin λ x_cam + cos λ z_cam) − sin φ y_cam, in local_m (x right, y down, z forward)
            n = (b - a) * width
            d2 = np.multiply(cos_col[a:b], lon_row)
            d2 -= np.multiply(sin_col[a:b], up_row)
            d = d2.reshape(n, 3)
            hit = self._scene.run(np.broadcast_to(origin32, (n, 3)), d, dists=np.full(n, tfar, np.float32), output=1)
            slot, t = hit["primID"], hit["tfar"]  # a miss keeps t = tfar ≥ clip_start
            if t.min() < clip_start:  # Cycles' near clip: these rays start CLIP_START_M out (a surface within 5 cm)
                near = np.flatnonzero(t < clip_start)
                dn = d[near]
                again = self._scene.run(origin32 + clip_start * dn, dn, dists=np.full(len(near), tfar - clip_start, np.float32), output=1)
                slot[near] = again["primID"]
                t[near] = again["tfar"] + clip_start
            slot = np.add(slot, 1, dtype=np.intp)  # −1 (no hit) → slot 0 = sky; intp: take() would convert int32 on each call
            np.take(self._class_by_slot, slot, out=label[0, a:b].reshape(n), mode="clip")
            sky_rows = sky[0, a:b].reshape(n)
            np.equal(slot, 0, out=sky_rows)
            depth_rows = depth[0, a:b].reshape(n)
            np.copyto(depth_rows, t)
            np.copyto(depth_rows, 0, where=sky_rows)
            for c in range(3):
                np.take(normal_by_slot[c], slot, out=normal[c, a:b].reshape(n), mode="clip")
                np.take(colour_by_slot[c], slot, out=diffcol[c, a:b].reshape(n), mode="clip")

        self._map(lambda s, e: work(r0 + s, r0 + e), r1 - r0, rows_per_chunk)
        flags = self._flagger.flags(pose)
        meta = {
            "image_id": pose.image_id, "mode": "labels", "width": width, "height": height,
            **flags, "flags": flags, "render_time_s": time.perf_counter() - t0,
            "backend": "raycast", "backend_version": RAYCAST_BACKEND_VERSION, "clip_end_m": float(clip_end_m),
            "rows": [r0, r1], "pose": pose.to_dict(),
        }
        return SimPasses(**arrays, meta=meta)

    def _pixel_grid(self, width: int, R_cam_to_local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cos φ (H,), sin φ (H,), float32 (W, 3) sin λ·x_cam + cos λ·z_cam) at Cycles' sample positions."""
        key = width
        with self._lock:
            grid = self._grids.get(key)
        if grid is None:
            height = width // 2
            dx, dy = CYCLES_SAMPLE_OFFSET_PX
            lon = (np.arange(width, dtype=np.float64) + 0.5 + dx) * (2 * np.pi / width) - np.pi
            lat = np.pi * (0.5 - (np.arange(height, dtype=np.float64) + 0.5 + dy) / height)
            grid = (np.cos(lat).astype(np.float32), np.sin(lat), np.sin(lon), np.cos(lon))
            with self._lock:
                if len(self._grids) > 8:
                    self._grids.clear()
                self._grids[key] = grid
        cos_lat, sin_lat, sin_lon, cos_lon = grid
        lon_part = (sin_lon[:, None] * R_cam_to_local[:, 0] + cos_lon[:, None] * R_cam_to_local[:, 2]).astype(np.float32)
        return cos_lat, sin_lat, lon_part

    def _oriented_tables(self, camera_local_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per slot (tri_index + 1) for rays from ``camera_local_m``: normals facing the camera and
        class colours, float16 (3, M + 1), slot 0 = sky (zeros).

        A ray from the camera hits a triangle's back face exactly when the camera is behind the
        triangle's plane, so one sign per triangle replaces a dot product per pixel."""
        behind = np.einsum("ij,ij->i", camera_local_m[None, :] - self._tri_v0, self._tri_n64) < 0
        n = np.where(behind[:, None], -self._tri_n64, self._tri_n64)
        normal_by_slot = np.zeros((3, self.n_triangles + 1), np.float16)
        normal_by_slot[:, 1:] = n.T
        return normal_by_slot, self._colour_by_slot


def _output_arrays(height: int, width: int, reuse: SimPasses | None, *, zero: bool) -> dict[str, np.ndarray]:
    """The five pass arrays for H × W: ``reuse``'s when they fit, else new ones; zeroed (sky) if ``zero``."""
    if reuse is not None and reuse.label.shape == (1, height, width):
        arrays = {name: getattr(reuse, name) for name in ARRAY_SPECS}
        if zero:
            for name, a in arrays.items():
                a.fill(name == "sky_mask")
        return arrays
    make = np.zeros if zero else np.empty
    arrays = {name: make((c, height, width), dtype) for name, (dtype, c) in ARRAY_SPECS.items()}
    if zero:
        arrays["sky_mask"].fill(True)
    return arrays


def _validated_triangles(model: CityModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All class meshes → (vertices float32 (V, 3), triangles int32 (M, 3), class uint8 (M,)); a
    model with no triangles, non-finite vertices or bad indices raises :class:`CityModelError`."""
    check_renderable_model(model)
    verts, tris, classes, offset = [], [], [], 0
    for name in MESH_CLASSES:
        mesh = model.meshes[name]
        if not len(mesh.triangles):
            continue
        verts.append(mesh.vertices_local_m)
        tris.append(mesh.triangles + offset)
        classes.append(np.full(len(mesh.triangles), CLASS_BY_NAME[name].index, np.uint8))
        offset += len(mesh.vertices_local_m)
    return (np.ascontiguousarray(np.concatenate(verts), np.float32), np.ascontiguousarray(np.concatenate(tris), np.int32),
            np.concatenate(classes))
