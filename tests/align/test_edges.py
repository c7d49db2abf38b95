"""Model edges (extraction, visibility), photo edges (orientation bins, sub-pixel search, sky)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s2r_data.align.model_edges import EdgeKind, extract_model_edges, sample_visible_points
from s2r_data.align.photo_edges import (
    EdgeMapConfig,
    PhotoError,
    PhotoSampler,
    check_photo,
    edge_map,
    edge_offsets,
    opponent_channels,
    sky_mask,
)

from .scene import BUILDINGS, camera, pseudo_photo, street_model, street_scene


def test_box_buildings_give_corners_ground_lines_and_rooflines():
    one = street_model([(0, 0, 10, 20, 12)])
    e = extract_model_edges(one, ground_boundaries=False, max_segment_m=100.0)
    v = e.kind == EdgeKind.VERTICAL
    assert v.sum() == 4  # the four corners of the box
    assert np.allclose(e.p0_local_m[v, 2], 0.0) and np.allclose(e.p1_local_m[v, 2], 12.0)
    assert (e.kind == EdgeKind.GROUND_LINE).sum() == 4 and (e.kind == EdgeKind.ROOFLINE).sum() == 4
    assert np.allclose(e.crease_deg[v], 90.0)
    assert e.n_buildings == 1


def test_long_edges_are_split_and_keep_their_source():
    one = street_model([(0, 0, 10, 20, 12)])
    e = extract_model_edges(one, ground_boundaries=False, max_segment_m=5.0)
    L = np.linalg.norm(e.p1_local_m - e.p0_local_m, axis=1)
    assert L.max() <= 5.0 + 1e-9
    g = e.kind == EdgeKind.GROUND_LINE
    assert len(np.unique(e.source[g])) == 4 and g.sum() == 2 * 4 + 2 * 2  # 20 m sides → 4 pieces, 10 m → 2


def test_ground_outlines_skip_the_models_cut():
    model = street_model(BUILDINGS)
    model.meta["clip_bounds_local_m"] = [-150.0, -150.0, 150.0, 150.0]
    e = extract_model_edges(model)
    g = e.kind == EdgeKind.GROUND_BOUNDARY
    assert g.any()
    ends = np.abs(np.concatenate([e.p0_local_m[g, :2], e.p1_local_m[g, :2]])).max(axis=1)
    mid_on_cut = (np.abs(e.p0_local_m[g, 1]) > 149.5) & (np.abs(e.p1_local_m[g, 1]) > 149.5)
    assert not mid_on_cut.any() and ends.max() <= 150.0 + 1e-6


def test_visibility_hides_the_back_corner_of_a_box():
    model, scene = street_scene()
    edges = extract_model_edges(model)
    C = np.array([0.0, -10.0, 2.5])
    pts = sample_visible_points(edges, C, scene, step_deg=0.5)
    allpts = sample_visible_points(edges, C, None, step_deg=0.5)
    assert 0 < len(pts) < len(allpts)
    # building (9, 5)-(22, 20): its far corner (22, 20) is behind the box seen from the road
    far = np.linalg.norm(pts.xyz_local_m[:, :2] - [22.0, 20.0], axis=1) < 0.3
    near = np.linalg.norm(pts.xyz_local_m[:, :2] - [9.0, 5.0], axis=1) < 0.3
    assert not far.any() and near.any()
    assert pts.n_vertical_corners() >= 6 and pts.n_buildings() >= 4


def test_check_photo_names_the_problem():
    with pytest.raises(PhotoError, match="2:1"):
        check_photo(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(PhotoError, match="RGB"):
        check_photo(np.zeros((100, 200), np.uint8))
    with pytest.raises(PhotoError, match="empty"):
        check_photo(np.full((100, 200, 3), 7, np.uint8))
    with pytest.raises(PhotoError, match="NaN"):
        check_photo(np.full((100, 200, 3), np.nan, np.float32))
    ok = np.random.default_rng(0).integers(0, 255, (3, 64, 128), dtype=np.uint8)
    assert check_photo(ok).shape == (64, 128, 3)


def test_oriented_edge_maps_separate_vertical_and_horizontal_lines():
    img = np.full((256, 512, 3), 0.3, np.float32)
    img[:, 200:] = 0.8  # a vertical step at x = 199.5
    img[180:, :] = 0.1  # a horizontal step at y = 179.5
    em = edge_map(opponent_channels(img), EdgeMapConfig(width_px=512))
    vbin = em.bin_of(np.array([math.pi / 2]))[0]
    hbin = em.bin_of(np.array([0.0]))[0]
    assert em.distance(np.array([199.5]), np.array([100.0]), np.array([vbin]))[0] < 1.0
    assert em.distance(np.array([199.5]), np.array([100.0]), np.array([hbin]))[0] > 8.0
    assert em.distance(np.array([100.0]), np.array([179.5]), np.array([hbin]))[0] < 1.0


@pytest.mark.parametrize("edge_x", [300.0, 300.3, 300.5, 300.8])
def test_edge_search_finds_a_step_with_sub_pixel_accuracy(edge_x):
    W, H = 1024, 512
    x = np.arange(W) + 0.5  # pixel i covers [i, i + 1): area-weighted step at edge_x
    col = np.clip(x - edge_x + 0.5, 0, 1)
    img = np.repeat((0.2 + 0.6 * col)[None, :, None], H, 0).repeat(3, 2).astype(np.float32)
    s = PhotoSampler.of(opponent_channels(img))
    px = np.full(20, 297.0)
    py = np.linspace(150, 350, 20)
    off, strength = edge_offsets(s, px, py, np.tile([[1.0, 0.0]], (20, 1)), radius_px=6)
    # pixel centres sit at integers: the step between pixel columns lies at edge_x − 0.5
    np.testing.assert_allclose(px + off, edge_x - 0.5, atol=0.1)
    assert (strength > 0.25).all()


def test_sky_mask_finds_the_sky_of_a_synthetic_street():
    _, scene = street_scene()
    pose = camera(0.0, 0.0, 0.0)
    sky = sky_mask(opponent_channels(pseudo_photo(scene, pose, 512)), 256)
    truth = scene.render(pose, 256).label[0] == 0
    upper = slice(0, 128)
    iou = (sky[upper] & truth[upper]).sum() / (sky[upper] | truth[upper]).sum()
    assert iou > 0.9
