"""Content keys of render outputs: what made a file, so a stale one is never silently reused.

Every output stores ``meta["content_key"]`` = ``{"key": …, "pose": …, "model": …, "settings": …,
"backend": …}``: short SHA-256 digests of

* ``pose``     — the camera (centre and rotation, exact floats; the image id names the file);
* ``model``    — the bytes of the city model file;
* ``settings`` — :meth:`RenderSettings.pixel_settings` (only what changes pixels);
* ``backend``  — the backend's name and version (e.g. ``raycast 1 / embreex 4.4.0``,
  ``blender 5.0.1 / worker 1``);

and ``key``, the digest of all four. An existing output is reused only when its key equals the
one of the current request; otherwise :func:`stale_reason` names what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..poses import Pose
from .settings import RenderSettings

__all__ = ["ContentKey", "content_key", "model_file_sha256", "stale_reason", "REASON_NEW", "REASON_NO_KEY", "REASON_UNREADABLE"]

REASON_NEW = "new"
REASON_NO_KEY = "no content key (written before keys existed)"
REASON_UNREADABLE = "existing output unreadable"
_PART_REASONS = (("pose", "pose changed"), ("model", "city model changed"), ("settings", "settings changed"), ("backend", "backend changed"))
_model_hash_cache: dict[tuple[str, int, int], str] = {}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def model_file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the city model file (cached per path, size and mtime within this process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.absolute()), st.st_size, st.st_mtime_ns)
    if key not in _model_hash_cache:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _model_hash_cache[key] = h.hexdigest()
    return _model_hash_cache[key]


@dataclass(frozen=True)
class ContentKey:
    key: str
    pose: str
    model: str
    settings: str
    backend: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "pose": self.pose, "model": self.model, "settings": self.settings, "backend": self.backend}


def content_key(pose: Pose, model_sha256: str, settings: RenderSettings, backend_version: str) -> ContentKey:
    parts = {
        "pose": _digest({"center_local_m": [repr(float(v)) for v in pose.center_local_m],
                         "R_world_to_cam_opensfm": [repr(float(v)) for v in pose.R_world_to_cam_opensfm.reshape(-1)]}),
        "model": model_sha256[:32],
        "settings": _digest(settings.pixel_settings()),
        "backend": _digest(f"{settings.backend} {backend_version}"),
    }
    return ContentKey(key=_digest(parts), **parts)


def stale_reason(stored: Any, current: ContentKey) -> str | None:
    """``None`` if an output with ``stored`` (its ``meta["content_key"]``) may be reused for
    ``current``; otherwise why not (the changed parts, e.g. ``"pose changed, backend changed"``)."""
    if not isinstance(stored, dict) or "key" not in stored:
        return REASON_NO_KEY
    if stored.get("key") == current.key:
        return None
    changed = [why for part, why in _PART_REASONS if stored.get(part) != getattr(current, part)]
    return ", ".join(changed) or "content key changed"
