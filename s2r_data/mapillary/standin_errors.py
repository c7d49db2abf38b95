"""Reported-pose errors of the realistic stand-in content: what Mapillary's poses get wrong.

Stand-in data generation only (never imported by the pipeline). Per sequence, the reported
pose of each image is the true pose plus (``../shared/notes/alignment.md``):

* a **smooth drift** along the sequence (SfM drift): a Gaussian process over the along-track
  distance (squared-exponential kernel, length scale ``drift_length_scale_m``) in x, y (σ =
  ``drift_sigma_m`` per axis) and heading (σ = ``drift_heading_sigma_deg``);
* **per-image noise**: position σ ``position_sigma_m`` per horizontal axis, heading σ
  ``heading_sigma_deg``, pitch and roll σ ``pitch_sigma_deg`` / ``roll_sigma_deg``;
* **gross errors** on a fraction ``p_gross`` of images: the position moved by
  ``gross_position_m`` (uniform magnitude, any direction), the heading turned by
  ``gross_heading_deg`` (either sign), or both;
* **no computed_rotation** on a fraction ``p_no_rotation`` of images (the pipeline then falls
  back to a level camera at the compass angle).

Angles in degrees (heading clockwise from grid north, as :func:`s2r_data.poses.
heading_pitch_roll_deg`), lengths in metres, x east / y north of the city's ``local_m`` frame.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PoseErrorConfig", "InjectedError", "draw_sequence_errors", "smooth_drift"]

GROSS_KINDS = ("position", "heading", "both")


@dataclass(frozen=True, kw_only=True)
class PoseErrorConfig:
    drift_sigma_m: float = 2.0  # per horizontal axis
    drift_length_scale_m: float = 40.0
    drift_heading_sigma_deg: float = 1.0
    position_sigma_m: float = 2.0  # per image, per horizontal axis
    heading_sigma_deg: float = 2.0
    pitch_sigma_deg: float = 1.0
    roll_sigma_deg: float = 1.0
    p_gross: float = 0.06
    gross_position_m: tuple[float, float] = (6.0, 15.0)
    gross_heading_deg: tuple[float, float] = (10.0, 30.0)
    p_no_rotation: float = 0.08

    def __post_init__(self) -> None:
        for name in ("drift_sigma_m", "drift_heading_sigma_deg", "position_sigma_m", "heading_sigma_deg", "pitch_sigma_deg", "roll_sigma_deg"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PoseErrorConfig.{name}={getattr(self, name)!r} must be >= 0")
        if not self.drift_length_scale_m > 0:
            raise ValueError(f"PoseErrorConfig.drift_length_scale_m={self.drift_length_scale_m!r} must be > 0")
        for name in ("p_gross", "p_no_rotation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PoseErrorConfig.{name}={getattr(self, name)!r} must be in [0, 1]")
        for name in ("gross_position_m", "gross_heading_deg"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"PoseErrorConfig.{name}={getattr(self, name)!r} must be (low, high) with 0 <= low <= high")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InjectedError:
    """The error components of one image (reported − true)."""

    drift_dx_m: float
    drift_dy_m: float
    drift_heading_deg: float
    noise_dx_m: float
    noise_dy_m: float
    noise_heading_deg: float
    noise_pitch_deg: float
    noise_roll_deg: float
    gross: str  # "" (none), "position", "heading" or "both"
    gross_dx_m: float
    gross_dy_m: float
    gross_heading_deg: float
    has_rotation: bool  # False: the record carries no computed_rotation

    @property
    def dx_m(self) -> float:
        return self.drift_dx_m + self.noise_dx_m + self.gross_dx_m

    @property
    def dy_m(self) -> float:
        return self.drift_dy_m + self.noise_dy_m + self.gross_dy_m

    @property
    def heading_deg(self) -> float:
        return self.drift_heading_deg + self.noise_heading_deg + self.gross_heading_deg

    @property
    def pitch_deg(self) -> float:
        return self.noise_pitch_deg

    @property
    def roll_deg(self) -> float:
        return self.noise_roll_deg

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dx_m": self.dx_m, "dy_m": self.dy_m, "heading_deg": self.heading_deg,
                "pitch_deg": self.pitch_deg, "roll_deg": self.roll_deg}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InjectedError":
        names = cls.__dataclass_fields__
        return cls(**{k: d[k] for k in names})


def smooth_drift(along_track_m: np.ndarray, sigma: float, length_scale_m: float, rng: np.random.Generator) -> np.ndarray:
    """One draw of a zero-mean Gaussian process with a squared-exponential kernel
    (σ² exp(−Δs² / 2ℓ²)) at the along-track positions ``along_track_m``: smooth, marginal σ."""
    s = np.asarray(along_track_m, dtype=np.float64).reshape(-1)
    z = rng.normal(0.0, 1.0, size=len(s))
    if len(s) == 0 or sigma == 0:
        return np.zeros(len(s))
    K = np.exp(-0.5 * ((s[:, None] - s[None, :]) / length_scale_m) ** 2)
    w, V = np.linalg.eigh(K)  # K is near-singular for close samples: eigh, not Cholesky
    return sigma * (V @ (np.sqrt(np.clip(w, 0.0, None)) * (V.T @ z)))


def draw_sequence_errors(along_track_m: np.ndarray, config: PoseErrorConfig, rng: np.random.Generator) -> list[InjectedError]:
    """Injected errors for the images of one sequence at along-track distances ``along_track_m``."""
    s = np.asarray(along_track_m, dtype=np.float64).reshape(-1)
    n = len(s)
    dx = smooth_drift(s, config.drift_sigma_m, config.drift_length_scale_m, rng)
    dy = smooth_drift(s, config.drift_sigma_m, config.drift_length_scale_m, rng)
    dh = smooth_drift(s, config.drift_heading_sigma_deg, config.drift_length_scale_m, rng)
    noise = rng.normal(0.0, 1.0, size=(n, 5)) * [config.position_sigma_m, config.position_sigma_m,
                                                  config.heading_sigma_deg, config.pitch_sigma_deg, config.roll_sigma_deg]
    gross = rng.random(n) < config.p_gross
    kind = rng.integers(0, len(GROSS_KINDS), size=n)
    g_mag = rng.uniform(*config.gross_position_m, size=n)
    g_dir = rng.uniform(0.0, 2 * math.pi, size=n)
    g_head = rng.uniform(*config.gross_heading_deg, size=n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    has_rot = rng.random(n) >= config.p_no_rotation
    out = []
    for i in range(n):
        k = GROSS_KINDS[kind[i]] if gross[i] else ""
        pos = k in ("position", "both")
        head = k in ("heading", "both")
        out.append(InjectedError(
            float(dx[i]), float(dy[i]), float(dh[i]),
            float(noise[i, 0]), float(noise[i, 1]), float(noise[i, 2]), float(noise[i, 3]), float(noise[i, 4]),
            k,
            float(g_mag[i] * math.cos(g_dir[i])) if pos else 0.0,
            float(g_mag[i] * math.sin(g_dir[i])) if pos else 0.0,
            float(g_head[i]) if head else 0.0,
            bool(has_rot[i]),
        ))
    return out
