"""The sequence prior: one smooth correction per capture sequence that single images are
regularised towards.

What a sequence shares (the physics of a capture): SfM drift is smooth along the track, so the
heading and position *corrections* (refined − reported) of neighbouring images are alike; the rig
is bolted to the vehicle, so the camera's *absolute* pitch, roll (relative to the direction of
travel) and height above the street are nearly constant. Per-image noise is independent.

So each component is a Gaussian process over the along-track distance: heading/x/y corrections
with a squared-exponential kernel (``length_m``, amplitude ``drift_*``), pitch/roll/height as a
constant (an infinite length scale) — each image's refined value is an observation with the
variance of its own solution plus the per-image noise. Outliers (gross errors, failed
refinements) are down-weighted iteratively (Cauchy on the normalised residual): images by their
horizontal correction, and each rig constant separately by its own residual (a solution stuck at
a height bound is an outlier of the height, whatever its position). The posterior at
an image, *without* that image's own observation (leave-one-out), is its prior for the second
pass: mean and σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pose_vector import wrap_deg

__all__ = ["SequenceConfig", "SequencePrior", "fit_sequence_prior", "along_track_m", "trajectory_xy_loo"]


@dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    length_m: float = 40.0  # drift correlation length along the track
    drift_heading_deg: float = 1.5  # prior amplitude of the smooth corrections
    drift_xy_m: float = 3.0
    noise_heading_deg: float = 2.0  # per-image scatter around the smooth correction
    noise_xy_m: float = 2.0
    tilt_sigma_deg: float = 5.0  # spread of the rig tilt between sequences (prior of the constant)
    noise_tilt_deg: float = 1.0
    height_sigma_m: float = 0.5
    noise_height_m: float = 0.08
    outlier_threshold: float = 3.0  # Cauchy scale of the normalised residuals

    def __post_init__(self) -> None:
        for name in ("length_m", "noise_heading_deg", "noise_xy_m", "noise_tilt_deg", "noise_height_m", "outlier_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SequenceConfig.{name} must be > 0")


@dataclass(frozen=True)
class SequencePrior:
    """Per image (n of them): prior mean of the six pose numbers (rad, rad, rad, m, m, m) and σ."""

    mean: np.ndarray  # (n, 6)
    sigma: np.ndarray  # (n, 6)
    inlier_weight: np.ndarray  # (n,) final robust weight of each image's observation (0..1)


def along_track_m(xy_m: np.ndarray) -> np.ndarray:
    """Cumulative distance along a sequence of positions (n, 2), in capture order."""
    xy = np.asarray(xy_m, dtype=np.float64)
    if len(xy) == 0:
        return np.zeros(0)
    step = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(step)])


def _gp_loo(s: np.ndarray, y: np.ndarray, obs_var: np.ndarray, amp: float, length: float | None, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out GP posterior mean/variance at every s (zero prior mean). ``length`` None =
    constant kernel. Observations with weight w get variance obs_var / w (w = 0: ignored)."""
    n = len(s)
    if length is None:
        K = np.full((n, n), amp**2)
    else:
        d = s[:, None] - s[None, :]
        K = amp**2 * np.exp(-0.5 * (d / length) ** 2)
    mean = np.zeros(n)
    var = np.full(n, amp**2)
    wv = np.where(w > 1e-6, obs_var / np.maximum(w, 1e-6), np.inf)
    for i in range(n):
        m = np.isfinite(wv)
        m[i] = False
        if not m.any():
            continue
        Kmm = K[np.ix_(m, m)] + np.diag(wv[m])
        k = K[i, m]
        try:
            alpha = np.linalg.solve(Kmm, np.column_stack([y[m], k]))
        except np.linalg.LinAlgError:
            continue
        mean[i] = k @ alpha[:, 0]
        var[i] = max(K[i, i] - k @ alpha[:, 1], 1e-12)
    return mean, var


def _robust_constant(y: np.ndarray, sigma: np.ndarray, w: np.ndarray, threshold: float) -> tuple[float, np.ndarray]:
    """Robust location of a rig constant (pitch, roll or height) from per-image observations ``y``
    with σ ``sigma`` and prior weights ``w``: weighted median, then Cauchy IRLS on the normalised
    residuals. Returns the location and each image's weight (w times its own Cauchy weight) — a
    pass-1 solution stuck at a height bound must not drag the rig's height, whatever its x, y."""
    if w.sum() <= 0:
        return 0.0, w
    order = np.argsort(y)
    cw = np.cumsum(w[order])
    c = float(y[order][np.searchsorted(cw, 0.5 * cw[-1])])
    wk = w
    for _ in range(5):
        r = (y - c) / np.maximum(sigma, 1e-9)
        wk = w / (1.0 + (r / threshold) ** 2)
        if wk.sum() <= 0:
            return c, wk
        c = float(np.average(y, weights=wk))
    return c, wk


def fit_sequence_prior(
    along_m: np.ndarray,
    reported: np.ndarray,
    solved: np.ndarray,
    solved_std: np.ndarray,
    usable: np.ndarray,
    config: SequenceConfig = SequenceConfig(),
) -> SequencePrior:
    """Leave-one-out sequence prior for each image.

    ``reported``, ``solved``: (n, 6) pose vectors; ``solved_std``: (n, 6) σ of each solution
    (e.g. the refinement's predicted accuracy; inf where unknown); ``usable``: (n,) bool — images
    whose solution is an observation at all."""
    s = np.asarray(along_m, dtype=np.float64)
    rep = np.asarray(reported, dtype=np.float64)
    sol = np.asarray(solved, dtype=np.float64)
    std = np.asarray(solved_std, dtype=np.float64)
    ok = np.asarray(usable, dtype=bool) & np.isfinite(sol).all(1) & np.isfinite(std).all(1)
    n = len(s)
    corr = sol - rep
    corr[:, 0] = np.radians(wrap_deg(np.degrees(corr[:, 0])))
    rad = math.radians
    # (component index, observation, amplitude, noise σ, length or None, add the reported value back)
    comps = [
        (0, corr[:, 0], rad(config.drift_heading_deg), rad(config.noise_heading_deg), config.length_m, True),
        (3, corr[:, 3], config.drift_xy_m, config.noise_xy_m, config.length_m, True),
        (4, corr[:, 4], config.drift_xy_m, config.noise_xy_m, config.length_m, True),
        (1, sol[:, 1], rad(config.tilt_sigma_deg), rad(config.noise_tilt_deg), None, False),
        (2, sol[:, 2], rad(config.tilt_sigma_deg), rad(config.noise_tilt_deg), None, False),
        (5, sol[:, 5], config.height_sigma_m, config.noise_height_m, None, False),
    ]
    mean = rep.copy()
    sigma = np.zeros((n, 6))
    w_img = ok.astype(np.float64)
    # robust weights from the horizontal position correction (where gross errors show): the
    # leave-one-out residual's length in σ units, Cauchy-weighted
    xy_comps = [c for c in comps if c[0] in (3, 4)]
    for _ in range(3):
        res = []
        for k, y, amp, noise, length, _ in xy_comps:
            yy = np.where(ok, y, 0.0)
            m, v = _gp_loo(s, yy, noise**2 + np.where(ok, std[:, k] ** 2, 0.0), amp, length, w_img)
            res.append((yy - m) / np.sqrt(v + noise**2 + std[:, k] ** 2))
        r = np.sqrt(np.sum(np.square(res), axis=0))
        w_img = np.where(ok, 1.0 / (1.0 + (r / config.outlier_threshold) ** 2), 0.0)
    for k, y, amp, noise, length, relative in comps:
        yy = np.where(ok, y, 0.0)
        obs_var = noise**2 + np.where(ok, std[:, k] ** 2, 0.0)
        w_k = w_img
        if not relative:  # constant-mean components: centre on the robust mean of the observations
            c, w_k = _robust_constant(yy, np.sqrt(obs_var), w_img, config.outlier_threshold)
            if w_k.sum() <= 0:
                c = 0.0 if k != 5 else float(np.median(rep[:, 5]))
        else:
            c = 0.0
        m, v = _gp_loo(s, yy - c, obs_var, amp, length, w_k)
        m = m + c
        if relative:
            mean[:, k] = rep[:, k] + m
        else:
            mean[:, k] = np.where(w_k.sum() > 0, m, rep[:, k])
        sigma[:, k] = np.sqrt(v + noise**2)
    mean[:, 0] = np.mod(mean[:, 0] + math.pi, 2 * math.pi) - math.pi
    return SequencePrior(mean, sigma, w_img)


def trajectory_xy_loo(t: np.ndarray, xy: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Leave-one-out position of each image on its sequence's trajectory: linear interpolation in
    capture time ``t`` between the nearest usable images before and after (linear extrapolation
    from the two nearest at the ends); NaN where fewer than two others are usable. A capture
    moves smoothly, so this predicts where an image with a gross position error really was."""
    t = np.asarray(t, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    ok = np.asarray(usable, dtype=bool) & np.isfinite(xy).all(1)
    out = np.full((len(t), 2), np.nan)
    for i in range(len(t)):
        m = ok.copy()
        m[i] = False
        idx = np.flatnonzero(m)
        if len(idx) < 2:
            continue
        before = idx[t[idx] < t[i]]
        after = idx[t[idx] > t[i]]
        if len(before) and len(after):
            a, b = before[np.argmax(t[before])], after[np.argmin(t[after])]
        elif len(before) >= 2:
            a, b = before[np.argsort(t[before])[-2:]]
        elif len(after) >= 2:
            a, b = after[np.argsort(t[after])[:2]]
        else:
            continue
        if t[b] == t[a]:
            continue
        f = (t[i] - t[a]) / (t[b] - t[a])
        out[i] = xy[a] + f * (xy[b] - xy[a])
    return out
