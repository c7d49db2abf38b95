"""Photo extras (the stand-in world's occluders) show up in photo mode only, never in the labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from s2r_data.citymodel import CLASS_BY_NAME
from s2r_data.mapillary.standin_world import Occluder, occluder_meshes
from s2r_data.photo_extras import save_photo_extras
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll
from s2r_data.render import RenderSettings, load_sim_passes, render_poses

from .scene_kit import Box, box_city

W = 64


@pytest.mark.blender
@pytest.mark.slow
def test_occluders_appear_in_photos_not_in_labels(tmp_path):
    model = box_city([Box("wall", (30.0, -30.0, 0.0), (32.0, 30.0, 20.0))])  # a wall 30 m east
    pose = [Pose("east", [0.0, 0.0, 2.3], rotation_from_heading_pitch_roll(90.0, 0.0, 0.0))]
    van = Occluder("van1", "van", 6.0, 0.0, 0.0, {"length_m": 5.5, "width_m": 2.0, "height_m": 2.5})  # 6 m ahead, across
    tree = Occluder("t1", "tree", -8.0, 0.0, 0.0, {"trunk_radius_m": 0.3, "trunk_height_m": 3.0, "crown_radius_m": 3.0, "crown_height_m": 3.0})
    rgb = {}
    for name, extras in (("bare", {}), ("occluded", occluder_meshes([van, tree]))):
        path = model.save(tmp_path / name / "city_model.npz")
        if extras:
            save_photo_extras(path, extras)
        s = RenderSettings(width=W, threads=2, mode="photo")
        (r,) = render_poses(path, pose, tmp_path / name / "photo", s, progress=False)
        with Image.open(r.path) as im:
            rgb[name] = np.asarray(im, dtype=np.float64)
        (lab,) = render_poses(path, pose, tmp_path / name / "labels", RenderSettings(width=W, threads=2), progress=False)
        rgb[name + "_label"] = load_sim_passes(lab.path).label[0]
    assert np.array_equal(rgb["bare_label"], rgb["occluded_label"])  # labels: the city model only
    h = W // 2
    ahead = (slice(h // 2, h // 2 + 1), slice(W // 2 - 2, W // 2 + 2))  # 2.8° below the horizon, straight ahead
    behind = (slice(h // 2 - 5, h // 2 - 3), slice(0, 2))  # the tree crown, behind the camera
    assert np.abs(rgb["occluded"][ahead] - rgb["bare"][ahead]).mean() > 20  # the van hides the wall
    assert rgb["bare_label"][ahead].min() == CLASS_BY_NAME["wall"].index
    crown = rgb["occluded"][behind].mean(axis=(0, 1))
    sky = rgb["bare"][behind].mean(axis=(0, 1))
    assert crown[1] > crown[2] and sky[2] > sky[1]  # green crown where the bare scene shows blue sky
