"""Reported-pose error model of the realistic stand-in content: statistics match the configured σ's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.mapillary.standin_errors import InjectedError, PoseErrorConfig, draw_sequence_errors, smooth_drift

SPACING_M = 3.0


def _draw(config: PoseErrorConfig, n_seq: int = 600, n_img: int = 25, seed: int = 0) -> list[list[InjectedError]]:
    rng = np.random.default_rng(seed)
    s = np.arange(n_img) * SPACING_M
    return [draw_sequence_errors(s, config, rng) for _ in range(n_seq)]


def _arr(seqs: list[list[InjectedError]], name: str) -> np.ndarray:
    return np.array([[getattr(e, name) for e in seq] for seq in seqs], dtype=object if name == "gross" else float)


@pytest.fixture(scope="module")
def draws():
    return PoseErrorConfig(), _draw(PoseErrorConfig())


def test_noise_sigmas_match_the_config(draws):
    cfg, seqs = draws
    for name, sigma in (("noise_dx_m", cfg.position_sigma_m), ("noise_dy_m", cfg.position_sigma_m),
                        ("noise_heading_deg", cfg.heading_sigma_deg), ("noise_pitch_deg", cfg.pitch_sigma_deg),
                        ("noise_roll_deg", cfg.roll_sigma_deg)):
        v = _arr(seqs, name)
        assert v.std() == pytest.approx(sigma, rel=0.03), name
        assert abs(v.mean()) < 0.05 * sigma, name
        # independent per image: no correlation between neighbours
        assert abs(np.corrcoef(v[:, :-1].ravel(), v[:, 1:].ravel())[0, 1]) < 0.05, name


def test_drift_is_smooth_with_the_configured_sigma(draws):
    cfg, seqs = draws
    for name, sigma in (("drift_dx_m", cfg.drift_sigma_m), ("drift_dy_m", cfg.drift_sigma_m),
                        ("drift_heading_deg", cfg.drift_heading_sigma_deg)):
        v = _arr(seqs, name)
        assert v.std(axis=0).mean() == pytest.approx(sigma, rel=0.08), name  # marginal σ at every image
        # smooth: neighbours 3 m apart differ by σ·sqrt(2(1 − exp(−Δ²/2ℓ²))), far less than noise
        expect = sigma * np.sqrt(2 * (1 - np.exp(-0.5 * (SPACING_M / cfg.drift_length_scale_m) ** 2)))
        assert np.diff(v, axis=1).std() == pytest.approx(expect, rel=0.1), name
        assert np.diff(v, axis=1).std() < 0.1 * sigma, name


def test_gross_errors_and_missing_rotations(draws):
    cfg, seqs = draws
    gross = _arr(seqs, "gross")
    is_gross = gross != ""
    assert is_gross.mean() == pytest.approx(cfg.p_gross, abs=0.01)
    assert set(gross[is_gross]) == {"position", "heading", "both"}
    gxy = np.hypot(_arr(seqs, "gross_dx_m"), _arr(seqs, "gross_dy_m"))
    gh = np.abs(_arr(seqs, "gross_heading_deg"))
    pos = np.isin(gross, ["position", "both"])
    head = np.isin(gross, ["heading", "both"])
    assert np.all((gxy[pos] > 6.0) & (gxy[pos] <= 15.0 + 1e-9)) and np.all(gxy[~pos] == 0)
    assert np.all((gh[head] > 10.0) & (gh[head] <= 30.0 + 1e-9)) and np.all(gh[~head] == 0)
    assert (_arr(seqs, "gross_heading_deg")[head] > 0).mean() == pytest.approx(0.5, abs=0.1)  # both signs
    no_rot = ~_arr(seqs, "has_rotation").astype(bool)
    assert no_rot.mean() == pytest.approx(cfg.p_no_rotation, abs=0.01)


def test_totals_are_the_sum_of_components_and_roundtrip():
    e = _draw(PoseErrorConfig(p_gross=0.5), n_seq=3, n_img=6)[0][0]
    assert e.dx_m == e.drift_dx_m + e.noise_dx_m + e.gross_dx_m
    assert e.heading_deg == e.drift_heading_deg + e.noise_heading_deg + e.gross_heading_deg
    d = e.to_dict()
    assert d["dy_m"] == e.dy_m and InjectedError.from_dict(d) == e


def test_seeded_and_zero_config():
    a, b, c = (_draw(PoseErrorConfig(), n_seq=2, n_img=5, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    zero = PoseErrorConfig(drift_sigma_m=0, drift_heading_sigma_deg=0, position_sigma_m=0, heading_sigma_deg=0,
                           pitch_sigma_deg=0, roll_sigma_deg=0, p_gross=0, p_no_rotation=0)
    for e in _draw(zero, n_seq=3, n_img=7)[0]:
        assert (e.dx_m, e.dy_m, e.heading_deg, e.pitch_deg, e.roll_deg, e.gross, e.has_rotation) == (0, 0, 0, 0, 0, "", True)


def test_bad_config_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="p_gross"):
        PoseErrorConfig(p_gross=1.5)
    with pytest.raises(ValueError, match="gross_position_m"):
        PoseErrorConfig(gross_position_m=(10.0, 6.0))
    with pytest.raises(ValueError, match="drift_length_scale_m"):
        PoseErrorConfig(drift_length_scale_m=0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 2000, allow_nan=False), min_size=0, max_size=60), st.integers(0, 2**32 - 1))
def test_smooth_drift_is_finite_for_any_track(track, seed):
    s = np.sort(np.asarray(track, dtype=float))  # repeated positions make the kernel singular
    d = smooth_drift(s, 2.0, 40.0, np.random.default_rng(seed))
    assert d.shape == s.shape and np.all(np.isfinite(d))
    same = np.flatnonzero(np.diff(s) == 0)
    assert np.allclose(d[same], d[same + 1], atol=1e-6)  # one place, one drift
