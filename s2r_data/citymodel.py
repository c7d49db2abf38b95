"""The city model: triangle meshes per semantic class in ``local_m``, plus the class table.

This module is the contract between the OSM builder (:mod:`s2r_data.osm`), the renderer
(``blender_scripts``) and the dataset (label channel). It imports neither osmium nor bpy.

File format (``city_model.npz``, written atomically, loaded with ``allow_pickle=False``):

* ``{class}_vertices``  float32 (N, 3), ``local_m``
* ``{class}_triangles`` int32 (M, 3), counter-clockwise seen from outside (outward normals)
* ``footprints_wkb``    uint8, WKB of the union of building footprints (``local_m`` x, y)
* ``meta_json``         uint8, UTF-8 JSON of :class:`CityModel.meta`

and a sibling ``summary.json`` (counts, bbox, reference point) for humans and dashboards.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text

__all__ = ["SemanticClass", "CLASSES", "CLASS_BY_NAME", "Mesh", "CityModel", "CityModelError"]


@dataclass(frozen=True)
class SemanticClass:
    index: int  # Material.pass_index in Blender; value of the uint8 label channel
    name: str
    colour_linear: tuple[float, float, float]  # DiffCol value (linear RGB, exact with Diffuse BSDF)


# Fixed, documented class table. Index 0 is the sky/background (nothing hit): DiffCol (0, 0, 0),
# Normal (0, 0, 0), Depth 0 in the dataset, Material Index 0 in Blender.
CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(0, "sky", (0.0, 0.0, 0.0)),
    SemanticClass(1, "ground", (0.45, 0.40, 0.30)),
    SemanticClass(2, "road", (0.25, 0.25, 0.28)),
    SemanticClass(3, "water", (0.10, 0.30, 0.85)),
    SemanticClass(4, "green", (0.20, 0.65, 0.15)),
    SemanticClass(5, "wall", (0.85, 0.70, 0.50)),
    SemanticClass(6, "roof", (0.65, 0.15, 0.10)),
)
CLASS_BY_NAME = {c.name: c for c in CLASSES}
MESH_CLASSES = tuple(c.name for c in CLASSES if c.index != 0)


class CityModelError(RuntimeError):
    pass


@dataclass
class Mesh:
    vertices_local_m: np.ndarray  # float32 (N, 3)
    triangles: np.ndarray  # int32 (M, 3)

    def __post_init__(self) -> None:
        self.vertices_local_m = np.ascontiguousarray(self.vertices_local_m, dtype=np.float32).reshape(-1, 3)
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int32).reshape(-1, 3)

    @staticmethod
    def empty() -> "Mesh":
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))

    @staticmethod
    def concat(meshes: list["Mesh"]) -> "Mesh":
        verts, tris, off = [], [], 0
        for m in meshes:
            verts.append(m.vertices_local_m)
            tris.append(m.triangles + off)
            off += len(m.vertices_local_m)
        if not verts:
            return Mesh.empty()
        return Mesh(np.concatenate(verts), np.concatenate(tris))

    def area_xy_m2(self) -> float:
        """Total area of the triangles projected on the ground plane (x, y), in m² (float64 sums
        of the stored float32 vertices): the covered area of a flat layer."""
        if len(self.triangles) == 0:
            return 0.0
        xy = self.vertices_local_m[:, :2].astype(np.float64)
        a, b, c = (xy[self.triangles[:, k]] for k in range(3))
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        return float(np.abs(cross).sum() / 2.0)

    def face_normals(self) -> np.ndarray:
        v = self.vertices_local_m.astype(np.float64)
        t = self.triangles
        n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@dataclass
class CityModel:
    meshes: dict[str, Mesh]  # class name → mesh (every name in MESH_CLASSES present, maybe empty)
    footprints_wkb: bytes = b""  # union of building footprints, local_m (shapely WKB)
    meta: dict[str, Any] = field(default_factory=dict)  # city, ref lon/lat, bbox, counts, source

    def __post_init__(self) -> None:
        unknown = set(self.meshes) - set(MESH_CLASSES)
        if unknown:
            raise CityModelError(f"unknown mesh classes {sorted(unknown)}; known: {list(MESH_CLASSES)}")
        for name in MESH_CLASSES:
            self.meshes.setdefault(name, Mesh.empty())

    def footprints(self):
        """Shapely geometry of the building footprints (empty if none)."""
        import shapely

        if not self.footprints_wkb:
            return shapely.GeometryCollection()
        return shapely.from_wkb(self.footprints_wkb)

    def bbox_local_m(self) -> tuple[list[float], list[float]]:
        allv = [m.vertices_local_m for m in self.meshes.values() if len(m.vertices_local_m)]
        if not allv:
            return [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        v = np.concatenate(allv)
        return v.min(0).tolist(), v.max(0).tolist()

    def summary(self) -> dict[str, Any]:
        lo, hi = self.bbox_local_m()
        return {
            **self.meta,
            "bbox_local_m": {"min": lo, "max": hi},
            "classes": {
                name: {
                    "index": CLASS_BY_NAME[name].index,
                    "colour_linear": list(CLASS_BY_NAME[name].colour_linear),
                    "vertices": int(len(m.vertices_local_m)),
                    "triangles": int(len(m.triangles)),
                }
                for name, m in self.meshes.items()
            },
        }

    # ---- I/O -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and ``summary.json`` beside it, both atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for name, m in self.meshes.items():
            arrays[f"{name}_vertices"] = m.vertices_local_m
            arrays[f"{name}_triangles"] = m.triangles
        arrays["footprints_wkb"] = np.frombuffer(self.footprints_wkb, dtype=np.uint8)
        arrays["meta_json"] = np.frombuffer(json.dumps(self.meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        atomic_write_text(path.with_name("summary.json"), json.dumps(self.summary(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CityModel":
        path = Path(path)
        if not path.is_file():
            raise CityModelError(f"city model {path} does not exist; build it with `python -m s2r_data.osm build`")
        try:
            with np.load(path, allow_pickle=False) as z:
                meshes = {
                    name: Mesh(z[f"{name}_vertices"], z[f"{name}_triangles"])
                    for name in MESH_CLASSES
                    if f"{name}_vertices" in z
                }
                fp = z["footprints_wkb"].tobytes()
                meta = json.loads(z["meta_json"].tobytes().decode())
        except Exception as e:  # zipfile.BadZipFile, KeyError, ValueError ...
            raise CityModelError(f"city model {path} is unreadable ({type(e).__name__}: {e}); delete it and rebuild") from e
        return cls(meshes, fp, meta)
