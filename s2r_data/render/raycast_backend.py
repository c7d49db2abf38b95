"""The ray-cast backend: :class:`~s2r_data.render.raycast.RaycastScene` in this process, labels mode.

One scene (Embree BVH) per process and city model, kept for later batches of the same model
(:func:`scene_for`); ``settings.threads`` threads cast each panorama; pose k's ``.npz`` is written
in a background thread while pose k+1 is cast (two sets of output arrays, reused).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from ..citymodel import CityModel
from .job import BatchJob
from .raycast import RAYCAST_BACKEND_VERSION, RaycastScene
from .settings import RenderSettings
from .sim_passes import SimPasses, save_sim_passes

__all__ = ["backend_version", "check_available", "run", "scene_for"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cached: tuple[tuple[str, int], RaycastScene] | None = None


def backend_version(settings: RenderSettings) -> str:
    return f"raycast {RAYCAST_BACKEND_VERSION} / embreex {importlib.metadata.version('embreex')}"


def check_available(settings: RenderSettings, python_executable: str | None) -> None:
    import embreex  # noqa: F401  (a core dependency; an ImportError here names the package)


def scene_for(model: CityModel, model_sha256: str, threads: int) -> RaycastScene:
    """The process's scene for this model (built on first use, then reused)."""
    global _cached
    key = (model_sha256, threads)
    with _lock:
        if _cached is None or _cached[0] != key:  # the old scene stops its threads when no call uses it any more
            scene = RaycastScene(model, threads=threads)
            log.info("ray-cast scene: %d triangles, BVH built in %.2f s, %d threads", scene.n_triangles, scene.build_s, scene.threads)
            _cached = (key, scene)
        return _cached[1]


def run(job: BatchJob) -> None:
    """Render ``job.todo``; every pose gets its result through ``job.finish``."""
    s = job.settings
    if not job.todo:
        return
    scene = scene_for(job.model, job.model_sha256, s.resolved_threads)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raycast-write")
    pending: tuple[int, Future, SimPasses, float] | None = None
    spare: SimPasses | None = None  # arrays of the pose before the one being written: reused

    def collect() -> SimPasses | None:
        nonlocal pending
        if pending is None:
            return None
        i, fut, passes, render_s = pending
        pending = None
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - one unwritable output fails that pose, not the batch
            log.warning("writing the render of %s failed: %s", job.poses[i].image_id, e)
            job.finish(i, "failed", reason=f"writing the output failed: {type(e).__name__}: {e}", render_time_s=render_s)
        else:
            job.finish(i, "ok", render_time_s=render_s)
        return passes

    try:
        for i in job.todo:
            t0 = time.perf_counter()
            try:
                passes = scene.render_into(job.poses[i], s.width, clip_end_m=s.clip_end_m, out=spare)
            except Exception as e:  # noqa: BLE001 - e.g. an invalid pose: that pose fails
                job.finish(i, "failed", reason=f"{type(e).__name__}: {e}")
                continue
            render_s = time.perf_counter() - t0
            passes.meta = job.meta(i, render_s, threads=scene.threads, device="cpu:embree")
            spare = collect()
            pending = (i, writer.submit(save_sim_passes, job.output_path(i), passes, compress=s.compress), passes, render_s)
        collect()
    finally:
        collect()
        writer.shutdown(wait=True)
