"""EXR channels → the per-pose arrays of the dataset (pure numpy).

Pass names are matched loosely (notes §2.1): Blender 5.0 ``Diffuse Color``/``Material Index``,
older ``DiffCol``/``IndexMA``, any view-layer prefix, any case/spacing. Outputs (labels mode):

* ``diffcol``  float16 (3, H, W), linear class colour in [0, 1], sky 0
* ``normal``   float16 (3, H, W), world (``local_m``) unit normals in [−1, 1], sky 0
* ``depth_m``  float32 (1, H, W), Euclidean distance from the camera centre in metres, sky 0
* ``label``    uint8   (1, H, W), class index (Material Index pass), sky 0
* ``sky_mask`` bool    (1, H, W), True where no surface was hit within ``clip_end``
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["PassNotFoundError", "group_channels_by_pass", "sim_arrays_from_channels", "SKY_DEPTH_THRESHOLD_M"]

SKY_DEPTH_THRESHOLD_M = 1e9  # Blender writes 1e10 for rays that hit nothing

_PASS_ALIASES: dict[str, tuple[str, ...]] = {
    "diffcol": ("diffusecolor", "diffcol", "diffusecol"),
    "normal": ("normal",),
    "depth": ("depth", "z"),
    "label": ("materialindex", "indexma"),
}
_COMPONENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "diffcol": (("r",), ("g",), ("b",)),
    "normal": (("x",), ("y",), ("z",)),
    "depth": (("z", "v", "r", "y"),),
    "label": (("x", "v", "r", "y"),),
}


class PassNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def group_channels_by_pass(channels: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{"ViewLayer.Normal.X": a, …}`` → ``{"normal": {"x": a, …}, …}`` (normalised pass names)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, arr in channels.items():
        parts = name.split(".")
        if len(parts) >= 2:
            pass_name, comp = parts[-2], parts[-1]
        else:
            pass_name, comp = parts[0], ""
        out.setdefault(_norm(pass_name), {})[_norm(comp)] = arr
    return out


def _find(grouped: dict[str, dict[str, np.ndarray]], key: str) -> np.ndarray:
    for alias in _PASS_ALIASES[key]:
        comps = grouped.get(alias)
        if comps is None:
            continue
        planes = []
        for wanted in _COMPONENTS[key]:
            hit = next((comps[c] for c in wanted if c in comps), None)
            if hit is None and len(_COMPONENTS[key]) == 1 and len(comps) == 1:
                hit = next(iter(comps.values()))
            if hit is None:
                raise PassNotFoundError(f"pass {alias!r} lacks component {wanted} (has {sorted(comps)})")
            planes.append(hit)
        return np.stack(planes, axis=0)
    raise PassNotFoundError(f"no {key} pass (looked for {_PASS_ALIASES[key]}) among passes {sorted(grouped)}")


def sim_arrays_from_channels(channels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Blender pass channels → ``diffcol, normal, depth_m, label, sky_mask`` (see module doc)."""
    grouped = group_channels_by_pass(channels)
    diffcol = _find(grouped, "diffcol").astype(np.float32)
    normal = _find(grouped, "normal").astype(np.float32)
    depth = _find(grouped, "depth").astype(np.float32)
    index = _find(grouped, "label")
    sky = ~np.isfinite(depth) | (depth >= SKY_DEPTH_THRESHOLD_M)
    depth_m = np.where(sky, np.float32(0), depth)
    sky3 = np.broadcast_to(sky, diffcol.shape)
    diffcol = np.where(sky3, np.float32(0), np.clip(diffcol, 0.0, 1.0))
    normal = np.where(sky3, np.float32(0), np.clip(normal, -1.0, 1.0))
    label = np.where(sky, 0, np.rint(index)).clip(0, 255).astype(np.uint8)
    return {
        "diffcol": diffcol.astype(np.float16),
        "normal": normal.astype(np.float16),
        "depth_m": depth_m.astype(np.float32),
        "label": label,
        "sky_mask": sky,
    }
