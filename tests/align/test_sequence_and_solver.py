"""The robust solver and the sequence prior."""

from __future__ import annotations

import math

import numpy as np

from s2r_data.align.sequence import SequenceConfig, along_track_m, fit_sequence_prior
from s2r_data.align.solver import robust_weights, solve_robust


def test_solver_ignores_outliers_and_respects_bounds():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(300, 6))
    x_true = np.array([0.1, -0.05, 0.02, 1.5, -2.0, 2.2])
    b = A @ x_true + rng.normal(0, 0.01, 300)
    b[:40] += rng.normal(0, 50, 40)  # gross outliers

    def rj(x):
        return (A @ x - b) / 0.01, A / 0.01

    big = np.full(6, 1e6)
    r = solve_robust(rj, np.zeros(6), prior_mean=np.zeros(6), prior_sigma=big, lower=-big, upper=big, loss="cauchy")
    np.testing.assert_allclose(r.x, x_true, atol=5e-3)
    assert (r.weights[:40] < 0.01).all() and (r.weights[40:] > 0.1).mean() > 0.9
    hi = big.copy()
    hi[5] = 2.0
    rb = solve_robust(rj, np.zeros(6), prior_mean=np.zeros(6), prior_sigma=big, lower=-big, upper=hi, loss="cauchy")
    assert rb.x[5] <= 2.0
    assert robust_weights(np.array([0.0, 1.0]), "cauchy").tolist() == [1.0, 0.5]


def _sequence(n=12, seed=0):
    rng = np.random.default_rng(seed)
    s = np.arange(n) * 4.0
    rep = np.zeros((n, 6))
    rep[:, 3] = 0.0
    rep[:, 4] = s
    rep[:, 5] = 2.5
    drift_x = 2.0 * np.sin(s / 30.0)  # smooth drift in the reported x
    truth = rep.copy()
    truth[:, 3] -= drift_x
    truth[:, 1] = math.radians(1.5)  # rig pitch
    truth[:, 5] = 2.2  # rig height
    solved = truth + rng.normal(0, 1, (n, 6)) * np.array([math.radians(0.2), math.radians(0.2), math.radians(0.2), 0.3, 0.3, 0.05])
    return s, rep, truth, solved


def test_sequence_prior_predicts_each_image_from_the_others():
    s, rep, truth, solved = _sequence()
    std = np.tile([math.radians(0.2), math.radians(0.2), math.radians(0.2), 0.3, 0.3, 0.05], (len(s), 1))
    pr = fit_sequence_prior(s, rep, solved, std, np.ones(len(s), bool))
    # leave-one-out: the prior of image i is good without image i's own solution
    assert np.abs(pr.mean[:, 3] - truth[:, 3]).max() < 0.9
    assert np.abs(np.degrees(pr.mean[:, 1] - truth[:, 1])).max() < 0.4
    assert np.abs(pr.mean[:, 5] - truth[:, 5]).max() < 0.1
    assert (pr.sigma > 0).all() and np.all(pr.inlier_weight > 0.5)


def test_sequence_prior_downweights_a_gross_outlier():
    s, rep, truth, solved = _sequence(seed=1)
    solved[5, 3] += 12.0  # one refinement went wrong by 12 m
    std = np.tile([math.radians(0.2), math.radians(0.2), math.radians(0.2), 0.3, 0.3, 0.05], (len(s), 1))
    pr = fit_sequence_prior(s, rep, solved, std, np.ones(len(s), bool), SequenceConfig())
    assert pr.inlier_weight[5] < 0.3 < np.delete(pr.inlier_weight, 5).min()
    assert abs(pr.mean[5, 3] - truth[5, 3]) < 1.0  # its prior comes from its neighbours
    assert np.abs(np.delete(pr.mean[:, 3] - truth[:, 3], 5)).max() < 1.2


def test_rig_constants_ignore_solutions_stuck_at_a_bound():
    # two first-pass solutions fell onto the lower height bound (0.8 m) with sound x, y: the
    # rig's height prior must stay at the others' 2.2 m (a weighted mean put it at ≈ 1.9 m, and
    # every correct candidate then looked implausible)
    s, rep, truth, solved = _sequence(seed=2)
    solved[[2, 7], 5] = 0.8
    solved[4, 1] += math.radians(8.0)  # and one wild pitch
    std = np.tile([math.radians(0.2), math.radians(0.2), math.radians(0.2), 0.3, 0.3, 0.05], (len(s), 1))
    pr = fit_sequence_prior(s, rep, solved, std, np.ones(len(s), bool))
    others = np.setdiff1d(np.arange(len(s)), [2, 7])
    assert np.abs(pr.mean[others, 5] - truth[others, 5]).max() < 0.1
    assert np.abs(pr.mean[[2, 7], 5] - 2.2).max() < 0.1  # their own priors come from the others
    assert np.abs(np.degrees(pr.mean[:, 1] - truth[:, 1])).max() < 0.5


def test_unusable_images_get_the_reported_pose_and_broad_sigmas():
    s, rep, truth, solved = _sequence()
    usable = np.zeros(len(s), bool)
    pr = fit_sequence_prior(s, rep, solved, np.full((len(s), 6), np.inf), usable)
    np.testing.assert_allclose(pr.mean[:, 3:5], rep[:, 3:5])
    assert (pr.sigma[:, 3] > 2.0).all()


def test_along_track():
    np.testing.assert_allclose(along_track_m(np.array([[0, 0], [3, 4], [3, 5]])), [0, 5, 6])
