"""The alignment score of a pair: how well the render's edges sit on the photo's, from the photo and
the render passes alone (no model, no pretrained weights).

Components (all at ``ScoreConfig.width_px``):

* ``edge_cost_deg`` — truncated, orientation-aware chamfer distance: for every render edge
  (:mod:`.render_edges`), the distance to the nearest photo edge of the same orientation
  (:func:`.photo_edges.edge_map`), truncated at ``truncate_deg``, weighted by kind (vertical
  building edges 1, facade–ground lines 0.6, ground outlines 0.5, rooflines 0.15) — the mean, in
  degrees of view angle (0 = every edge on a photo edge).
* ``local_optimality`` and ``min_rise_deg`` — Levinson & Thrun's test, at two scales: the render
  edges are moved in 3-D (depth pass) as if the camera were rotated by ±1° and ±2° about each axis
  or moved by ±1 m and ±2 m along each axis (``perturb_scales``: 24 poses). ``local_optimality`` is
  the fraction of those poses whose cost is higher than at the pose; ``min_rise_deg`` is the sum,
  over the scales, of min over the scale's poses of (their cost − the cost at the pose): positive
  when the pose sits in a minimum at both scales, negative by as much as a 1–2° / 1–2 m move would
  improve it. Unlike the cost itself it does not depend on how cluttered the scene is (trees,
  vehicles, OSM's own errors), which is what makes pairs comparable across images.
* ``sky_iou`` — agreement of the sky: intersection over union of the photo's weight-free sky
  estimate and the render's sky, above the horizon.

**Score** (``score``, the index's ``alignment_score``): in [0, 1], higher = better aligned::

    score = exp(−edge_cost_deg / cost_scale_deg) · (0.1 + 0.9 · sigmoid(min_rise_deg / rise_scale_deg)) · (0.75 + 0.25 · sky_iou)

with cost_scale 2°, rise_scale 0.1° (the 0.1 floor keeps far-off pairs ordered by their edge
cost). On the 240-panorama realistic stand-in world a pair within 0.2° / 0.2 m of its true pose
scores median ≈ 0.43 (10th percentile 0.18), one off by > 1° or > 1 m median ≈ 0.07 (90th
percentile 0.21), one with no usable edges ≈ 0 (ROC AUC ≈ 0.96, ``benchmarks/alignment.py``; the
single-scale test at ±1° / 1 m with cost_scale 1°: 0.93; measured in ``docs/alignment.md``). The
trainer can weight L1 by it directly.

Flags (the pair is still scored where possible; ``confidence`` is "low" with any flag):
``no_building_in_view`` (too few building edges for a meaningful score), ``photo_unusable``
(empty/constant photo: score NaN), ``render_all_sky`` (score NaN), ``render_nonfinite`` (NaN in a
pass: score NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..equirect import bearing_to_pixel
from ..poses import rodrigues
from .model_edges import EdgeKind
from .photo_edges import EdgeMap, EdgeMapConfig, PhotoError, check_photo, edge_map, opponent_channels, sky_mask
from .render_edges import PassesError, RenderEdges, check_passes, render_edges

__all__ = ["ScoreConfig", "AlignmentScore", "score_pair", "score_from_edges", "SCORE_DOC"]

SCORE_DOC = ("alignment_score in [0, 1], higher = better aligned: exp(-edge_cost_deg/2°) * "
             "(0.1 + 0.9*sigmoid(min_rise_deg/0.1°)) * (0.75 + 0.25*sky_iou), min_rise_deg summed over "
             "±1°/1 m and ±2°/2 m perturbations (s2r_data.align.score)")


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    width_px: int = 1024
    truncate_deg: float = 4.0
    cost_scale_deg: float = 2.0
    rise_scale_deg: float = 0.1  # min_rise_deg of this much gives sigmoid(1) ≈ 0.73
    perturb_deg: float = 1.0  # the smallest perturbation (rotation about each axis) ...
    perturb_m: float = 1.0  # ... and move along each axis
    perturb_scales: tuple[float, ...] = (1.0, 2.0)  # multiples of those tested; min_rise_deg sums over them
    min_building_edges: int = 40  # fewer vertical/ground-line building edge px at 1024: low confidence
    local_margin_deg: float = 0.02  # a perturbed pose counts as worse if its cost is higher by this

    def __post_init__(self) -> None:
        if not self.perturb_scales or min(self.perturb_scales) <= 0:
            raise ValueError(f"ScoreConfig.perturb_scales={self.perturb_scales}: need at least one scale, all > 0")
        for name in ("cost_scale_deg", "rise_scale_deg", "perturb_deg", "perturb_m", "truncate_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ScoreConfig.{name}={getattr(self, name)}: must be > 0")

    def edge_config(self) -> EdgeMapConfig:
        return EdgeMapConfig(width_px=self.width_px, truncate_px=self.truncate_deg / 360.0 * self.width_px)


@dataclass(frozen=True)
class AlignmentScore:
    score: float  # [0, 1] or NaN when unusable
    edge_cost_deg: float
    local_optimality: float
    sky_iou: float
    min_rise_deg: float
    n_edges: int
    n_building_edges: int
    confidence: str  # "ok" | "low"
    flags: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return bool(np.isfinite(self.score))

    def to_dict(self) -> dict[str, Any]:
        return {"score": _f(self.score), "edge_cost_deg": _f(self.edge_cost_deg), "local_optimality": _f(self.local_optimality),
                "sky_iou": _f(self.sky_iou), "min_rise_deg": _f(self.min_rise_deg), "n_edges": self.n_edges, "n_building_edges": self.n_building_edges,
                "confidence": self.confidence, "flags": list(self.flags)}


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _unusable(flag: str, message: str) -> AlignmentScore:
    nan = float("nan")
    return AlignmentScore(nan, nan, nan, nan, nan, 0, 0, "low", (flag,), {"message": message})


def _cost(em: EdgeMap, px: np.ndarray, py: np.ndarray, bins: np.ndarray, w: np.ndarray) -> float:
    ok = (py > 1) & (py < em.height - 2)
    if not ok.any() or w[ok].sum() <= 0:
        return float("nan")
    d = em.distance(px[ok], py[ok], bins[ok])
    return float((w[ok] * d).sum() / w[ok].sum() * 360.0 / em.width)


def _perturbations(perturb_deg: float, perturb_m: float) -> list[np.ndarray]:
    """Small camera motions as (6,) vectors: rotation about camera-frame axes (rad), translation (m)."""
    out = []
    a = math.radians(perturb_deg)
    for k in range(3):
        for s in (-1.0, 1.0):
            v = np.zeros(6)
            v[k] = s * a
            out.append(v)
    for k in range(3):
        for s in (-1.0, 1.0):
            v = np.zeros(6)
            v[3 + k] = s * perturb_m
            out.append(v)
    return out


def _moved(xyz_cam: np.ndarray, dv: np.ndarray, R_world_to_cam: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Edge points (camera frame) seen from a camera rotated by a yaw/pitch/roll-like increment
    about its own axes and moved by dv[3:] in the world frame."""
    ax = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # yaw about cam y, pitch about x, roll about z
    R = np.eye(3)
    for k in range(3):
        if dv[k]:
            R = rodrigues(ax[k] * dv[k]) @ R
    t_cam = R_world_to_cam @ dv[3:6]
    p = (xyz_cam - t_cam) @ R.T
    pix = bearing_to_pixel(p, width, width // 2)
    return pix[:, 0], pix[:, 1]


def score_from_edges(
    em: EdgeMap,
    photo_sky: np.ndarray | None,
    edges: RenderEdges,
    label: np.ndarray,
    R_world_to_cam: np.ndarray,
    config: ScoreConfig = ScoreConfig(),
) -> AlignmentScore:
    """Score with precomputed photo edges (:func:`.photo_edges.edge_map` at ``config.width_px``)."""
    W = em.width
    f = W / edges.width
    px, py = edges.px * f + (f - 1) / 2, edges.py * f + (f - 1) / 2
    bins = em.bin_of(edges.line_angle_rad)
    w = edges.weight
    flags: list[str] = []
    bld = (edges.kind == EdgeKind.VERTICAL) | (edges.kind == EdgeKind.GROUND_LINE)
    n_bld = int(bld.sum() * (1024.0 / edges.width))
    lab = label[0] if label.ndim == 3 else label
    if not (lab > 0).any():
        return _unusable("render_all_sky", "the render shows only sky: the camera is outside the model or looks away from it")
    if n_bld < config.min_building_edges:
        flags.append("no_building_in_view")
    cost0 = _cost(em, px, py, bins, w)
    if not np.isfinite(cost0):
        return _unusable("no_edges", "the render has no edges in the usable rows")
    xyz = edges.xyz_cam()
    worse = 0
    costs: list[float] = []
    min_rise = 0.0
    for scale in config.perturb_scales:
        at_scale = []
        for dv in _perturbations(scale * config.perturb_deg, scale * config.perturb_m):
            qx, qy = _moved(xyz, dv, R_world_to_cam, edges.width)
            c = _cost(em, qx * f + (f - 1) / 2, qy * f + (f - 1) / 2, bins, w)
            at_scale.append(c)
            worse += int(c > cost0 + config.local_margin_deg)
        finite = [c for c in at_scale if np.isfinite(c)]
        min_rise = (min_rise + min(finite) - cost0) if finite else float("nan")  # NaN once a scale has no finite cost
        costs += at_scale
    local = worse / len(costs)
    sky_iou = float("nan")
    if photo_sky is not None:
        h, wd = photo_sky.shape
        step = lab.shape[1] // wd
        rs = lab[::step, ::step][:h, :wd] == 0 if step >= 1 else None
        if rs is not None and rs.shape == photo_sky.shape:
            upper = slice(0, h // 2)
            a, b = photo_sky[upper], rs[upper]
            union = (a | b).sum()
            sky_iou = float((a & b).sum() / union) if union else 1.0
    sky_term = 0.75 + 0.25 * (sky_iou if np.isfinite(sky_iou) else 0.5)
    rise = min_rise if np.isfinite(min_rise) else 0.0
    rise_term = 0.1 + 0.9 / (1.0 + math.exp(-float(np.clip(rise / config.rise_scale_deg, -50, 50))))
    score = math.exp(-cost0 / config.cost_scale_deg) * rise_term * sky_term
    conf = "low" if flags else "ok"
    return AlignmentScore(float(score), cost0, float(local), sky_iou, float(min_rise), len(edges), n_bld, conf, tuple(flags),
                          {"perturbed_costs_deg": [round(c, 4) for c in costs]})


def score_pair(
    photo: np.ndarray,
    label: np.ndarray,
    depth_m: np.ndarray,
    normal: np.ndarray,
    R_world_to_cam_opensfm: np.ndarray,
    config: ScoreConfig = ScoreConfig(),
    *,
    photo_edges: tuple[EdgeMap, np.ndarray] | None = None,
) -> AlignmentScore:
    """Score one pair: ``photo`` (H, W, 3) uint8 (or (3, H, W)), and the render's ``label`` (H', W'),
    ``depth_m`` and ``normal`` (3, H', W') at the pose whose rotation is ``R_world_to_cam_opensfm``.
    Data problems (empty photo, all-sky render, NaN in a pass) give a flagged result with a NaN
    score, never an exception; ``photo_edges`` = (edge map at ``config.width_px``, sky mask) reuses
    the photo's edges across poses."""
    try:
        lab, dep, nor = check_passes(label, depth_m, normal)
    except PassesError as e:
        flag = "render_nonfinite" if "NaN" in str(e) else "render_invalid"
        return _unusable(flag, str(e))
    if photo_edges is None:
        try:
            chan = opponent_channels(check_photo(photo))
        except PhotoError as e:
            return _unusable("photo_unusable", str(e))
        em = edge_map(chan, config.edge_config())
        sky = sky_mask(chan)
    else:
        em, sky = photo_edges
    edges = render_edges(lab, dep, nor)
    return score_from_edges(em, sky, edges, lab, np.asarray(R_world_to_cam_opensfm, dtype=np.float64), config)
