"""The Blender backend (the reference): Cycles in one long-lived, supervised worker process at a time.

Pipeline per worker: the supervisor sends pose k+1 as soon as Blender reports pose k rendered,
then converts pose k (EXR → arrays → atomic ``.npz``, or PNG → ``.jpg``) in a background thread,
so reading, converting and storing overlap Cycles' next render. Failure handling:

* a render that errors inside Blender fails that pose; the worker lives on;
* a crashed (exit) or hung (no reply within ``timeout_s``) worker is killed, the pose is marked
  failed, a fresh worker is started and the batch resumes at the next pose;
* the worker is restarted every ``restart_every`` poses (bounds memory growth);
* after ``max_consecutive_failures`` failures in a row the rest is marked failed ("aborted");
* setup errors (bpy missing, unreadable city model) raise at once;
* workers die with their supervisor (see :mod:`blender_scripts.worker`), and scratch folders of
  dead runs are removed at start (:mod:`.scratch`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..poses import matrix_world_blender
from .job import BatchJob, BlenderNotInstalledError, RenderError
from .scratch import clean_stale_scratch, new_scratch_dir
from .settings import RenderSettings
from .worker_process import WorkerDied, WorkerFatal, WorkerProcess, WorkerTimeout

__all__ = ["backend_version", "check_available", "run", "WORKER_VERSION", "RENDER_EXTRA_HINT"]

log = logging.getLogger(__name__)

RENDER_EXTRA_HINT = 'pip install -e ".[render]"'
# Bump when blender_scripts change what a render looks like (part of every output's content key).
WORKER_VERSION = "1"


def backend_version(settings: RenderSettings) -> str:
    try:
        bpy_version = importlib.metadata.version("bpy")
    except importlib.metadata.PackageNotFoundError:
        bpy_version = "unknown"
    return f"blender {bpy_version} / worker {WORKER_VERSION}"


def check_available(settings: RenderSettings, python_executable: str | None) -> None:
    if python_executable is None and importlib.util.find_spec("bpy") is None:
        raise BlenderNotInstalledError(f"Blender's Python module bpy is not installed in this environment; install the render extra: {RENDER_EXTRA_HINT}")


# ---- conversion (runs in the supervisor's background thread) ----------------------------------
def _convert_labels(scratch_file: Path, out_path: Path, meta: dict[str, Any], settings: RenderSettings) -> None:
    from .exr import read_exr_channels
    from .passes import sim_arrays_from_channels
    from .sim_passes import SimPasses, save_sim_passes

    arrays = sim_arrays_from_channels(read_exr_channels(scratch_file))
    if arrays["label"].shape != (1, settings.height, settings.width):
        raise RenderError(f"Blender wrote {arrays['label'].shape[1:]} pixels, expected ({settings.height}, {settings.width})")
    save_sim_passes(out_path, SimPasses(**arrays, meta=meta), compress=settings.compress)


def _convert_photo(scratch_file: Path, out_path: Path, meta: dict[str, Any], settings: RenderSettings) -> None:
    from PIL import Image

    with Image.open(scratch_file) as im:
        rgb = im.convert("RGB")
    if rgb.size != (settings.width, settings.height):
        raise RenderError(f"Blender wrote {rgb.size} pixels, expected ({settings.width}, {settings.height})")
    with atomic_path(out_path) as tmp:
        rgb.save(tmp, format="JPEG", quality=settings.jpeg_quality, comment=json.dumps(meta).encode())


# ---- the batch ---------------------------------------------------------------------------------
class _Batch:
    """State of one batch: worker, pending conversion."""

    def __init__(self, job: BatchJob):
        self.job = job
        self.settings = job.settings
        self.convert = _convert_labels if job.settings.mode == "labels" else _convert_photo
        clean_stale_scratch()
        self.scratch = new_scratch_dir()
        self.log_dir = job.out_dir / ".render-logs"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-convert")
        self.pending: tuple[int, Future, float, int | None] | None = None
        self.worker: WorkerProcess | None = None
        self.ready: dict[str, Any] = {}
        self.n_workers_started = 0
        self.sent_to_worker = 0

    # -- results
    def _fail(self, i: int, reason: str) -> None:
        log.warning("render of %s failed: %s", self.job.poses[i].image_id, reason)
        self.job.finish(i, "failed", reason=reason, worker_pid=self.worker.pid if self.worker else None)

    def _collect_pending(self) -> None:
        if self.pending is None:
            return
        i, fut, render_s, pid = self.pending
        self.pending = None
        try:
            fut.result()
        except Exception as e:
            log.warning("post-processing of %s failed: %s", self.job.poses[i].image_id, e)
            self.job.finish(i, "failed", reason=f"post-processing failed: {type(e).__name__}: {e}", render_time_s=render_s, worker_pid=pid)
        else:
            self.job.finish(i, "ok", render_time_s=render_s, worker_pid=pid)

    # -- worker
    def _start_worker(self) -> None:
        attempts = 0
        while True:
            self.n_workers_started += 1
            w = WorkerProcess(self.job.model_path, self.settings, self.log_dir / f"worker-{os.getpid()}-{self.n_workers_started}.log",
                              python_executable=self.job.python_executable)
            try:
                self.ready = w.start()
                self.worker, self.sent_to_worker = w, 0
                return
            except WorkerFatal as e:
                w.kill()
                if e.kind == "bpy_missing":
                    raise BlenderNotInstalledError(f"{e} (the render worker runs {w.python_executable})") from None
                if e.kind == "city_model":
                    from ..citymodel import CityModelError

                    raise CityModelError(str(e)) from None
                raise RenderError(f"Blender worker setup failed: {e}; log: {w.log_path}") from None
            except (WorkerDied, WorkerTimeout) as e:
                w.kill()
                attempts += 1
                if attempts >= 2:
                    raise RenderError(f"Blender worker failed to start twice: {e}; log: {w.log_path}") from None

    def _drop_worker(self, graceful: bool) -> None:
        if self.worker is not None:
            self.worker.stop() if graceful else self.worker.kill()
        self.worker = None

    def _send(self, i: int) -> None:
        assert self.worker is not None
        pose = self.job.poses[i]
        ext = ".exr" if self.settings.mode == "labels" else ".png"
        self.worker.send({
            "cmd": "render", "seq": i, "image_id": pose.image_id,
            "matrix_world": matrix_world_blender(pose).tolist(),
            "out_path": str(self.scratch / f"{i}{ext}"),
            "fault": self.job.fault.fault_for(pose.image_id),
        })
        self.sent_to_worker += 1  # counts poses handed to this process

    def _on_rendered(self, i: int, msg: dict[str, Any]) -> None:
        scratch_file = Path(msg["out_path"])
        out = self.job.output_path(i)
        render_s = float(msg["render_s"])
        meta = self.job.meta(i, render_s, samples=self.settings.resolved_samples, device=self.ready.get("device"),
                             blender_version=self.ready.get("blender_version"))
        self._collect_pending()  # at most one conversion in flight (bounds scratch space)

        def convert() -> None:
            try:
                self.convert(scratch_file, out, meta, self.settings)
            finally:
                scratch_file.unlink(missing_ok=True)

        self.pending = (i, self.executor.submit(convert), render_s, self.worker.pid if self.worker else None)

    def run(self, todo: list[int]) -> None:
        s = self.settings
        k = 0  # next position in todo to send
        in_flight: int | None = None
        consecutive_failures = 0
        try:
            while k < len(todo) or in_flight is not None:
                if in_flight is None:
                    if self.worker is not None and self.sent_to_worker >= s.restart_every:
                        self._drop_worker(graceful=True)
                    if self.worker is None:
                        self._start_worker()
                    in_flight = todo[k]
                    k += 1
                    self._send(in_flight)
                assert self.worker is not None
                # a worker's first render also loads kernels and builds the BVH (GPU: minutes of JIT)
                timeout_s = s.timeout_s + (s.startup_timeout_s if self.sent_to_worker <= 1 else 0.0)
                try:
                    msg = self.worker.receive(timeout_s)
                except WorkerTimeout as e:
                    self._fail(in_flight, f"timeout: {e}; worker killed, batch resumed with a new worker")
                    self._drop_worker(graceful=False)  # kills the whole (hung) process
                    in_flight, consecutive_failures = None, consecutive_failures + 1
                except WorkerDied as e:
                    self._fail(in_flight, f"worker crashed: {e}; batch resumed with a new worker")
                    self._drop_worker(graceful=False)
                    in_flight, consecutive_failures = None, consecutive_failures + 1
                else:
                    if msg.get("seq") != in_flight:
                        continue  # stale event (cannot happen with one pose in flight; be safe)
                    if msg.get("event") == "rendered":
                        done = in_flight
                        in_flight, consecutive_failures = None, 0
                        if k < len(todo) and self.sent_to_worker < s.restart_every:
                            in_flight = todo[k]  # keep Blender busy while pose `done` is converted
                            k += 1
                            self._send(in_flight)
                        self._on_rendered(done, msg)
                    else:
                        self._fail(in_flight, f"Blender error: {msg.get('message')}")
                        in_flight, consecutive_failures = None, consecutive_failures + 1
                if consecutive_failures >= s.max_consecutive_failures:
                    last = self.job.results[todo[k - 1]]
                    for i in todo[k:]:
                        self._fail(i, f"aborted after {consecutive_failures} consecutive failures (last: {last.reason if last else '?'})")
                    break
            self._collect_pending()
            self._drop_worker(graceful=True)
        finally:
            if self.pending is not None:
                self._collect_pending()
            self._drop_worker(graceful=False)
            self.executor.shutdown(wait=True)
            shutil.rmtree(self.scratch, ignore_errors=True)


def run(job: BatchJob) -> None:
    """Render ``job.todo`` with Blender workers; every pose gets its result through ``job.finish``."""
    _Batch(job).run(job.todo)
