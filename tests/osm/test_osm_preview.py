"""Top-down preview PNG (s2r_data.preview)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2r_data.citymodel import CLASS_BY_NAME
from s2r_data.preview import layer_legend, linear_to_srgb, render_topdown_png


@pytest.mark.parametrize("lin, srgb", [(0.0, 0.0), (1.0, 1.0), (0.5, 0.735357), (0.0031308, 0.0404482), (0.2, 0.484529)])
def test_linear_to_srgb(lin: float, srgb: float) -> None:
    assert float(linear_to_srgb(lin)) == pytest.approx(srgb, abs=1e-5)


def _class_pixels(img: np.ndarray, name: str) -> int:
    c = np.round(linear_to_srgb(CLASS_BY_NAME[name].colour_linear) * 255).astype(int)
    return int((np.abs(img.astype(int) - c).sum(-1) <= 3).sum())


def test_sample_preview(sample_model, tmp_path: Path) -> None:
    path = render_topdown_png(sample_model, tmp_path / "p.png", px_per_m=1.0)
    img = np.asarray(Image.open(path).convert("RGB"))
    x0, y0, x1, y1 = sample_model.meta["clip_bounds_local_m"]
    assert img.shape[:2] == (int(np.ceil((y1 - y0) * 2)) // 2, int(np.ceil((x1 - x0) * 2)) // 2)
    assert _class_pixels(img, "ground") > 0.2 * img.shape[0] * img.shape[1]
    assert _class_pixels(img, "road") > 1000
    assert _class_pixels(img, "green") > 100
    # roofs are shaded by height, so look for the dark red-brown hue of roofs anywhere
    r, g, b = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
    assert ((r - g > 30) & (r - b > 30)).sum() > 1000


def test_preview_size_is_capped(liechtenstein_model, tmp_path: Path) -> None:
    path = render_topdown_png(liechtenstein_model, tmp_path / "l.png", px_per_m=5.0, max_size_px=400)
    w, h = Image.open(path).size
    assert max(w, h) <= 400 and max(w, h) >= 390


def test_legend_shows_layer_areas(helsinki_model, tmp_path: Path) -> None:
    rows = dict(layer_legend(helsinki_model))
    road_ha = helsinki_model.meshes["road"].area_xy_m2() / 1e4
    assert road_ha > 30  # issue 17: 0.4 ha before the fix
    share = 100 * helsinki_model.meshes["road"].area_xy_m2() / helsinki_model.meta["clip_area_m2"]
    assert rows["road"] == f"road {road_ha:,.1f} ha · {share:.1f} %"
    assert rows["water"].startswith("water 0.40 ha") and rows["green"].startswith("green 26.4 ha")
    # the legend is drawn below the title: its water swatch is the only water in the top-left corner
    img = np.asarray(Image.open(render_topdown_png(helsinki_model, tmp_path / "h.png", px_per_m=0.5)).convert("RGB"))
    assert _class_pixels(img[: img.shape[0] // 5, : img.shape[1] // 3], "water") > 50
