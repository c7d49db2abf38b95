"""``render_poses``: render a batch of poses with the backend named in the settings.

The same for every backend: inputs are checked first (a city model with no triangles or
non-finite vertices, poses from another frame, duplicate ids → one clear error, nothing written);
paths are made absolute (the Blender worker runs elsewhere); each pose's content key
(:mod:`.content_key`) decides whether its existing output is reused or rendered again (and why);
flagged poses are rendered or skipped (``on_bad_pose``); invalid poses fail on their own. Then the
backend (``s2r_data.render.<backend>_backend``: :mod:`.blender_backend`, :mod:`.raycast_backend`)
renders the rest, writing each output atomically.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..citymodel import CityModel
from ..poses import Pose
from .content_key import REASON_NEW, REASON_UNREADABLE, ContentKey, content_key, model_file_sha256, stale_reason
from .job import BatchJob, BlenderNotInstalledError, FaultInjection, RenderError, RenderResult, RenderStatus, output_path
from .pose_checks import check_renderable_model, check_same_frame, invalid_pose_reason, pose_flags
from .scratch import scratch_root
from .settings import RenderSettings

__all__ = [
    "RenderResult",
    "RenderStatus",
    "RenderError",
    "BlenderNotInstalledError",
    "FaultInjection",
    "render_poses",
    "output_path",
    "scratch_root",
    "backend_module",
    "summarize_results",
]

log = logging.getLogger(__name__)


def backend_module(name: str):
    """The module implementing backend ``name`` (``backend_version``, ``check_available``, ``run``)."""
    return importlib.import_module(f"{__package__}.{name}_backend")


def _stored_content_key(path: Path, settings: RenderSettings) -> tuple[bool, Any]:
    """(readable output of the right size?, its ``meta["content_key"]`` or None)."""
    try:
        if settings.mode == "labels":
            with np.load(path, allow_pickle=False) as z:
                if z["label"].shape != (1, settings.height, settings.width):
                    return False, None
                meta = json.loads(z["meta_json"].tobytes().decode())
        else:
            from PIL import Image

            with Image.open(path) as im:
                if im.size != (settings.width, settings.height):
                    return False, None
                meta = json.loads(im.info.get("comment", b"{}") or b"{}")
    except Exception:
        return False, None
    return True, meta.get("content_key") if isinstance(meta, dict) else None


def _why_render(path: Path, key: ContentKey, settings: RenderSettings) -> str | None:
    """``None`` to reuse the output at ``path``; otherwise why it must be rendered."""
    if not path.is_file():
        return REASON_NEW
    readable, stored = _stored_content_key(path, settings)
    if not readable:
        return REASON_UNREADABLE
    return stale_reason(stored, key)


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
) -> list[RenderResult]:
    """Render ``poses`` of the city model into ``out_dir``; one :class:`RenderResult` per pose, in order.

    Labels mode writes ``<image_id>.npz`` (see :mod:`s2r_data.render.sim_passes`), photo mode
    ``<image_id>.jpg``; ``settings.backend`` picks Blender (default) or the ray caster. Rerunning
    the same call reuses every output whose content key matches (status ``skipped_existing``) and
    renders the rest (``RenderResult.rendered_because``: ``new``, ``pose changed``, …).
    Raises :class:`~s2r_data.citymodel.CityModelError` (unreadable model, no triangles, non-finite
    vertices), :class:`~.pose_checks.FrameMismatchError` (poses made in another city's frame),
    :class:`BlenderNotInstalledError` (no bpy), :class:`RenderError` (worker cannot start),
    ``ValueError`` (duplicate image ids), all before anything is written. Invalid single poses
    (non-finite centre, not a rotation, unsafe id) fail on their own.
    ``python_executable`` overrides the interpreter of the Blender worker (default: this one).
    ``on_result`` is called with each pose's final result as soon as it is known (files written),
    in completion order (reused, skipped and invalid poses first).
    """
    model_path = Path(os.path.abspath(city_model_path))  # children run elsewhere: never hand them relative paths
    out_dir = Path(os.path.abspath(out_dir))
    model = CityModel.load(model_path)  # CityModelError names the file and the fix
    check_renderable_model(model, label=f"city model {model_path}")
    poses = list(poses)
    ids = [p.image_id for p in poses]
    if len(set(ids)) != len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})[:5]
        raise ValueError(f"duplicate image ids in poses: {dup}; each pose needs a unique image_id (its output file name)")
    check_same_frame(model, poses, model_label=f"city model {model_path}")
    backend = backend_module(settings.backend)
    version = backend.backend_version(settings)
    model_sha = model_file_sha256(model_path)
    flags = pose_flags(model, poses)
    keys = [content_key(p, model_sha, settings, version) for p in poses]
    results: list[RenderResult | None] = [None] * len(poses)
    because = [""] * len(poses)
    todo: list[int] = []
    for i, pose in enumerate(poses):
        bad = invalid_pose_reason(pose)
        raised = [k for k, v in flags[i].items() if v]
        out = output_path(out_dir, pose.image_id, settings)
        why = None if bad is not None else _why_render(out, keys[i], settings)
        if bad is not None:
            results[i] = RenderResult(pose.image_id, "failed", None, f"invalid pose: {bad}", flags[i])
        elif why is None:
            results[i] = RenderResult(pose.image_id, "skipped_existing", out, "output with the same content key exists", flags[i])
        elif raised and settings.on_bad_pose == "skip":
            results[i] = RenderResult(pose.image_id, "skipped_flagged", None, "flagged: " + ", ".join(raised) + " (on_bad_pose='skip')", flags[i])
        else:
            if raised:
                log.warning("pose %s is flagged %s; rendering it anyway (on_bad_pose='render')", pose.image_id, raised)
            because[i] = why
            todo.append(i)
    if on_result is not None:
        for r in results:
            if r is not None:
                on_result(r)
    if todo:
        backend.check_available(settings, python_executable)
        out_dir.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc=f"render {settings.backend} {settings.mode} {settings.width}px", unit="pano", disable=not progress) as bar:

            def done(r: RenderResult) -> None:
                bar.update(1)
                if on_result is not None:
                    on_result(r)

            backend.run(BatchJob(
                model_path=model_path, model=model, model_sha256=model_sha, poses=poses, flags=flags, keys=keys,
                rendered_because=because, todo=todo, out_dir=out_dir, settings=settings, backend_version=version,
                results=results, on_done=done, fault=fault_injection or FaultInjection(), python_executable=python_executable,
            ))
    missing = [poses[i].image_id for i, r in enumerate(results) if r is None]
    if missing:  # defensive: every pose gets a result
        raise RenderError(f"internal error: no result for {missing[:5]}")
    return results  # type: ignore[return-value]


def summarize_results(results: Sequence[RenderResult]) -> str:
    """One line for people: how many outputs were reused, rendered (and why), skipped, failed."""
    status = Counter(r.status for r in results)
    parts = [f"reused {status.get('skipped_existing', 0)} existing output(s)"]
    why = Counter(r.rendered_because for r in results if r.status == "ok")
    rendered = f"rendered {status.get('ok', 0)}"
    if why:
        rendered += " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(why.items(), key=lambda kv: -kv[1])) + ")"
    parts.append(rendered)
    if status.get("skipped_flagged"):
        parts.append(f"skipped {status['skipped_flagged']} flagged pose(s)")
    parts.append(f"failed {status.get('failed', 0)}")
    return "; ".join(parts)
