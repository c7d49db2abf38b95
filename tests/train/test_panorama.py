"""Whole-panorama translation: tiled (perspective views → equirect) and direct."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.equirect import pixel_to_bearing
from s2r_train.config import ConditioningConfig
from s2r_train.panorama import (PanoPasses, TileSpec, tile_views, translate_panorama, translate_panorama_direct,
                                translate_panorama_tiled, views_to_equirect)

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


class IdentityModel(torch.nn.Module):
    """A "generator" that returns its DiffCol input as the image (any input size)."""

    downsample_factor = 1

    def forward(self, cond, *args):
        return cond[:, 0:3] * 2 - 1, None, None


def _smooth_panorama(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(3, h, w) DiffCol in [0.2, 0.8]: low-order functions of the viewing direction."""
    py, px = np.mgrid[0:h, 0:w]
    b = pixel_to_bearing(px, py, w, h)
    rng = np.random.default_rng(seed)
    coef = rng.uniform(-0.1, 0.1, (3, 6))
    feats = np.stack([b[..., 0], b[..., 1], b[..., 2], b[..., 0] * b[..., 2], b[..., 1] ** 2, b[..., 0] * b[..., 1]])
    return (0.5 + np.einsum("cf,fhw->chw", coef, feats)).astype(np.float32)


def _passes(diffcol: np.ndarray) -> PanoPasses:
    h, w = diffcol.shape[1:]
    normal = np.zeros((3, h, w), np.float32)
    normal[2] = 1
    return PanoPasses.from_arrays(diffcol, normal, np.full((1, h, w), 12.0), np.full((h, w), 1))


@pytest.mark.parametrize("spec", [TileSpec(size=32, fov_deg=80.0, overlap_deg=30.0),
                                  TileSpec(size=48, fov_deg=60.0, overlap_deg=20.0)])
def test_tiled_identity_returns_the_panorama_up_to_rounding(spec):
    h, w = 64, 128
    diffcol = _smooth_panorama(h, w)
    out = translate_panorama_tiled(IdentityModel(), _passes(diffcol), ConditioningConfig(), pano_width=w, tiles=spec)
    assert out.shape == (3, h, w)
    want_u8 = np.round(diffcol * 255)
    got_u8 = np.round((out.numpy() + 1) / 2 * 255)
    assert np.abs(got_u8 - want_u8).max() <= 1  # 8-bit rounding: every pixel, poles and seam included


def test_direct_identity_is_exact():
    diffcol = _smooth_panorama(32, 64, seed=1)
    out = translate_panorama_direct(IdentityModel(), _passes(diffcol), ConditioningConfig(), pano_width=64)
    np.testing.assert_allclose(out.numpy(), diffcol * 2 - 1, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(fov=st.floats(40.0, 120.0), overlap_frac=st.floats(0.15, 0.5))
def test_tile_views_cover_every_panorama_pixel(fov, overlap_frac):
    spec = TileSpec(size=16, fov_deg=fov, overlap_deg=fov * overlap_frac)
    views = tile_views(spec)
    _, weight = views_to_equirect(torch.ones(len(views), 1, 16, 16), views, spec.fov_deg, (32, 64))
    # every pixel (poles, seam) lies well inside at least one view: no pixel left to a fading border
    assert float(weight.min()) > 0.05


def test_translate_panorama_methods_and_errors():
    cfg = tiny_config()
    diffcol = _smooth_panorama(48, 96)
    G = IdentityModel()
    tiled = translate_panorama(G, _passes(diffcol), cfg, method="tiled", pano_width=96)
    direct = translate_panorama(G, _passes(diffcol), cfg, method="direct", pano_width=96)
    assert tiled.shape == direct.shape == (3, 48, 96)
    assert (tiled - direct).abs().max() < 0.02  # both reproduce the identity
    with pytest.raises(ValueError, match="tiled"):
        translate_panorama(G, _passes(diffcol), cfg, method="views", pano_width=96)
    with pytest.raises(ValueError, match="overlap_deg"):
        TileSpec(size=16, fov_deg=60.0, overlap_deg=60.0)
