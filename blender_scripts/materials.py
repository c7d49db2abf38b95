"""Labels-mode look: Diffuse BSDF in the exact class colour (DiffCol = colour), pass_index = class
index (Material Index pass = label), and a black world (no lights: only the data passes matter)."""

from __future__ import annotations

from s2r_data.citymodel import CLASSES, MESH_CLASSES

from .bpy_import import import_bpy

__all__ = ["label_materials", "black_world"]


def _diffuse_material(name: str, colour_linear, pass_index: int):
    bpy = import_bpy()
    mat = bpy.data.materials.new(name)
    mat.pass_index = pass_index
    nodes = mat.node_tree.nodes
    nodes.clear()
    bsdf = nodes.new("ShaderNodeBsdfDiffuse")
    bsdf.inputs["Color"].default_value = (*colour_linear, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.0
    out = nodes.new("ShaderNodeOutputMaterial")
    mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def label_materials() -> dict:
    """``{class_name: material}`` for every mesh class."""
    by_name = {c.name: c for c in CLASSES}
    return {n: _diffuse_material(f"label_{n}", by_name[n].colour_linear, by_name[n].index) for n in MESH_CLASSES}


def black_world(scene) -> None:
    bpy = import_bpy()
    world = bpy.data.worlds.new("black")
    world.color = (0.0, 0.0, 0.0)
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.bl_idname == "ShaderNodeBackground":
                node.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
                node.inputs["Strength"].default_value = 0.0
    scene.world = world
