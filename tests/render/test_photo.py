"""Photo mode (stand-in photos for the sample city): lit, textured JPEG aligned with the labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from s2r_data.render import RenderSettings

from .conftest import render_model
from .test_pass_semantics import BOXES, POSES
from .scene_kit import box_city

W = 256


@pytest.mark.blender
@pytest.mark.slow
def test_photo_mode_writes_aligned_srgb_jpeg(tmp_path):
    model = box_city(BOXES)
    pose = POSES[:1]
    photo_results, _ = render_model(tmp_path / "photo", model, pose, RenderSettings(width=W, threads=2, mode="photo"))
    _, labels = render_model(tmp_path / "labels", model, pose, RenderSettings(width=W, threads=2))
    r = photo_results[0]
    assert r.status == "ok" and r.path.suffix == ".jpg" and r.render_time_s > 0
    with Image.open(r.path) as im:
        assert im.mode == "RGB" and im.size == (W, W // 2)
        meta = json.loads(im.info["comment"])
        rgb = np.asarray(im, dtype=np.float64)
    assert meta["image_id"] == pose[0].image_id and meta["mode"] == "photo" and "inside_building" in meta
    sky = labels[pose[0].image_id].sky_mask[0]
    sky_inner = sky & np.roll(sky, 2, 0) & np.roll(sky, -2, 0) & np.roll(sky, 2, 1) & np.roll(sky, -2, 1)
    solid = ~sky & ~np.roll(sky, 2, 0) & ~np.roll(sky, -2, 0) & ~np.roll(sky, 2, 1) & ~np.roll(sky, -2, 1)
    blueness = rgb[..., 2] - rgb[..., 0]
    # the lit sky is blue and bright where the label pass says sky; surfaces are not
    assert blueness[sky_inner].mean() > 15 and blueness[sky_inner].mean() > blueness[solid].mean() + 10
    assert rgb[sky_inner].mean() > 100
    assert rgb[solid].std() > 10  # textured and shaded, not flat class colours
