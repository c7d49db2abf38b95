"""Worker-local render handles: a city model and its render process, loaded once per process.

A render task (a batch of poses) in a long-lived worker process — a Dask worker, or the flow
process with the thread runner — should not load the city model and start a Blender process
(interpreter, ``import bpy``, scene build, first-frame kernel setup: seconds) for every batch.
:func:`render_handle` checks a handle out of a process-wide cache keyed by the **content hash of
the city model file** and the render settings, and puts it back afterwards; the next batch of the
same city in this process gets the same loaded model and the same live Blender worker.

* :class:`RenderHandle` is what a backend provides: ``render(poses, out_dir) -> [RenderResult]``
  and ``close()``. :class:`BlenderHandle` keeps today's Blender path (``render_poses``) with one
  live worker (:class:`WorkerKeeper`); it is also the handle of any backend without its own (the
  loaded model is still reused). The ray caster needs none: it keeps its Embree BVH per process
  and model itself (:func:`s2r_data.render.raycast_backend.scene_for`). A backend with other
  per-process state registers its handle class in :data:`HANDLE_TYPES` under
  ``RenderSettings.backend``'s name.
* One handle serves one batch at a time; concurrent batches in one process (threads) get one
  handle each. At most :data:`MAX_IDLE_HANDLES` idle handles stay alive per process (least
  recently used closed first).
* :func:`close_all` stops every idle handle's process. It runs at interpreter exit (``atexit``)
  and at multiprocessing-child exit (Dask's worker processes). A worker process killed outright
  takes its Blender children with it: they exit when their stdin (a pipe from this process)
  closes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from ..poses import Pose
from .content_key import model_file_sha256
from .settings import RenderSettings

__all__ = [
    "RenderHandle",
    "BlenderHandle",
    "WorkerKeeper",
    "HANDLE_TYPES",
    "MAX_IDLE_HANDLES",
    "render_handle",
    "close_all",
    "handle_stats",
    "model_content_hash",
]

log = logging.getLogger(__name__)

MAX_IDLE_HANDLES = 2


class RenderHandle(Protocol):
    def render(self, poses: Sequence[Pose], out_dir: str | os.PathLike, *, on_result: Callable | None = None) -> list:
        ...

    def close(self, wait: bool = True) -> None:
        ...


class WorkerKeeper:
    """Holds one live Blender worker between ``render_poses`` calls (``take`` / ``keep``)."""

    def __init__(self) -> None:
        self._kept: tuple[Any, int] | None = None
        self.started = 0  # workers this keeper handed out fresh (for tests and statistics)

    def take(self) -> tuple[Any, int] | None:
        """The kept worker and the poses already sent to it, or None (the batch starts one)."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[0].proc is not None and kept[0].proc.poll() is None:
            return kept
        self.started += 1
        return None

    def keep(self, worker: Any, poses_sent: int) -> None:
        self.close()
        self._kept = (worker, poses_sent)

    @property
    def pid(self) -> int | None:
        return self._kept[0].pid if self._kept is not None else None

    def close(self, wait: bool = True) -> None:
        if self._kept is not None:
            worker, self._kept = self._kept[0], None
            if wait:
                worker.stop()
            else:  # at process exit: ask it to quit (stdin closed too) and let it finish on its own
                worker.send({"cmd": "quit"})
                try:
                    worker.proc.stdin.close()
                except OSError:
                    pass


class BlenderHandle:
    """Today's Blender path: the loaded city model and one live Blender worker."""

    def __init__(self, model_path: Path, settings: RenderSettings):
        from ..citymodel import CityModel

        self.model_path = Path(model_path)
        self.settings = settings
        self.model = CityModel.load(self.model_path)
        self.keeper = WorkerKeeper()

    def render(self, poses: Sequence[Pose], out_dir: str | os.PathLike, *, on_result: Callable | None = None) -> list:
        from .batch import render_poses

        return render_poses(self.model_path, poses, out_dir, self.settings, progress=False, on_result=on_result,
                            model=self.model, worker_keeper=self.keeper)

    def close(self, wait: bool = True) -> None:
        self.keeper.close(wait)


HANDLE_TYPES: dict[str, Callable[[Path, RenderSettings], RenderHandle]] = {"blender": BlenderHandle}

_lock = threading.Lock()
_idle: "OrderedDict[tuple, list[RenderHandle]]" = OrderedDict()
_stats = {"created": 0, "reused": 0, "closed": 0}


def model_content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the city model file (hashed once per path, size and mtime in this process)."""
    return model_file_sha256(Path(path).resolve())


def _key(model_path: Path, settings: RenderSettings) -> tuple:
    backend = getattr(settings, "backend", "blender")
    return (backend, model_content_hash(model_path), tuple(sorted(settings.to_dict().items())))


@contextlib.contextmanager
def render_handle(model_path: str | os.PathLike, settings: RenderSettings) -> Iterator[RenderHandle]:
    """A render handle for this city model (by content) and these settings, exclusively for the
    block; reused from this process's cache when one is idle, created otherwise."""
    key = _key(Path(model_path), settings)
    with _lock:
        idle = _idle.get(key)
        handle = idle.pop() if idle else None
        if idle is not None and not idle:
            del _idle[key]
        _stats["reused" if handle is not None else "created"] += 1
    if handle is None:
        handle = HANDLE_TYPES.get(key[0], BlenderHandle)(Path(model_path), settings)
    ok = False
    try:
        yield handle
        ok = True
    finally:
        if ok:
            _put_back(key, handle)
        else:
            _close(handle)  # its process may be in any state after an error


def _close(handle: RenderHandle, wait: bool = True) -> None:
    try:
        handle.close(wait)
    except Exception as e:  # noqa: BLE001 - closing must not hide the caller's error
        log.warning("closing a render handle failed: %s", e)
    with _lock:
        _stats["closed"] += 1


def _put_back(key: tuple, handle: RenderHandle) -> None:
    evicted = []
    with _lock:
        _idle.setdefault(key, []).append(handle)
        _idle.move_to_end(key)
        while sum(len(v) for v in _idle.values()) > MAX_IDLE_HANDLES:
            oldest = next(iter(_idle))
            evicted.append(_idle[oldest].pop(0))
            if not _idle[oldest]:
                del _idle[oldest]
    for h in evicted:
        _close(h)


def close_all(wait: bool = True) -> int:
    """Close every idle handle of this process (stops their Blender workers; ``wait=False``: only
    tells them to quit, as at process exit, so a Dask worker exits at once); returns how many."""
    with _lock:
        handles = [h for v in _idle.values() for h in v]
        _idle.clear()
    for h in handles:
        _close(h, wait)
    return len(handles)


def handle_stats() -> dict[str, int]:
    """Handles created, reused and closed in this process so far, and how many are idle now."""
    with _lock:
        return {**_stats, "idle": sum(len(v) for v in _idle.values())}


atexit.register(close_all, wait=False)
try:  # multiprocessing children (Dask's spawned workers) exit through multiprocessing's finalizers
    from multiprocessing import util as _mp_util

    _mp_util.Finalize(None, close_all, kwargs={"wait": False}, exitpriority=10)
except Exception:  # pragma: no cover - multiprocessing is always there on CPython
    pass
