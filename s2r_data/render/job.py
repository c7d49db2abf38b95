"""What :func:`~s2r_data.render.batch.render_poses` hands a backend: :class:`BatchJob`, and the
per-pose :class:`RenderResult` every backend reports. Backends (one module each,
``<name>_backend.py``) expose ``backend_version(settings) -> str``,
``check_available(settings, python_executable) -> None`` and ``run(job) -> None``."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from ..citymodel import CityModel
from ..poses import Pose
from .content_key import ContentKey
from .settings import RenderSettings

__all__ = ["RenderResult", "RenderStatus", "RenderError", "BlenderNotInstalledError", "FaultInjection", "BatchJob", "output_path"]

RenderStatus = Literal["ok", "skipped_existing", "skipped_flagged", "failed"]


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
    status: RenderStatus  # skipped_existing = an output with the same content key was reused
    path: Path | None  # the output file (also for skipped_existing); None if failed/skipped_flagged
    reason: str = ""  # why failed / skipped
    flags: dict[str, bool] = field(default_factory=dict)  # outside_bounds, inside_building, below_ground
    render_time_s: float | None = None  # inside the backend, around the render of this pose
    worker_pid: int | None = None
    rendered_because: str = ""  # for poses sent to the backend: "new", or what changed since the existing output


def output_path(out_dir: Path, image_id: str, settings: RenderSettings) -> Path:
    return Path(out_dir) / f"{image_id}{settings.output_suffix}"


@dataclass
class BatchJob:
    """One ``render_poses`` call, validated: absolute paths, flags and content keys per pose, and
    ``todo`` (indices into ``poses``) for the backend to render."""

    model_path: Path  # absolute
    model: CityModel
    model_sha256: str  # of the model file
    poses: Sequence[Pose]
    flags: list[dict[str, bool]]
    keys: list[ContentKey]
    rendered_because: list[str]
    todo: list[int]
    out_dir: Path  # absolute
    settings: RenderSettings
    backend_version: str
    results: list[RenderResult | None]
    on_done: Callable[[RenderResult], None]
    fault: FaultInjection = field(default_factory=FaultInjection)
    python_executable: str | None = None

    def output_path(self, i: int) -> Path:
        return output_path(self.out_dir, self.poses[i].image_id, self.settings)

    def meta(self, i: int, render_time_s: float, **backend_fields: Any) -> dict[str, Any]:
        """The ``meta`` every output of pose ``i`` stores (both backends), plus ``backend_fields``."""
        s = self.settings
        return {
            "image_id": self.poses[i].image_id, "mode": s.mode, "width": s.width, "height": s.height,
            **self.flags[i], "render_time_s": render_time_s, "clip_end_m": s.clip_end_m,
            "backend": s.backend, "backend_version": self.backend_version,
            "content_key": self.keys[i].to_dict(), "rendered_because": self.rendered_because[i],
            "city_model": str(self.model_path), "pose": self.poses[i].to_dict(),
            "rendered_at_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **backend_fields,
        }

    def finish(self, i: int, status: RenderStatus, *, reason: str = "", render_time_s: float | None = None,
               worker_pid: int | None = None) -> RenderResult:
        """Record pose ``i``'s final result (its file, if any, is written) and report it."""
        r = RenderResult(self.poses[i].image_id, status, self.output_path(i) if status == "ok" else None, reason,
                         self.flags[i], render_time_s, worker_pid, self.rendered_because[i])
        self.results[i] = r
        self.on_done(r)
        return r
