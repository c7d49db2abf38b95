"""Everything that runs inside Blender (bpy 5.0.1 as a pip module). The only package importing bpy.

One module per concern:

* :mod:`.bpy_import`  — the single import point for bpy (readable error when the render extra is missing)
* :mod:`.scene`       — CityModel arrays → one mesh object per class (``foreach_set``)
* :mod:`.materials`   — labels-mode materials (Diffuse BSDF, class colour, ``pass_index``), black world
* :mod:`.photo_look`  — photo-mode look: textured Principled materials, sun + sky
* :mod:`.camera`      — equirectangular panorama camera, pose → ``matrix_world``
* :mod:`.passes`      — Cycles/device settings, render passes and scratch-file output per mode
* :mod:`.worker`      — the long-lived worker process (``python -m blender_scripts.worker``)

EXR read-back and pass post-processing are pure numpy/OpenEXR and live in :mod:`s2r_data.render`
(the supervisor converts pose k while Blender renders pose k+1).
"""
