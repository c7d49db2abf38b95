"""Equirectangular panorama camera (Cycles PANO) and pose → ``matrix_world``.

Convention (notes §1.2, verified): camera-local x right, y up, −z forward; full longitude/latitude
range, so the image is pixel-identical to OpenSfM/Mapillary equirectangular panoramas.
``matrix_world`` comes from :func:`s2r_data.poses.matrix_world_blender` (rotation Rᵀ·diag(1,−1,−1)).
"""

from __future__ import annotations

import math
from typing import Sequence

from .bpy_import import import_bpy

__all__ = ["add_pano_camera", "set_matrix_world"]


def add_pano_camera(scene, *, clip_end_m: float, clip_start_m: float = 0.05):
    bpy = import_bpy()
    cam = bpy.data.cameras.new("pano")
    cam.type = "PANO"
    target = cam if hasattr(cam, "panorama_type") else cam.cycles  # ≤ 3.x kept it on .cycles
    target.panorama_type = "EQUIRECTANGULAR"
    target.longitude_min, target.longitude_max = -math.pi, math.pi
    target.latitude_min, target.latitude_max = -math.pi / 2, math.pi / 2
    cam.clip_start = clip_start_m
    cam.clip_end = clip_end_m
    obj = bpy.data.objects.new("pano", cam)
    scene.collection.objects.link(obj)
    scene.camera = obj
    return obj


def set_matrix_world(camera_obj, matrix_world_rows: Sequence[Sequence[float]]) -> None:
    """Set the camera's 4×4 ``matrix_world`` (rows, ``cam_blender`` → ``local_m``)."""
    from mathutils import Matrix

    m = [list(map(float, row)) for row in matrix_world_rows]
    if len(m) != 4 or any(len(r) != 4 for r in m):
        raise ValueError(f"matrix_world must be 4×4, got {m!r}")
    camera_obj.matrix_world = Matrix(m)
