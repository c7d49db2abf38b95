"""Per-image pose refinement against the city model: heading, pitch, roll, position (x, y) and
camera height, from photo edges and projected model edges (no render per evaluation).

Method (coarse to fine; every step is a pure function of arrays plus the ray caster):

1. **Level.** Start from the reported rotation; reject |pitch| or |roll| beyond ``max_tilt_deg``
   (an SfM failure, not something to refine).
2. **Coarse heading.** In a level panorama heading is a column shift: circular cross-correlation
   (FFT) of the photo's and the model's column descriptors — sky-line elevation and vertical-edge
   density — over ±``heading_search_deg`` gives the heading start (handles errors > 10°).
3. **Coarse position.** Visible model edge points (vertical building corners, facade–ground lines,
   ground-layer outlines, rooflines with low weight; :mod:`.model_edges`) are projected from a grid
   of positions around the reported one, each with a small local heading scan, and scored by the
   truncated, orientation-binned distance transform of the photo edges at 512 px
   (:func:`.photo_edges.edge_map`). That nearest-pixel cost ranks cells only roughly (a cell
   centre is up to a step from the truth): the best ``n_probe_starts`` cells get
   ``probe_iter`` least-squares iterations on every third point, and the best of those go on.
4. **Robust least squares** (Levenberg–Marquardt + Cauchy IRLS, :mod:`.solver`) over all six numbers
   from the best grid starts, on the same distance transforms, with Gaussian priors (the reported
   pose, or a sequence prior) and visibility refreshed by ray casting after each solve.
5. **Fine** at full resolution: for every point, the nearest strong colour step along the
   projected edge normal (sub-pixel, :func:`.photo_edges.edge_offsets`) becomes a point-to-line
   target; least squares again, with shrinking search radii (ICP-like). Optionally weighted by the
   model's own errors (``model_error_weighting``, generalised least squares per building).

The result carries the solution, an internal edge cost before/after, counts of what was seen, and
a predicted accuracy: the covariance induced by per-building model offsets of
``building_offset_sigma_m`` (OSM footprints are metres off, so a corner at distance d has its
azimuth wrong by ≈ σ/d rad; heading and position can only be as good as the number and distance of
the independent buildings in view allow).

Whether the solution is *adopted* is decided by the alignment score (:mod:`.score`), not here:
see :mod:`s2r_data.align.pipeline`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..poses import Pose
from .model_edges import EdgeKind, EdgePoints, ModelEdges, Occluder, sample_visible_points
from .photo_edges import EdgeMap, EdgeMapConfig, PhotoSampler, check_photo, downsample_channels, edge_map, edge_offsets, opponent_channels, sky_mask
from .solver import solve_robust
from .pose_vector import PoseCorrection, pose_from_vector, vector_from_pose
from .projection import project, project_with_directions, projection_jacobian, wrap_dx

__all__ = ["RefineConfig", "PosePrior", "RefineResult", "refine_pose", "PhotoFeatures", "photo_features", "edge_cost_deg"]


@dataclass(frozen=True, kw_only=True)
class RefineConfig:
    coarse: EdgeMapConfig = EdgeMapConfig(width_px=512)
    heading_search_deg: float = 30.0  # FFT heading search range (±)
    local_heading_deg: float = 3.0  # heading scan around each grid position (±)
    grid_half_m: float = 4.5  # position grid ±
    grid_step_m: float = 1.5
    n_starts: int = 2  # least-squares starts from the best grid cells
    n_probe_starts: int = 8  # grid cells tried with a short least squares first (on every 3rd point); the best go on
    probe_iter: int = 5  # iterations of that short least squares
    fine_radii_px: tuple[float, ...] = (8.0, 4.0, 2.5)  # at 2048 px, scaled to the photo width
    coarse_scale_px: float = 1.5  # robust-loss scale of the distance-transform residuals (coarse px)
    fine_scale_px: float = 1.5  # robust-loss scale of the point-to-line residuals (full-res px at 2048)
    fine_blur_px: float = 0.0  # Gaussian blur of the full-resolution photo before the edge search
    loss: Literal["cauchy", "soft_l1", "huber"] = "cauchy"
    sigma_heading_deg: float = 20.0  # prior around the start (reported pose or sequence prior)
    sigma_tilt_deg: float = 3.0
    sigma_xy_m: float = 6.0
    sigma_z_m: float = 0.6
    height_range_m: tuple[float, float] = (0.8, 4.5)  # camera height above the ground plane (bounds)
    ground_z_m: float = 0.0
    max_tilt_deg: float = 20.0  # |pitch| or |roll| beyond: rejected, not refined
    min_points: int = 40  # fewer visible edge points: low confidence, not refined
    min_building_points: int = 20
    radius_m: float = 300.0
    coarse_step_deg: float = 0.7
    fine_step_deg: float = 0.3
    max_points_per_edge: int = 40
    kind_weights: tuple[tuple[str, float], ...] = ()  # overrides, e.g. (("roofline", 0.1),)
    building_offset_sigma_m: float = 1.0  # model error per building (footprint offset, σ per axis)
    ground_offset_sigma_m: float = 0.3  # per ground-outline edge
    model_error_weighting: bool = False  # weight the fine level by those errors (GLS; see docs/alignment.md)

    def __post_init__(self) -> None:
        if self.grid_step_m <= 0 or self.grid_half_m < 0:
            raise ValueError("RefineConfig.grid_step_m must be > 0 and grid_half_m >= 0")
        lo, hi = self.height_range_m
        if not 0 < lo < hi:
            raise ValueError(f"RefineConfig.height_range_m={self.height_range_m}: need 0 < low < high")
        if self.n_starts < 1 or self.n_probe_starts < self.n_starts or self.probe_iter < 1:
            raise ValueError(f"RefineConfig: need 1 <= n_starts ({self.n_starts}) <= n_probe_starts ({self.n_probe_starts}) "
                             f"and probe_iter >= 1 ({self.probe_iter})")
        if not self.fine_radii_px:
            raise ValueError("RefineConfig.fine_radii_px needs at least one radius")
        names = {k.name.lower() for k in EdgeKind}
        for name, w in self.kind_weights:
            if name not in names or w < 0:
                raise ValueError(f"RefineConfig.kind_weights: {name!r}={w}; names {sorted(names)}, weights >= 0")

    def weights(self) -> dict[EdgeKind, float]:
        return {EdgeKind[name.upper()]: float(w) for name, w in self.kind_weights}


@dataclass(frozen=True)
class PosePrior:
    """Independent Gaussian priors on the six numbers (rad, rad, rad, m, m, m)."""

    mean: np.ndarray
    sigma: np.ndarray

    @classmethod
    def around(cls, pose: Pose, config: RefineConfig) -> "PosePrior":
        t = math.radians(config.sigma_tilt_deg)
        sig = np.array([math.radians(config.sigma_heading_deg), t, t, config.sigma_xy_m, config.sigma_xy_m, config.sigma_z_m])
        return cls(vector_from_pose(pose), sig)


@dataclass(frozen=True)
class PhotoFeatures:
    """What the refinement and the score need of one photo (computed once)."""

    coarse: EdgeMap
    sampler: PhotoSampler
    sky: np.ndarray  # bool (h, w) at 256 px
    vertical_profile: np.ndarray  # float (coarse W,) vertical-edge density per column
    skyline: np.ndarray  # float (coarse W,) sky-line elevation per column (rad)


def _skyline_from_mask(non_sky: np.ndarray, width: int) -> np.ndarray:
    """Per column: elevation (rad) of the highest non-sky pixel (−π/2 if none), resampled to ``width``."""
    h, w = non_sky.shape
    any_ = non_sky.any(axis=0)
    top = np.argmax(non_sky, axis=0)
    lat = -((top - (h - 1) / 2) / w * 2 * math.pi)
    lat = np.where(any_, lat, -math.pi / 2)
    if w != width:
        x = (np.arange(width) + 0.5) * w / width - 0.5
        lat = np.interp(x, np.arange(w), lat, period=w)
    return lat


def photo_features(photo: np.ndarray, config: RefineConfig = RefineConfig()) -> PhotoFeatures:
    """Edges, sampler, sky and column descriptors of a photo ((H, W, 3) uint8 or float in [0, 1];
    raises :class:`.photo_edges.PhotoError` for unusable input)."""
    chan = opponent_channels(check_photo(photo))
    em = edge_map(chan, config.coarse)
    sampler = PhotoSampler.of(chan, sigma_px=config.fine_blur_px)
    sky = sky_mask(downsample_channels(chan, config.coarse.width_px))
    vertical = np.abs(em.line_angle_rad - math.pi / 2) <= math.radians(20)
    r0, r1 = _band_rows(em.height, em.width, -25.0, 60.0)
    prof = (em.edges & vertical)[r0:r1].sum(axis=0).astype(np.float64)
    return PhotoFeatures(em, sampler, sky, prof, _skyline_from_mask(~sky, em.width))


def _band_rows(height: int, width: int, lat_lo_deg: float, lat_hi_deg: float) -> tuple[int, int]:
    def row(lat_deg: float) -> int:
        return int(round(-math.radians(lat_deg) / (2 * math.pi) * width + (height - 1) / 2))

    return max(0, row(lat_hi_deg)), min(height, row(lat_lo_deg) + 1)


@dataclass(frozen=True)
class RefineResult:
    image_id: str
    status: str  # "refined" | "low_confidence" | "rejected" | "failed"
    flags: tuple[str, ...]
    reported: Pose
    solution: Pose  # the refinement's answer (= reported when not refined)
    cost_before_deg: float  # internal edge cost at the reported pose (truncated mean distance, degrees)
    cost_after_deg: float
    n_points: int
    n_corners: int
    n_buildings: int
    predicted_std: dict[str, float] = field(default_factory=dict)  # heading_deg, position_m, height_m
    time_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def correction(self) -> PoseCorrection:
        return PoseCorrection.between(self.reported, self.solution)


# ---------------------------------------------------------------------------------------------
# costs


def _bins_for(em: EdgeMap, pts: EdgePoints, v: np.ndarray) -> np.ndarray:
    _, _, d = project_with_directions(pts.xyz_local_m, pts.tangent_local, v, em.width)
    return em.bin_of(np.arctan2(d[:, 1], d[:, 0]))


def _valid_rows(py: np.ndarray, height: int, margin: float = 0.04) -> np.ndarray:
    return (py > height * margin) & (py < height * (1 - margin))


def edge_cost_deg(em: EdgeMap, pts: EdgePoints, v: np.ndarray, bins: np.ndarray | None = None) -> float:
    """Weighted mean truncated distance (degrees) from projected model points to photo edges of
    their orientation: the refinement's internal cost (lower = better aligned)."""
    if len(pts) == 0:
        return float("nan")
    if bins is None:
        bins = _bins_for(em, pts, v)
    px, py = project(pts.xyz_local_m, v, em.width)
    ok = _valid_rows(py, em.height)
    if not ok.any():
        return float("nan")
    d = em.distance(px[ok], py[ok], bins[ok])
    return float((pts.weight[ok] * d).sum() / pts.weight[ok].sum() * 360.0 / em.width)


# ---------------------------------------------------------------------------------------------
# coarse heading: FFT over column descriptors


def _circular_xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c[s] = Σ_x a[x] · b[x − s] for all shifts (a, b zero-mean, normalised)."""
    a = a - a.mean()
    b = b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-9 or nb < 1e-9:
        return np.zeros_like(a)
    return np.fft.irfft(np.fft.rfft(a) * np.conj(np.fft.rfft(b)), n=len(a)) / (na * nb)


def _gauss_blur_circular(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x.astype(np.float64), sigma, mode="wrap")


def coarse_heading_shift(
    feats: PhotoFeatures, pts: EdgePoints, v: np.ndarray, model_skyline: np.ndarray | None, search_deg: float
) -> tuple[float, float]:
    """Heading change (rad) that best aligns the model's column descriptors with the photo's, and
    the peak's normalised correlation."""
    W = feats.coarse.width
    px, py = project(pts.xyz_local_m, v, W)
    vert = pts.kind == EdgeKind.VERTICAL
    prof_m = np.bincount(np.round(px[vert]).astype(np.int64) % W, minlength=W).astype(np.float64)
    sig = 2.0
    c = _circular_xcorr(_gauss_blur_circular(feats.vertical_profile, sig), _gauss_blur_circular(prof_m, sig))
    if model_skyline is not None:
        c = c + _circular_xcorr(_gauss_blur_circular(feats.skyline, sig), _gauss_blur_circular(model_skyline, sig))
    shifts = np.arange(W)
    shifts = np.where(shifts >= W / 2, shifts - W, shifts)  # photo = model shifted right by s px
    allowed = np.abs(shifts) <= search_deg / 360.0 * W
    c = np.where(allowed, c, -np.inf)
    s = int(np.argmax(c))
    # parabolic sub-pixel peak
    y0, y1, y2 = c[(s - 1) % W], c[s], c[(s + 1) % W]
    den = y0 - 2 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if np.isfinite(den) and abs(den) > 1e-12 else 0.0
    shift_px = shifts[s] + float(np.clip(frac, -0.5, 0.5))
    # content shifted right (+x, i.e. clockwise) means the camera heading is smaller
    return -shift_px / W * 2 * math.pi, float(c[s])


def _model_skyline(scene: Any, pose: Pose, width: int) -> np.ndarray | None:
    if not hasattr(scene, "render"):
        return None
    passes = scene.render(pose, 256)
    return _skyline_from_mask(passes.label[0] > 0, width)


# ---------------------------------------------------------------------------------------------
# coarse position grid + least squares on distance transforms


def _grid_search(em: EdgeMap, pts: EdgePoints, v0: np.ndarray, config: RefineConfig, prior: PosePrior) -> list[np.ndarray]:
    """Best ``n_probe_starts`` (≥ ``n_starts``) pose vectors over a position grid with a local heading scan."""
    W = em.width
    bins = _bins_for(em, pts, v0)
    steps = np.arange(-config.grid_half_m, config.grid_half_m + 1e-9, config.grid_step_m)
    n_h = int(math.ceil(config.local_heading_deg / 360.0 * W))
    hs = np.arange(-n_h, n_h + 1, dtype=np.float64)  # column shifts
    w = pts.weight
    cands = []
    for dx in steps:
        for dy in steps:
            v = v0.copy()
            v[3] += dx
            v[4] += dy
            px, py = project(pts.xyz_local_m, v, W)
            ok = _valid_rows(py, em.height)
            if ok.sum() < 3:
                continue
            # (shifts, points) nearest-pixel lookups (the grid is coarse; least squares refines)
            xi = (np.round(px[ok])[None].astype(np.int64) + hs[:, None].astype(np.int64)) % W
            yi = np.clip(np.round(py[ok]).astype(np.int64), 0, em.height - 1)
            d = em.dt_px[bins[ok][None], yi[None], xi]
            cost = (d * w[ok]).sum(1) / w[ok].sum()
            # prior in "pixels": keep far cells from winning on weak evidence
            pen = 0.5 * ((dx + v0[3] - prior.mean[3]) ** 2 + (dy + v0[4] - prior.mean[4]) ** 2) / prior.sigma[3] ** 2
            j = int(np.argmin(cost))
            vv = v.copy()
            vv[0] -= hs[j] / W * 2 * math.pi
            cands.append((float(cost[j]) + pen, vv))
    cands.sort(key=lambda t: t[0])
    picked: list[np.ndarray] = []
    for _, vv in cands:
        if all(np.hypot(*(vv[3:5] - p[3:5])) > 1.2 * config.grid_step_m or abs(math.remainder(vv[0] - p[0], 2 * math.pi)) > math.radians(2)
               for p in picked):
            picked.append(vv)
        if len(picked) >= config.n_probe_starts:
            break
    return picked or [v0]


def _bounds(config: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([-np.inf, -math.radians(config.max_tilt_deg), -math.radians(config.max_tilt_deg), -np.inf, -np.inf,
                   config.ground_z_m + config.height_range_m[0]])
    hi = np.array([np.inf, math.radians(config.max_tilt_deg), math.radians(config.max_tilt_deg), np.inf, np.inf,
                   config.ground_z_m + config.height_range_m[1]])
    return lo, hi


def _clip_into(v: np.ndarray, config: RefineConfig) -> np.ndarray:
    lo, hi = _bounds(config)
    eps = 1e-6
    return np.clip(v, lo + eps, hi - eps)


def _solve_dt(em: EdgeMap, pts: EdgePoints, v_start: np.ndarray, config: RefineConfig, prior: PosePrior,
              max_iter: int = 20) -> tuple[np.ndarray, float]:
    """Robust least squares on the orientation-binned distance transforms (coarse level)."""
    W = em.width
    bins = _bins_for(em, pts, v_start)
    sw = np.sqrt(pts.weight / pts.weight.mean())
    s = config.coarse_scale_px
    X = pts.xyz_local_m
    T = em.config.truncate_px

    def rj(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px, py, J = projection_jacobian(X, v, W)
        ok = _valid_rows(py, em.height)
        d, gx, gy = em.distance_and_gradient(px, py, bins)
        d = np.where(ok, d, T)
        Jd = (gx[:, None] * J[:, 0, :] + gy[:, None] * J[:, 1, :]) * (sw * ok)[:, None] / s
        return sw * d / s, Jd

    lo, hi = _bounds(config)
    r = solve_robust(rj, v_start, prior_mean=prior.mean, prior_sigma=prior.sigma, lower=lo, upper=hi, loss=config.loss,
                     max_iter=max_iter)
    return r.x, r.cost


# ---------------------------------------------------------------------------------------------
# fine level: edge search along normals + point-to-line least squares


def _solve_fine(
    feats: PhotoFeatures, pts: EdgePoints, v_start: np.ndarray, config: RefineConfig, prior: PosePrior, radius_px: float
) -> tuple[np.ndarray, dict[str, Any]]:
    sp = feats.sampler
    W, H = sp.width, sp.height
    scale = W / 2048.0
    px, py, d = project_with_directions(pts.xyz_local_m, pts.tangent_local, v_start, W)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    ok = _valid_rows(py, H)
    off, strength = edge_offsets(sp, px[ok], py[ok], n[ok], radius_px=max(radius_px * scale, 1.5))
    good = np.zeros(len(px), dtype=bool)
    good[np.flatnonzero(ok)[np.isfinite(off)]] = True
    info: dict[str, Any] = {"radius_px": radius_px, "matched": int(good.sum()), "points": int(len(px))}
    if good.sum() < 6:
        return v_start, info
    offs = np.full(len(px), np.nan)
    offs[np.flatnonzero(ok)] = off
    tx = px[good] + offs[good] * n[good, 0]
    ty = py[good] + offs[good] * n[good, 1]
    nn = n[good]
    X = pts.xyz_local_m[good]
    s = config.fine_scale_px * scale
    w = _model_error_weights(pts.subset(good), v_start, W, s, config)

    def rj(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qx, qy, J = projection_jacobian(X, v, W)
        r = nn[:, 0] * wrap_dx(qx - tx, W) + nn[:, 1] * (qy - ty)
        Jr = (nn[:, 0:1] * J[:, 0, :] + nn[:, 1:2] * J[:, 1, :]) / s
        return r / s, Jr

    lo, hi = _bounds(config)
    r = solve_robust(rj, v_start, prior_mean=prior.mean, prior_sigma=prior.sigma, lower=lo, upper=hi, loss=config.loss,
                     max_iter=10, weights=w)
    res, _ = rj(r.x)
    info["median_abs_residual_px"] = float(np.median(np.abs(res * s)))
    info["inlier_fraction"] = float((r.weights > 0.5).mean())
    return r.x, info


def _model_error_weights(pts: EdgePoints, v: np.ndarray, W: int, s_px: float, config: RefineConfig) -> np.ndarray:
    """Statistical weight of each point-to-line residual (in units of ``s_px``) when the model itself
    is wrong: a building offset by σ_b moves all its points together by ≈ σ_b/d rad, so a building's
    n points carry the information of ``s² / (s² + n·σ_model²)`` each (generalised least squares with
    a shared error per building; ground-outline pieces: σ_g, each edge its own group), times the
    kind weight. Far buildings count more for the heading; the sequence prior keeps its say.
    ``model_error_weighting=False``: the kind weights alone (an exact model)."""
    kind_w = pts.weight / pts.weight.mean()
    if not config.model_error_weighting:
        return kind_w
    d = np.linalg.norm(pts.xyz_local_m - v[3:6], axis=1)
    px_per_rad = W / (2 * math.pi)
    is_b = pts.building >= 0
    sigma_px = np.where(is_b, config.building_offset_sigma_m, config.ground_offset_sigma_m) / np.maximum(d, 1.0) * px_per_rad
    groups = np.where(is_b, pts.building, -1 - pts.edge)
    _, inv, cnt = np.unique(groups, return_inverse=True, return_counts=True)
    n = cnt[inv]
    return kind_w * s_px**2 / (s_px**2 + n * sigma_px**2)


def _predicted_std(pts: EdgePoints, v: np.ndarray, W: int, config: RefineConfig, prior: PosePrior) -> dict[str, float]:
    """σ of the solution induced by random per-building offsets (σ_b, horizontal) and per-edge
    offsets of ground outlines (σ_g), propagated through the fine level's weighted normal
    equations: Δθ = −A D δ with A = (JᵀWJ + P)⁻¹JᵀW, Cov = Σ_groups σ² A D_g D_gᵀ Aᵀ. This is the
    accuracy the model's own errors allow (the "physics floor" the benchmark reports)."""
    X = pts.xyz_local_m
    if len(X) < 6:
        return {}
    s = config.fine_scale_px * W / 2048.0
    _, _, d = project_with_directions(X, pts.tangent_local, v, W)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    _, _, J = projection_jacobian(X, v, W)
    Jr = (n[:, 0:1] * J[:, 0, :] + n[:, 1:2] * J[:, 1, :]) / s  # (N, 6): d residual / d params
    w = _model_error_weights(pts, v, W, s, config)
    try:
        A = np.linalg.solve(np.einsum("ni,nj->ij", Jr, Jr * w[:, None]) + np.diag(1.0 / prior.sigma**2), (Jr * w[:, None]).T)
    except np.linalg.LinAlgError:
        return {}
    # moving a point by a horizontal δ moves its projection like moving the camera by −δ:
    # ∂π/∂X = −∂π/∂C (columns 3, 4 of J), so the residual changes by −n·J_C δ
    dres = -(n[:, 0:1] * J[:, 0, 3:5] + n[:, 1:2] * J[:, 1, 3:5]) / s  # (N, 2)
    groups = np.where(pts.building >= 0, pts.building, -1 - pts.edge)
    cov = np.zeros((6, 6))
    for g in np.unique(groups):
        m = groups == g
        sig = config.building_offset_sigma_m if g >= 0 else config.ground_offset_sigma_m
        M = A[:, m] @ dres[m]  # (6, 2)
        cov += sig**2 * M @ M.T
    std = np.sqrt(np.maximum(np.diag(cov), 0))
    return {"heading_deg": math.degrees(std[0]), "pitch_deg": math.degrees(std[1]), "roll_deg": math.degrees(std[2]),
            "position_m": float(math.hypot(std[3], std[4])), "height_m": float(std[5])}


# ---------------------------------------------------------------------------------------------
# the whole per-image refinement


def refine_pose(
    photo: np.ndarray | PhotoFeatures,
    reported: Pose,
    edges: ModelEdges,
    scene: Occluder,
    config: RefineConfig = RefineConfig(),
    *,
    prior: PosePrior | None = None,
    start: Pose | None = None,
    coarse: bool = True,
    fine: bool = True,
    grid_half_m: float | None = None,
) -> RefineResult:
    """Refine one panorama's pose (see the module docstring).

    ``photo``: (H, W, 3) uint8 (or float in [0, 1]) or precomputed :class:`PhotoFeatures`.
    ``prior``: Gaussians on the six numbers (default: broad, around ``reported``); ``start``
    (default: the prior mean) is where the search starts. ``coarse=False`` skips the heading FFT
    and the position grid (a warm start); ``fine=False`` stops after the coarse level;
    ``grid_half_m`` overrides the grid extent."""
    t0 = time.perf_counter()
    feats = photo if isinstance(photo, PhotoFeatures) else photo_features(photo, config)
    prior = prior or PosePrior.around(reported, config)
    start_pose = start or pose_from_vector(prior.mean, reported)
    v0 = vector_from_pose(start_pose)
    em = feats.coarse
    flags: list[str] = []
    detail: dict[str, Any] = {}
    kw = config.weights()

    def sample(v: np.ndarray, step_deg: float) -> EdgePoints:
        return sample_visible_points(edges, v[3:6], scene, radius_m=config.radius_m, step_deg=step_deg,
                                     max_points_per_edge=config.max_points_per_edge, kind_weights=kw)

    def result(status: str, v: np.ndarray, pts: EdgePoints | None, cost_b: float, cost_a: float, std=None) -> RefineResult:
        sol = pose_from_vector(v, reported) if status == "refined" else reported
        return RefineResult(
            image_id=reported.image_id, status=status, flags=tuple(flags), reported=reported, solution=sol,
            cost_before_deg=cost_b, cost_after_deg=cost_a,
            n_points=len(pts) if pts is not None else 0,
            n_corners=pts.n_vertical_corners() if pts is not None else 0,
            n_buildings=pts.n_buildings() if pts is not None else 0,
            predicted_std=std or {}, time_s=time.perf_counter() - t0, detail=detail,
        )

    v_rep = vector_from_pose(reported)
    if max(abs(v_rep[1]), abs(v_rep[2])) > math.radians(config.max_tilt_deg):
        flags.append("tilt_out_of_range")
        return result("rejected", v_rep, None, float("nan"), float("nan"))
    pts = sample(v0, config.coarse_step_deg)
    pts_rep = pts if np.allclose(v0, v_rep) else sample(v_rep, config.coarse_step_deg)
    cost_before = edge_cost_deg(em, pts_rep, v_rep)
    n_bld = int((pts.building >= 0).sum())
    if len(pts) < config.min_points or n_bld < config.min_building_points:
        flags.append("no_building_in_view" if n_bld < config.min_building_points else "too_few_model_edges")
        return result("low_confidence", v_rep, pts, cost_before, cost_before)

    v = v0.copy()
    if coarse:
        model_sky = _model_skyline(scene, pose_from_vector(v, reported), em.width)
        dpsi, peak = coarse_heading_shift(feats, pts, v, model_sky, config.heading_search_deg)
        detail["fft_heading_deg"] = math.degrees(dpsi)
        detail["fft_peak"] = peak
        starts = [v]
        if abs(dpsi) > math.radians(1.0):
            vh = v.copy()
            vh[0] += dpsi
            starts.append(vh)
        gcfg = config if grid_half_m is None else dataclasses.replace(config, grid_half_m=grid_half_m)
        best: tuple[float, np.ndarray] | None = None
        grid_starts: list[np.ndarray] = []
        for s0 in starts:
            grid_starts += _grid_search(em, pts, s0, gcfg, prior)
        if config.n_probe_starts > config.n_starts:
            # the grid's nearest-pixel cost ranks cells only roughly: a few iterations from more cells,
            # then the full solve from the best of them
            few = pts.subset(np.arange(len(pts)) % 3 == 0) if len(pts) >= 3 * config.min_points else pts
            probed = [(edge_cost_deg(em, pts, vs), vs) for vs in
                      (_solve_dt(em, few, s0, config, prior, max_iter=config.probe_iter)[0] for s0 in grid_starts)]
            probed.sort(key=lambda t: t[0] if np.isfinite(t[0]) else np.inf)
            grid_starts = [vs for _, vs in probed]
        for s0 in grid_starts[: 2 * config.n_starts]:
            vs, _ = _solve_dt(em, pts, s0, config, prior)
            cost = edge_cost_deg(em, pts, vs)
            if best is None or cost < best[0]:
                best = (cost, vs)
        assert best is not None
        v = best[1]
        pts = sample(v, config.coarse_step_deg)  # visibility at the new centre, solve again
        if len(pts) >= config.min_points:
            v, _ = _solve_dt(em, pts, v, config, prior)
        detail["coarse_cost_deg"] = edge_cost_deg(em, pts, v)

    pts_f = sample(v, config.fine_step_deg if fine else config.coarse_step_deg)
    if fine:
        fine_info = []
        for radius in config.fine_radii_px:
            v, info = _solve_fine(feats, pts_f, v, config, prior, radius)
            fine_info.append(info)
            if np.hypot(*(v[3:5] - pts_f.center_local_m[:2])) > 1.0:
                pts_f = sample(v, config.fine_step_deg)
        detail["fine"] = fine_info
    v[0] = math.remainder(v[0], 2 * math.pi)
    pts_final = sample(v, config.coarse_step_deg)
    cost_after = edge_cost_deg(em, pts_final, v)
    std = _predicted_std(pts_f, v, feats.sampler.width, config, prior)
    return result("refined", v, pts_final, cost_before, cost_after, std)
