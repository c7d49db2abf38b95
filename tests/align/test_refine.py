"""Pose refinement recovers injected errors on synthetic panoramas; no building → low confidence."""

from __future__ import annotations

import numpy as np
import pytest

from s2r_data.align import PoseCorrection, RefineConfig, extract_model_edges, refine_pose
from s2r_data.align.refine import photo_features

from .scene import camera, pseudo_photo, street_scene

CASES = [
    # (camera x, y, heading), injected correction (Δheading°, Δpitch°, Δroll°, Δx m, Δy m, Δz m)
    ((1.5, -8.0, 20.0), PoseCorrection(2.5, 0.8, -0.6, 1.2, -0.9, 0.25)),
    ((-2.0, 12.0, 185.0), PoseCorrection(-1.8, -0.5, 0.9, -1.5, 1.4, -0.2)),
    ((2.5, 30.0, 95.0), PoseCorrection(12.0, 0.3, 0.4, 2.0, 2.5, 0.1)),  # a heading error > 10°
]


@pytest.mark.parametrize("cam, injected", CASES)
def test_refinement_recovers_injected_errors(cam, injected):
    model, scene = street_scene()
    true = camera(*cam)
    photo = pseudo_photo(scene, true, 1024, seed=1)
    reported = injected.apply(true)
    res = refine_pose(photo, reported, extract_model_edges(model), scene)
    assert res.status == "refined", res.flags
    err = PoseCorrection.between(true, res.solution)
    assert abs(err.d_heading_deg) < 0.1 and abs(err.d_pitch_deg) < 0.1 and abs(err.d_roll_deg) < 0.1, err
    assert err.horizontal_m < 0.1 and abs(err.dz_m) < 0.05, err
    assert res.cost_after_deg < res.cost_before_deg
    assert res.n_corners >= 3 and res.n_buildings >= 2


def test_no_building_in_view_is_low_confidence_not_refined():
    model, scene = street_scene()
    far = camera(0.0, -140.0, 180.0)  # looking down an empty road, buildings far behind/out of range
    photo = pseudo_photo(scene, far, 512)
    cfg = RefineConfig(radius_m=40.0)  # only what is near counts
    res = refine_pose(photo, PoseCorrection(2.0, dx_m=1.0).apply(far), extract_model_edges(model), scene, cfg)
    assert res.status == "low_confidence"
    assert "no_building_in_view" in res.flags
    assert res.solution is res.reported


def test_tilted_beyond_range_is_rejected():
    model, scene = street_scene()
    p = camera(0.0, 0.0, 0.0, pitch_deg=35.0)
    res = refine_pose(pseudo_photo(scene, camera(0.0, 0.0, 0.0), 512), p, extract_model_edges(model), scene)
    assert res.status == "rejected" and "tilt_out_of_range" in res.flags


def test_photo_features_reject_an_empty_photo():
    from s2r_data.align import PhotoError

    with pytest.raises(PhotoError, match="empty"):
        photo_features(np.full((256, 512, 3), 128, np.uint8))


def test_probed_grid_recovers_a_large_position_error():
    """A 3.6 m, 3° error (over two grid steps) is recovered: the grid's best cells get a short least
    squares before the full solve (``n_probe_starts``)."""
    model, scene = street_scene()
    true = camera(1.0, 4.0, 60.0)
    photo = pseudo_photo(scene, true, 1024, seed=2)
    reported = PoseCorrection(3.0, 0.0, 0.0, 2.9, -2.1, 0.0).apply(true)
    edges = extract_model_edges(model)
    res = refine_pose(photo, reported, edges, scene, RefineConfig())
    err = PoseCorrection.between(true, res.solution)
    assert res.status == "refined" and err.horizontal_m < 0.1 and abs(err.d_heading_deg) < 0.1, err


@pytest.mark.parametrize("kw", [{"n_starts": 3, "n_probe_starts": 2}, {"probe_iter": 0}, {"n_starts": 0}])
def test_refine_config_rejects_bad_start_counts(kw):
    with pytest.raises(ValueError, match="n_probe_starts|n_starts"):
        RefineConfig(**kw)
