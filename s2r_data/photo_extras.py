"""Photo-only meshes beside a city model: what stand-in photos show but the city model does not.

The realistic stand-in world (:mod:`s2r_data.mapillary.standin_world`) puts trees, parked
vehicles, poles and people along its streets. They appear in the stand-in *photos* (the
renderer's photo mode) and nowhere else: the :class:`~s2r_data.citymodel.CityModel` class table,
the label passes and the dataset are unchanged.

File format: ``<model stem>.photo_extras.npz`` beside the city model file
(``city_model.npz`` → ``city_model.photo_extras.npz``), written atomically, loaded with
``allow_pickle=False``: ``{key}_vertices`` float32 (N, 3) ``local_m`` and ``{key}_triangles`` int32
(M, 3), counter-clockwise seen from outside, for each ``key`` in :data:`PHOTO_EXTRA_KEYS` (the
photo mode's material for it). The Blender worker reads it in photo mode only; without the
file nothing changes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .citymodel import Mesh

__all__ = ["PHOTO_EXTRA_KEYS", "PHOTO_EXTRAS_SUFFIX", "photo_extras_path", "save_photo_extras", "load_photo_extras"]

# material keys the photo mode has a look for (blender_scripts.photo_look)
PHOTO_EXTRA_KEYS = ("tree_trunk", "tree_crown", "vehicle_body", "vehicle_glass", "pole", "person")
PHOTO_EXTRAS_SUFFIX = ".photo_extras.npz"


def photo_extras_path(city_model_path: str | Path) -> Path:
    """The sidecar file of ``city_model_path`` (``…/city_model.npz`` → ``…/city_model.photo_extras.npz``)."""
    p = Path(city_model_path)
    return p.with_name(p.name.removesuffix(".npz") + PHOTO_EXTRAS_SUFFIX)


def _check_keys(keys) -> None:
    unknown = sorted(set(keys) - set(PHOTO_EXTRA_KEYS))
    if unknown:
        raise ValueError(f"unknown photo extra keys {unknown}; the photo mode has looks for {list(PHOTO_EXTRA_KEYS)}")


def save_photo_extras(city_model_path: str | Path, meshes: dict[str, Mesh]) -> Path:
    """Write the sidecar of ``city_model_path`` (empty meshes are left out); returns its path."""
    _check_keys(meshes)
    arrays: dict[str, np.ndarray] = {}
    for key, m in sorted(meshes.items()):
        if len(m.triangles):
            arrays[f"{key}_vertices"] = m.vertices_local_m
            arrays[f"{key}_triangles"] = m.triangles
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = photo_extras_path(city_model_path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def load_photo_extras(city_model_path: str | Path) -> dict[str, Mesh]:
    """``{key: Mesh}`` from the sidecar of ``city_model_path``; ``{}`` when there is none."""
    path = photo_extras_path(city_model_path)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        keys = sorted({name.rsplit("_", 1)[0] for name in z.files})
        _check_keys(keys)
        return {k: Mesh(z[f"{k}_vertices"], z[f"{k}_triangles"]) for k in keys}
