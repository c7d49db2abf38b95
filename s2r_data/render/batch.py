"""``render_poses``: render a batch of poses with one long-lived Blender worker at a time.

Pipeline per worker: the supervisor sends pose k+1 as soon as Blender reports pose k rendered,
then converts pose k (EXR → arrays → atomic ``.npz``, or PNG → ``.jpg``) in a background thread,
so reading, converting and storing overlap Cycles' next render. Failure handling:

* a pose whose output already exists (and matches the settings' size) is skipped (resumable);
* a render that errors inside Blender fails that pose; the worker lives on;
* a crashed (exit) or hung (no reply within ``timeout_s``) worker is killed, the pose is marked
  failed, a fresh worker is started and the batch resumes at the next pose;
* the worker is restarted every ``restart_every`` poses (bounds memory growth);
* after ``max_consecutive_failures`` failures in a row the rest is marked failed ("aborted");
* setup errors (bpy missing, unreadable city model) raise at once.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from ..atomic import atomic_path
from ..citymodel import CityModel
from ..poses import Pose, matrix_world_blender
from .pose_checks import invalid_pose_reason, pose_flags
from .settings import RenderSettings
from .worker_process import WorkerDied, WorkerFatal, WorkerProcess, WorkerTimeout

if TYPE_CHECKING:
    from .handles import WorkerKeeper

__all__ = [
    "RenderResult",
    "RenderStatus",
    "RenderError",
    "BlenderNotInstalledError",
    "FaultInjection",
    "render_poses",
    "output_path",
    "scratch_root",
]

log = logging.getLogger(__name__)

RenderStatus = Literal["ok", "skipped_existing", "skipped_flagged", "failed"]
RENDER_EXTRA_HINT = 'pip install -e ".[render]"'


class RenderError(RuntimeError):
    pass


class BlenderNotInstalledError(RenderError):
    pass


@dataclass(frozen=True)
class FaultInjection:
    """Test-only: make the worker exit (``crash_on``) or hang (``hang_on``) on these image ids."""

    crash_on: frozenset[str] = frozenset()
    hang_on: frozenset[str] = frozenset()

    def fault_for(self, image_id: str) -> str | None:
        return "crash" if image_id in self.crash_on else "hang" if image_id in self.hang_on else None


@dataclass
class RenderResult:
    image_id: str
    status: RenderStatus
    path: Path | None  # the output file (also for skipped_existing); None if failed/skipped_flagged
    reason: str = ""  # why failed / skipped
    flags: dict[str, bool] = field(default_factory=dict)  # outside_bounds, inside_building, below_ground
    render_time_s: float | None = None  # inside Blender, around render()
    worker_pid: int | None = None


def output_path(out_dir: Path, image_id: str, settings: RenderSettings) -> Path:
    return Path(out_dir) / f"{image_id}{settings.output_suffix}"


def scratch_root() -> Path:
    """/dev/shm when writable (EXRs never touch disk), else the system temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def _existing_output_ok(path: Path, settings: RenderSettings) -> bool:
    if not path.is_file():
        return False
    try:
        if settings.mode == "labels":
            with np.load(path, allow_pickle=False) as z:
                return z["label"].shape == (1, settings.height, settings.width) and "meta_json" in z.files
        from PIL import Image

        with Image.open(path) as im:
            return im.size == (settings.width, settings.height)
    except Exception:
        return False


def _check_bpy_installed(python_executable: str | None) -> None:
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
    """State of one ``render_poses`` call: worker, pending conversion, results."""

    def __init__(self, model_path: Path, poses: Sequence[Pose], flags: list[dict[str, bool]], out_dir: Path,
                 settings: RenderSettings, results: list[RenderResult | None], fault: FaultInjection,
                 python_executable: str | None, on_done: Callable[[RenderResult], None],
                 keeper: "WorkerKeeper | None" = None):
        self.model_path, self.poses, self.flags, self.out_dir = model_path, poses, flags, out_dir
        self.settings, self.results, self.fault = settings, results, fault
        self.python_executable = python_executable
        self.on_done = on_done
        self.convert = _convert_labels if settings.mode == "labels" else _convert_photo
        self.scratch = Path(tempfile.mkdtemp(prefix="s2r-render-", dir=scratch_root()))
        self.log_dir = out_dir / ".render-logs"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-convert")
        self.pending: tuple[int, Future] | None = None
        self.worker: WorkerProcess | None = None
        self.n_workers_started = 0
        self.sent_to_worker = 0
        self.keeper = keeper

    # -- results
    def _fail(self, i: int, reason: str) -> None:
        log.warning("render of %s failed: %s", self.poses[i].image_id, reason)
        self.results[i] = RenderResult(self.poses[i].image_id, "failed", None, reason, self.flags[i], None, self.worker.pid if self.worker else None)
        self.on_done(self.results[i])

    def _collect_pending(self) -> None:
        if self.pending is None:
            return
        i, fut = self.pending
        self.pending = None
        try:
            fut.result()
        except Exception as e:
            self.results[i] = RenderResult(self.poses[i].image_id, "failed", None, f"post-processing failed: {type(e).__name__}: {e}", self.flags[i])
            log.warning("post-processing of %s failed: %s", self.poses[i].image_id, e)
        self.on_done(self.results[i])  # type: ignore[arg-type]

    # -- worker
    def _start_worker(self) -> None:
        kept = self.keeper.take() if self.keeper is not None else None
        if kept is not None:  # the live worker of an earlier batch (scene built, kernels loaded)
            (self.worker, self.sent_to_worker), self.ready = kept, kept[0].ready
            return
        attempts = 0
        while True:
            self.n_workers_started += 1
            w = WorkerProcess(self.model_path, self.settings, self.log_dir / f"worker-{os.getpid()}-{self.n_workers_started}.log",
                              python_executable=self.python_executable)
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
        pose = self.poses[i]
        ext = ".exr" if self.settings.mode == "labels" else ".png"
        self.worker.send({
            "cmd": "render", "seq": i, "image_id": pose.image_id,
            "matrix_world": matrix_world_blender(pose).tolist(),
            "out_path": str(self.scratch / f"{i}{ext}"),
            "fault": self.fault.fault_for(pose.image_id),
        })
        self.sent_to_worker += 1  # counts poses handed to this process

    def _meta(self, i: int, render_s: float) -> dict[str, Any]:
        s = self.settings
        return {
            "image_id": self.poses[i].image_id, "mode": s.mode, "width": s.width, "height": s.height,
            **self.flags[i], "render_time_s": render_s, "samples": s.resolved_samples, "clip_end_m": s.clip_end_m,
            "device": self.ready.get("device"), "blender_version": self.ready.get("blender_version"),
            "city_model": str(self.model_path), "pose": self.poses[i].to_dict(),
            "rendered_at_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _on_rendered(self, i: int, msg: dict[str, Any]) -> None:
        scratch_file = Path(msg["out_path"])
        out = output_path(self.out_dir, self.poses[i].image_id, self.settings)
        render_s = float(msg["render_s"])
        self.results[i] = RenderResult(self.poses[i].image_id, "ok", out, "", self.flags[i], render_s, self.worker.pid if self.worker else None)
        meta = self._meta(i, render_s)
        self._collect_pending()  # at most one conversion in flight (bounds scratch space)

        def job() -> None:
            try:
                self.convert(scratch_file, out, meta, self.settings)
            finally:
                scratch_file.unlink(missing_ok=True)

        self.pending = (i, self.executor.submit(job))

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
                    rest = todo[k:]
                    for i in rest:
                        self._fail(i, f"aborted after {consecutive_failures} consecutive failures (last: {self.results[todo[k - 1]].reason})")  # type: ignore[union-attr]
                    break
            self._collect_pending()
            if self.keeper is not None and self.worker is not None:
                self.keeper.keep(self.worker, self.sent_to_worker)  # alive for the next batch
                self.worker = None
            self._drop_worker(graceful=True)
        finally:
            if self.pending is not None:
                self._collect_pending()
            self._drop_worker(graceful=False)
            self.executor.shutdown(wait=True)
            shutil.rmtree(self.scratch, ignore_errors=True)


def render_poses(
    city_model_path: str | os.PathLike,
    poses: Sequence[Pose],
    out_dir: str | os.PathLike,
    settings: RenderSettings = RenderSettings(),
    progress: bool = True,
    *,
    fault_injection: FaultInjection | None = None,
    python_executable: str | None = None,
    on_result: Callable[[RenderResult], None] | None = None,
    model: CityModel | None = None,
    worker_keeper: "WorkerKeeper | None" = None,
) -> list[RenderResult]:
    """Render ``poses`` of the city model into ``out_dir``; one :class:`RenderResult` per pose, in order.

    Labels mode writes ``<image_id>.npz`` (see :mod:`s2r_data.render.sim_passes`), photo mode
    ``<image_id>.jpg``. Rerunning the same call renders only what is missing. Raises
    :class:`~s2r_data.citymodel.CityModelError` (unreadable model), :class:`BlenderNotInstalledError`
    (no bpy), :class:`RenderError` (worker cannot start), ``ValueError`` (duplicate image ids).
    ``python_executable`` overrides the interpreter of the worker (default: this one).
    ``on_result`` is called with each pose's final result as soon as it is known (files written),
    in completion order (skipped and invalid poses first).
    ``model``: the city model already loaded from ``city_model_path``; ``worker_keeper``: where the
    Blender worker is taken from and left alive at the end (:class:`s2r_data.render.handles.WorkerKeeper`,
    one per worker-local render handle), instead of a worker started and stopped per call.
    """
    model_path = Path(city_model_path)
    if model is None:
        model = CityModel.load(model_path)  # CityModelError names the file and the fix
    out_dir = Path(out_dir)
    poses = list(poses)
    ids = [p.image_id for p in poses]
    if len(set(ids)) != len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})[:5]
        raise ValueError(f"duplicate image ids in poses: {dup}; each pose needs a unique image_id (its output file name)")
    flags = pose_flags(model, poses)
    results: list[RenderResult | None] = [None] * len(poses)
    todo: list[int] = []
    for i, pose in enumerate(poses):
        bad = invalid_pose_reason(pose)
        raised = [k for k, v in flags[i].items() if v]
        out = output_path(out_dir, pose.image_id, settings)
        if bad is not None:
            results[i] = RenderResult(pose.image_id, "failed", None, f"invalid pose: {bad}", flags[i])
        elif _existing_output_ok(out, settings):
            results[i] = RenderResult(pose.image_id, "skipped_existing", out, "output exists", flags[i])
        elif raised and settings.on_bad_pose == "skip":
            results[i] = RenderResult(pose.image_id, "skipped_flagged", None, "flagged: " + ", ".join(raised) + " (on_bad_pose='skip')", flags[i])
        else:
            if raised:
                log.warning("pose %s is flagged %s; rendering it anyway (on_bad_pose='render')", pose.image_id, raised)
            todo.append(i)
    if on_result is not None:
        for r in results:
            if r is not None:
                on_result(r)
    if todo:
        _check_bpy_installed(python_executable)
        out_dir.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc=f"render {settings.mode} {settings.width}px", unit="pano", disable=not progress) as bar:

            def done(r: RenderResult) -> None:
                bar.update(1)
                if on_result is not None:
                    on_result(r)

            _Batch(model_path, poses, flags, out_dir, settings, results, fault_injection or FaultInjection(),
                   python_executable, on_done=done, keeper=worker_keeper).run(todo)
    missing = [poses[i].image_id for i, r in enumerate(results) if r is None]
    if missing:  # defensive: every pose gets a result
        raise RenderError(f"internal error: no result for {missing[:5]}")
    return results  # type: ignore[return-value]
