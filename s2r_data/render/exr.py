"""Read a multilayer (multi-part) EXR written by Blender into ``{channel name: float32 (H, W)}``.

Blender 5.0 writes one part per pass (``ViewLayer.Depth``, …) with channels named
``ViewLayer.<Pass>.<Component>``; arrays come back top row first. Uses the OpenEXR ≥ 3 Python
bindings (the render extra); no bpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_exr_channels", "ExrReadError"]


class ExrReadError(RuntimeError):
    pass


def read_exr_channels(path: str | Path) -> dict[str, np.ndarray]:
    try:
        import OpenEXR
    except ImportError as e:
        raise ExrReadError(f"reading Blender's EXR passes needs the OpenEXR package: pip install -e \".[render]\" ({e})") from e
    path = Path(path)
    channels: dict[str, np.ndarray] = {}
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            for part in f.parts:
                for name, ch in part.channels.items():
                    channels[name] = np.asarray(ch.pixels, dtype=np.float32)
    except Exception as e:
        raise ExrReadError(f"cannot read EXR {path} ({type(e).__name__}: {e})") from e
    if not channels:
        raise ExrReadError(f"EXR {path} has no channels")
    return channels
