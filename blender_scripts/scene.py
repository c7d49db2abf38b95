"""CityModel arrays → Blender mesh objects: one object per semantic class, built with ``foreach_set``."""

from __future__ import annotations

import numpy as np

from s2r_data.citymodel import CLASS_BY_NAME, CityModel, Mesh

from .bpy_import import import_bpy

__all__ = ["reset_scene", "add_class_mesh", "add_city_meshes", "planar_uvs_m"]


def reset_scene():
    """Empty factory scene; returns ``bpy.context.scene``."""
    bpy = import_bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def planar_uvs_m(class_name: str, mesh: Mesh) -> np.ndarray:
    """Per-loop UVs in metres (M*3, 2) for procedural textures (photo mode).

    Walls: u = position along the wall's horizontal direction, v = height, so a brick-like
    texture reads as storeys and windows. Everything else: u, v = x, y (plan view).
    """
    v = mesh.vertices_local_m.astype(np.float64)
    corners = v[mesh.triangles.reshape(-1)]  # (M*3, 3)
    if class_name != "wall" or not len(mesh.triangles):
        return corners[:, :2].astype(np.float32)
    n = mesh.face_normals()  # (M, 3)
    t = np.stack([-n[:, 1], n[:, 0]], axis=1)  # horizontal tangent of each face
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    t = np.repeat(t, 3, axis=0)
    u = np.einsum("ij,ij->i", corners[:, :2], t)
    return np.stack([u, corners[:, 2]], axis=1).astype(np.float32)


def add_class_mesh(class_name: str, mesh: Mesh, material, *, with_uvs: bool = False):
    """Add one object holding ``mesh`` with ``material``; returns the object (None if empty)."""
    bpy = import_bpy()
    if not len(mesh.triangles):
        return None
    n_tri = len(mesh.triangles)
    me = bpy.data.meshes.new(class_name)
    me.vertices.add(len(mesh.vertices_local_m))
    me.vertices.foreach_set("co", mesh.vertices_local_m.astype(np.float32).ravel())
    me.loops.add(3 * n_tri)
    me.loops.foreach_set("vertex_index", mesh.triangles.astype(np.int32).ravel())
    me.polygons.add(n_tri)
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * n_tri, 3, dtype=np.int32))
    # Flat shading: since 4.1 a mesh without a "sharp_face" attribute is smooth-shaded, which would
    # interpolate the Normal pass across shared vertices (box corners, wall/roof edges).
    me.polygons.foreach_set("use_smooth", np.zeros(n_tri, dtype=bool))
    if with_uvs:
        uv = me.uv_layers.new(name="UVMap")
        uv.data.foreach_set("uv", planar_uvs_m(class_name, mesh).ravel())
    me.update(calc_edges=True)
    me.materials.append(material)
    obj = bpy.data.objects.new(class_name, me)
    obj.pass_index = CLASS_BY_NAME[class_name].index
    bpy.context.scene.collection.objects.link(obj)
    return obj


def add_city_meshes(model: CityModel, materials_by_class: dict, *, with_uvs: bool = False) -> dict:
    """All non-empty class meshes of ``model`` → ``{class_name: object}``."""
    objects = {}
    for name, mesh in model.meshes.items():
        obj = add_class_mesh(name, mesh, materials_by_class[name], with_uvs=with_uvs)
        if obj is not None:
            objects[name] = obj
    return objects
