"""Photo-mode look: procedural Principled materials per class, sun + sky world.

Used only for stand-in "photos" of the sample city (the Mapillary replay server). Geometry and
camera are those of labels mode, so the photos align exactly with the label passes. Textures are
driven by the per-loop UVs in metres from :func:`blender_scripts.scene.planar_uvs_m` (walls: along
the wall × height; others: plan x, y). Photo extras (the realistic stand-in world's trees,
vehicles, poles, people: :mod:`s2r_data.photo_extras`) are added in photo mode only, textured in
object space (metres).
"""

from __future__ import annotations

import math

from s2r_data.citymodel import MESH_CLASSES

from .bpy_import import import_bpy

__all__ = ["photo_materials", "sun_and_sky", "add_photo_extras"]


class _Graph:
    """Tiny helper around a material's node tree."""

    def __init__(self, mat):
        self.tree = mat.node_tree
        self.tree.nodes.clear()

    def node(self, kind: str, **inputs):
        n = self.tree.nodes.new(kind)
        for key, value in inputs.items():
            n.inputs[key].default_value = value
        return n

    def link(self, out_socket, in_socket) -> None:
        self.tree.links.new(out_socket, in_socket)

    def uv(self):
        n = self.tree.nodes.new("ShaderNodeUVMap")
        n.uv_map = "UVMap"
        return n.outputs["UV"]

    def noise_mix(self, vector, scale: float, colour_a, colour_b, detail: float = 6.0):
        """Colour between ``colour_a`` and ``colour_b`` driven by noise; returns (colour socket, fac socket)."""
        noise = self.node("ShaderNodeTexNoise", Scale=scale, Detail=detail, Roughness=0.6)
        self.link(vector, noise.inputs["Vector"])
        mix = self.tree.nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.inputs["A"].default_value = (*colour_a, 1.0)
        mix.inputs["B"].default_value = (*colour_b, 1.0)
        self.link(noise.outputs["Fac"], mix.inputs["Factor"])
        return mix.outputs["Result"], noise.outputs["Fac"]

    def principled(self, base_colour_socket, roughness, *, bump_height: float = 0.0, bump_from=None):
        bsdf = self.node("ShaderNodeBsdfPrincipled")
        self.link(base_colour_socket, bsdf.inputs["Base Color"])
        if isinstance(roughness, float):
            bsdf.inputs["Roughness"].default_value = roughness
        else:
            self.link(roughness, bsdf.inputs["Roughness"])
        if bump_height and bump_from is not None:
            bump = self.node("ShaderNodeBump", Strength=bump_height)
            self.link(bump_from, bump.inputs["Height"])
            self.link(bump.outputs["Normal"], bsdf.inputs["Normal"])
        out = self.node("ShaderNodeOutputMaterial")
        self.link(bsdf.outputs["BSDF"], out.inputs["Surface"])
        return bsdf


def _wall(g: _Graph) -> None:
    uv = g.uv()
    facade, _ = g.noise_mix(uv, 0.05, (0.55, 0.47, 0.38), (0.75, 0.70, 0.62), detail=2.0)
    grain, grain_fac = g.noise_mix(uv, 3.0, (0.9, 0.9, 0.9), (1.0, 1.0, 1.0))
    facade_mul = g.tree.nodes.new("ShaderNodeMix")
    facade_mul.data_type = "RGBA"
    facade_mul.blend_type = "MULTIPLY"
    facade_mul.inputs["Factor"].default_value = 1.0
    g.link(facade, facade_mul.inputs["A"])
    g.link(grain, facade_mul.inputs["B"])
    # windows: "bricks" 3 m wide bays × 3 m storeys, "mortar" = facade between windows
    brick = g.node(
        "ShaderNodeTexBrick",
        Color1=(0.03, 0.05, 0.07, 1.0),
        Color2=(0.08, 0.10, 0.12, 1.0),
        Scale=1.0,
        **{"Mortar Size": 0.7, "Mortar Smooth": 0.05, "Brick Width": 3.0, "Row Height": 3.0, "Bias": 0.0},
    )
    brick.offset = 0.0
    brick.squash = 1.0
    g.link(uv, brick.inputs["Vector"])
    g.link(facade_mul.outputs["Result"], brick.inputs["Mortar"])
    rough = g.node("ShaderNodeMath")
    rough.operation = "MULTIPLY_ADD"  # 0.12 + 0.75 · mortar mask
    g.link(brick.outputs["Fac"], rough.inputs[0])
    rough.inputs[1].default_value = 0.75
    rough.inputs[2].default_value = 0.12
    g.principled(brick.outputs["Color"], rough.outputs["Value"], bump_height=0.05, bump_from=grain_fac)


def _flat(g: _Graph, scale: float, a, b, roughness: float, bump: float) -> None:
    colour, fac = g.noise_mix(g.uv(), scale, a, b)
    g.principled(colour, roughness, bump_height=bump, bump_from=fac)


_LOOKS = {
    "wall": _wall,
    "ground": lambda g: _flat(g, 1.5, (0.20, 0.19, 0.17), (0.33, 0.31, 0.28), 0.85, 0.1),
    "road": lambda g: _flat(g, 6.0, (0.035, 0.035, 0.038), (0.09, 0.09, 0.095), 0.9, 0.2),
    "water": lambda g: _flat(g, 0.3, (0.015, 0.04, 0.06), (0.03, 0.07, 0.09), 0.06, 0.05),
    "green": lambda g: _flat(g, 2.5, (0.04, 0.13, 0.02), (0.13, 0.30, 0.05), 0.95, 0.3),
    "roof": lambda g: _flat(g, 2.0, (0.12, 0.07, 0.05), (0.22, 0.12, 0.08), 0.7, 0.1),
}


def _object_xyz(g: _Graph):
    """Object-space position (= ``local_m``: extras are built at the origin) for 3-D textures."""
    return g.tree.nodes.new("ShaderNodeTexCoord").outputs["Object"]


def _cell_colours(g: _Graph, scale: float, dark, light, tint: float, roughness: float) -> None:
    """One random shade between ``dark`` and ``light`` per Voronoi cell (cells ≈ 1/``scale`` m:
    one per car or person), tinted by the cell's random colour (``tint`` = how much shows)."""
    vor = g.node("ShaderNodeTexVoronoi", Scale=scale)
    g.link(_object_xyz(g), vor.inputs["Vector"])
    shade = g.tree.nodes.new("ShaderNodeMix")
    shade.data_type = "RGBA"
    shade.inputs["A"].default_value = (*dark, 1.0)
    shade.inputs["B"].default_value = (*light, 1.0)
    g.link(vor.outputs["Distance"], shade.inputs["Factor"])
    mix = g.tree.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs["Factor"].default_value = tint
    g.link(shade.outputs["Result"], mix.inputs["A"])
    g.link(vor.outputs["Color"], mix.inputs["B"])
    g.principled(mix.outputs["Result"], roughness)


def _extra_flat(g: _Graph, scale: float, a, b, roughness: float, bump: float) -> None:
    colour, fac = g.noise_mix(_object_xyz(g), scale, a, b)
    g.principled(colour, roughness, bump_height=bump, bump_from=fac)


# photo-only occluders of the realistic stand-in world (s2r_data.photo_extras.PHOTO_EXTRA_KEYS)
_EXTRA_LOOKS = {
    "tree_trunk": lambda g: _extra_flat(g, 8.0, (0.05, 0.035, 0.025), (0.12, 0.09, 0.06), 0.9, 0.4),
    "tree_crown": lambda g: _extra_flat(g, 3.0, (0.02, 0.06, 0.01), (0.10, 0.22, 0.04), 0.95, 0.8),
    "vehicle_body": lambda g: _cell_colours(g, 0.25, (0.02, 0.02, 0.025), (0.75, 0.75, 0.76), 0.2, 0.25),
    "vehicle_glass": lambda g: _extra_flat(g, 2.0, (0.01, 0.012, 0.015), (0.04, 0.05, 0.06), 0.05, 0.0),
    "pole": lambda g: _extra_flat(g, 4.0, (0.10, 0.11, 0.11), (0.20, 0.21, 0.21), 0.5, 0.0),
    "person": lambda g: _cell_colours(g, 1.5, (0.03, 0.03, 0.04), (0.45, 0.40, 0.35), 0.5, 0.8),
}


def add_photo_extras(meshes_by_key: dict) -> dict:
    """Photo-only meshes (``{key: Mesh}``, from :func:`s2r_data.photo_extras.load_photo_extras`)
    → ``{key: object}`` with their photo materials. Photo mode writes no label pass, so these
    objects carry no class (pass index 0)."""
    from .scene import add_class_mesh

    bpy = import_bpy()
    objects = {}
    for key, mesh in sorted(meshes_by_key.items()):
        if key not in _EXTRA_LOOKS:
            raise ValueError(f"no photo look for extra {key!r}; known: {sorted(_EXTRA_LOOKS)}")
        mat = bpy.data.materials.new(f"photo_extra_{key}")
        _EXTRA_LOOKS[key](_Graph(mat))
        obj = add_class_mesh("wall", mesh, mat)  # the mesh builder; the class is reset below
        if obj is not None:
            obj.name, obj.pass_index = f"extra_{key}", 0
            objects[key] = obj
    return objects


def photo_materials() -> dict:
    """``{class_name: material}`` (Principled + procedural textures) for every mesh class."""
    bpy = import_bpy()
    mats = {}
    for name in MESH_CLASSES:
        mat = bpy.data.materials.new(f"photo_{name}")
        _LOOKS[name](_Graph(mat))
        mats[name] = mat
    return mats


def sun_and_sky(scene, *, sun_elevation_deg: float = 38.0, sun_azimuth_deg: float = 150.0, sun_strength: float = 3.0) -> str:
    """Sun lamp + physical sky (gradient fallback). Returns the sky model used."""
    bpy = import_bpy()
    world = bpy.data.worlds.new("sky")
    scene.world = world
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    background = nodes.new("ShaderNodeBackground")
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(background.outputs["Background"], out.inputs["Surface"])
    sky_model = "gradient"
    try:
        sky = nodes.new("ShaderNodeTexSky")
        sky.sky_type = "SINGLE_SCATTERING" if "SINGLE_SCATTERING" in sky.bl_rna.properties["sky_type"].enum_items.keys() else "NISHITA"
        sky.sun_disc = False
        sky.sun_elevation = math.radians(sun_elevation_deg)
        sky.sun_rotation = math.radians(sun_azimuth_deg)  # compass azimuth (verified: brightest sky column)
        links.new(sky.outputs["Color"], background.inputs["Color"])
        background.inputs["Strength"].default_value = 0.3
        sky_model = sky.sky_type
    except (TypeError, KeyError, RuntimeError):
        # zenith blue → horizon haze from the view direction's z
        coord = nodes.new("ShaderNodeTexCoord")
        sep = nodes.new("ShaderNodeSeparateXYZ")
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (0.75, 0.82, 0.9, 1.0)
        ramp.color_ramp.elements[1].color = (0.18, 0.35, 0.75, 1.0)
        links.new(coord.outputs["Generated"], sep.inputs["Vector"])
        links.new(sep.outputs["Z"], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], background.inputs["Color"])
        background.inputs["Strength"].default_value = 1.0
    sun = bpy.data.lights.new("sun", type="SUN")
    sun.energy = sun_strength
    sun.angle = math.radians(1.5)
    sun_obj = bpy.data.objects.new("sun", sun)
    # sun direction: light travels along the lamp's −z; tilt by (90° − elevation) about x, then azimuth
    sun_obj.rotation_euler = (math.radians(90.0 - sun_elevation_deg), 0.0, math.radians(180.0 - sun_azimuth_deg))
    scene.collection.objects.link(sun_obj)
    return sky_model
