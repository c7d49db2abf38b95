"""The alignment score: monotone in the injected error, flags for no building / bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from s2r_data.align import PoseCorrection, ScoreConfig, score_pair

from .scene import camera, pseudo_photo, street_scene

CFG = ScoreConfig(width_px=1024)


def _score(scene, photo, pose, **kw):
    p = scene.render(pose, 1024)
    return score_pair(photo, p.label, p.depth_m, p.normal, pose.R_world_to_cam_opensfm, CFG, **kw)


@pytest.fixture(scope="module")
def shot():
    _, scene = street_scene()
    true = camera(1.0, -6.0, 30.0)
    return scene, true, pseudo_photo(scene, true, 1024, seed=3)


@pytest.mark.parametrize("make", [
    lambda e: PoseCorrection(d_heading_deg=e),
    lambda e: PoseCorrection(dx_m=e),
    lambda e: PoseCorrection(dy_m=-e, d_pitch_deg=e / 2),
])
def test_score_decreases_monotonically_as_the_error_grows(shot, make):
    scene, true, photo = shot
    # over the working range (beyond ~3° of edge misalignment the truncated cost saturates)
    scores = [_score(scene, photo, make(e).apply(true)).score for e in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(np.isfinite(scores))
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert 0.0 <= scores[-1] < scores[0] <= 1.0


def test_well_aligned_pair_is_a_local_optimum(shot):
    scene, true, photo = shot
    s = _score(scene, photo, true)
    assert s.local_optimality == 1.0 and s.confidence == "ok" and not s.flags
    assert s.sky_iou > 0.9
    off = _score(scene, photo, PoseCorrection(dx_m=1.0, d_heading_deg=1.0).apply(true))
    assert off.local_optimality < 1.0 and off.edge_cost_deg > 1.5 * s.edge_cost_deg


def test_no_building_in_view_gets_a_low_confidence_flag():
    _, scene = street_scene(buildings=False)  # road, green and ground only
    pose = camera(0.0, -20.0, 10.0)
    s = _score(scene, pseudo_photo(scene, pose, 1024), pose)
    assert np.isfinite(s.score)
    assert "no_building_in_view" in s.flags and s.confidence == "low"


def test_bad_inputs_are_flagged_not_raised(shot):
    scene, true, photo = shot
    p = scene.render(true, 512)
    R = true.R_world_to_cam_opensfm
    empty = score_pair(np.zeros_like(photo), p.label, p.depth_m, p.normal, R, CFG)
    assert empty.flags == ("photo_unusable",) and np.isnan(empty.score) and "empty" in empty.detail["message"]
    sky = score_pair(photo, np.zeros_like(p.label), np.zeros_like(p.depth_m), np.zeros_like(p.normal), R, CFG)
    assert sky.flags == ("render_all_sky",) and np.isnan(sky.score)
    depth = p.depth_m.copy()
    depth[0, 100, 100] = np.nan
    nan = score_pair(photo, p.label, depth, p.normal, R, CFG)
    assert nan.flags == ("render_nonfinite",) and np.isnan(nan.score) and "NaN" in nan.detail["message"]
    nan_photo = score_pair(np.full(photo.shape, np.nan, np.float32), p.label, p.depth_m, p.normal, R, CFG)
    assert nan_photo.flags == ("photo_unusable",)
    wrong = score_pair(photo[:, :100], p.label, p.depth_m, p.normal, R, CFG)
    assert wrong.flags == ("photo_unusable",) and "2:1" in wrong.detail["message"]


def test_min_rise_sums_the_two_perturbation_scales(shot):
    """min_rise_deg is the sum over the scales of the best improvement a move of that size offers;
    a pair off by 1.5 m can be improved at the 2 m scale, so the two-scale test ranks it lower."""
    scene, true, photo = shot
    one = ScoreConfig(width_px=1024, perturb_scales=(1.0,))
    two = ScoreConfig(width_px=1024, perturb_scales=(1.0, 2.0))
    p = scene.render(true, 1024)
    R = true.R_world_to_cam_opensfm
    s1 = score_pair(photo, p.label, p.depth_m, p.normal, R, one)
    s2 = score_pair(photo, p.label, p.depth_m, p.normal, R, two)
    rises = np.array(s2.detail["perturbed_costs_deg"]) - s2.edge_cost_deg
    assert len(rises) == 24 and s2.edge_cost_deg == s1.edge_cost_deg
    assert s2.min_rise_deg == pytest.approx(rises[:12].min() + rises[12:].min(), abs=1e-3)  # costs are rounded in detail
    assert s1.min_rise_deg == pytest.approx(rises[:12].min(), abs=1e-3)
    off = PoseCorrection(dx_m=1.5).apply(true)
    q = scene.render(off, 1024)
    assert score_pair(photo, q.label, q.depth_m, q.normal, off.R_world_to_cam_opensfm, two).min_rise_deg < 0 < s2.min_rise_deg


@pytest.mark.parametrize("kw", [{"perturb_scales": ()}, {"perturb_scales": (1.0, 0.0)}, {"cost_scale_deg": 0.0}, {"rise_scale_deg": -1.0}])
def test_score_config_rejects_bad_values(kw):
    with pytest.raises(ValueError, match="ScoreConfig"):
        ScoreConfig(**kw)
