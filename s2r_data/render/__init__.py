"""Render panoramas of a CityModel: Blender (a supervised, long-lived worker; the reference) or
an Embree ray caster (labels mode, in process, ≈ 5-10× faster), chosen by ``RenderSettings.backend``.

Public API::

    render_poses(city_model_path, poses, out_dir, settings, progress=True) -> list[RenderResult]
    load_sim_passes(path) -> SimPasses
    RaycastScene(model, threads=0): cast / occluded / render   (pose refinement, cheap renders)
    RenderSettings, RenderResult, SimPasses, RenderError, BlenderNotInstalledError, FaultInjection

CLI: ``python -m s2r_data.render --city-model PATH --poses poses.json --out DIR --width 1024
[--backend raycast]``. bpy is only imported inside the worker child (``blender_scripts``); this
package needs numpy, embreex (ray caster), OpenEXR (Blender labels mode) and Pillow (photo mode).
"""

from .settings import RenderSettings

__all__ = [
    "RenderSettings",
    "RenderResult",
    "SimPasses",
    "RenderError",
    "BlenderNotInstalledError",
    "FaultInjection",
    "render_poses",
    "load_sim_passes",
    "pose_flags",
    "RaycastScene",
    "RayHits",
]


def __getattr__(name: str):  # lazy: the Blender worker imports .protocol/.settings without the rest
    if name in ("SimPasses", "load_sim_passes"):
        from . import sim_passes

        return getattr(sim_passes, name)
    if name in ("RenderResult", "RenderError", "BlenderNotInstalledError", "FaultInjection", "render_poses"):
        from . import batch

        return getattr(batch, name)
    if name in ("RaycastScene", "RayHits"):
        from . import raycast

        return getattr(raycast, name)
    if name == "pose_flags":
        from .pose_checks import pose_flags

        return pose_flags
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
