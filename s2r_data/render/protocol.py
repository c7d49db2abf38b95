"""Supervisor ↔ Blender-worker protocol: one JSON object per line, tagged with a prefix.

The worker (``python -m blender_scripts.worker``) reads commands on stdin and writes events on
its *original* stdout; it redirects file descriptor 1 to stderr before importing bpy, so Blender's
own prints ("Fra:1 Mem: …", "Saved: …") never mix with events. Lines without :data:`PREFIX`
are ignored by both sides (they are logged).

Commands (supervisor → worker)::

    {"cmd": "init", "city_model_path": str, "settings": RenderSettings.to_dict()}
    {"cmd": "render", "seq": int, "image_id": str, "matrix_world": 4×4 rows, "out_path": str,
     "fault": null | "crash" | "hang"}          # fault: test-only fault injection
    {"cmd": "quit"}

Events (worker → supervisor)::

    {"event": "ready", "blender_version": str, "device": str, "import_s": float, "scene_build_s": float}
    {"event": "rendered", "seq": int, "image_id": str, "out_path": str, "render_s": float}
    {"event": "error", "seq": int, "image_id": str, "message": str}     # this pose failed, worker lives on
    {"event": "fatal", "kind": str, "message": str}                    # worker exits next

``render_s`` is measured inside Blender around ``bpy.ops.render.render(write_still=True)`` (render
plus writing the scratch file). Pure module: imported by both sides, imports neither bpy nor numpy.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["PREFIX", "encode", "decode", "FATAL_BPY_MISSING", "FATAL_CITY_MODEL", "FATAL_INIT"]

PREFIX = "S2R-RENDER "
FATAL_BPY_MISSING = "bpy_missing"
FATAL_CITY_MODEL = "city_model"
FATAL_INIT = "init"


def encode(message: dict[str, Any]) -> str:
    """Message → one protocol line (with the trailing newline)."""
    return PREFIX + json.dumps(message, separators=(",", ":")) + "\n"


def decode(line: str) -> dict[str, Any] | None:
    """Protocol line → message; ``None`` for any other line (Blender chatter, blank lines)."""
    line = line.strip()
    if not line.startswith(PREFIX.strip()):
        return None
    try:
        msg = json.loads(line[len(PREFIX.strip()) :])
    except json.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None
