"""The per-pose render output (labels mode): :class:`SimPasses`, saved as ``<image_id>.npz``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path

__all__ = ["SimPasses", "SimPassesError", "save_sim_passes", "load_sim_passes", "ARRAY_SPECS"]

# name → (dtype, channels)
ARRAY_SPECS: dict[str, tuple[np.dtype, int]] = {
    "diffcol": (np.dtype(np.float16), 3),
    "normal": (np.dtype(np.float16), 3),
    "depth_m": (np.dtype(np.float32), 1),
    "label": (np.dtype(np.uint8), 1),
    "sky_mask": (np.dtype(bool), 1),
}


class SimPassesError(ValueError):
    pass


@dataclass
class SimPasses:
    """Pixel-aligned simulated passes of one panorama (all (C, H, W), row 0 on top)."""

    diffcol: np.ndarray  # float16 (3, H, W), linear class colour in [0, 1], sky 0
    normal: np.ndarray  # float16 (3, H, W), world (local_m) unit normal, sky 0
    depth_m: np.ndarray  # float32 (1, H, W), Euclidean distance to the camera centre, sky 0
    label: np.ndarray  # uint8 (1, H, W), class index (s2r_data.citymodel.CLASSES), sky 0
    sky_mask: np.ndarray  # bool (1, H, W)
    meta: dict[str, Any] = field(default_factory=dict)  # image_id, flags, render_time_s, pose, ...

    def __post_init__(self) -> None:
        shape_hw = None
        for name, (dtype, c) in ARRAY_SPECS.items():
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != 3 or a.shape[0] != c:
                got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise SimPassesError(f"SimPasses.{name} must be {dtype} ({c}, H, W); got {got}")
            if shape_hw is None:
                shape_hw = a.shape[1:]
            elif a.shape[1:] != shape_hw:
                raise SimPassesError(f"SimPasses.{name} is {a.shape[1:]} but diffcol is {shape_hw}: passes must be pixel-aligned")

    @property
    def image_id(self) -> str:
        return str(self.meta.get("image_id", ""))

    @property
    def height(self) -> int:
        return int(self.label.shape[1])

    @property
    def width(self) -> int:
        return int(self.label.shape[2])

    def sim7(self) -> np.ndarray:
        """float16 (7, H, W) = DiffCol(3) + Normal(3) + Depth m(1): the dataset's ``sim`` layout."""
        return np.concatenate([self.diffcol, self.normal, self.depth_m.astype(np.float16)], axis=0)


def save_sim_passes(path: str | Path, passes: SimPasses, *, compress: bool = False, durable: bool = False) -> Path:
    """Write ``path`` (.npz) atomically: a killed process never leaves a partial file.

    Not fsynced unless ``durable``: a render output is a cache, keyed by what made it, and checks
    itself (zip directory at the end, CRC-32 per array): an output damaged by an OS crash or power
    loss is unreadable and rendered again (:func:`s2r_data.render.render_poses` says so), while
    the fsync would cost more CPU than the cast's own overhead at 2048×1024.
    """
    arrays = {name: getattr(passes, name) for name in ARRAY_SPECS}
    arrays["meta_json"] = np.frombuffer(json.dumps(passes.meta).encode(), dtype=np.uint8)
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return Path(path)


def load_sim_passes(path: str | Path) -> SimPasses:
    """Read a ``<image_id>.npz`` written by :func:`s2r_data.render.render_poses` (validated)."""
    path = Path(path)
    if not path.is_file():
        raise SimPassesError(f"{path} does not exist; render it with s2r_data.render.render_poses")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in ARRAY_SPECS}
            meta = json.loads(z["meta_json"].tobytes().decode())
    except Exception as e:
        raise SimPassesError(f"{path} is not a readable SimPasses .npz ({type(e).__name__}: {e}); delete it and render again") from e
    return SimPasses(**arrays, meta=meta)
