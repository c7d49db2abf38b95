"""Align a set of panoramas: per-image refinement, the sequence prior, the score, and the decision
(never worse than the reported pose).

Per sequence (images in capture order):

1. **pass 1** — every image alone, coarse level only (FFT heading, position grid, distance-transform
   least squares) with broad priors around the reported pose;
2. **sequence prior** — :func:`.sequence.fit_sequence_prior` over the pass-1 solutions
   (leave-one-out, robust): the smooth drift correction at each image, and the rig's pitch, roll
   and height;
3. **pass 2** — every image again, regularised towards its sequence prior: a warm start from its
   pass-1 solution where the two agree (heading, position and the rig's pitch, roll and height), a
   new coarse search around the prior where they do not (a gross error, a failed pass 1, or one
   stuck at a wrong camera height); then the fine level;
4. **decision** — the alignment score (:mod:`.score`, from the photo and ray-cast renders) at the
   reported pose and at the solution; the solution is adopted only if it scores higher by
   ``min_gain``. Otherwise the reported pose is kept (status ``kept_reported``). Images whose best
   pose still scores below ``poor_score`` are flagged ``poorly_aligned`` (and ``unrecovered`` when
   the reported pose looked like a gross error); images without buildings in view are
   ``low_confidence``.

Everything here is a pure function of photos, poses, the model's edges and a ray caster; I/O
(loading photos, writing the store) belongs to the caller.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..poses import Pose
from .model_edges import ModelEdges
from .photo_edges import PhotoError, edge_map
from .pose_vector import PoseCorrection, pose_from_vector, vector_from_pose
from .refine import PhotoFeatures, PosePrior, RefineConfig, RefineResult, photo_features, refine_pose
from .score import AlignmentScore, ScoreConfig, score_from_edges
from .render_edges import PassesError, render_edges
from .sequence import SequenceConfig, along_track_m, fit_sequence_prior, trajectory_xy_loo

__all__ = ["AlignConfig", "AlignInput", "AlignOutcome", "align_sequence", "align_images", "STATUSES", "score_pose"]

STATUSES = ("refined", "kept_reported", "low_confidence", "unrecovered", "rejected", "failed", "not_refined")


@dataclass(frozen=True, kw_only=True)
class AlignConfig:
    refine: RefineConfig = RefineConfig()
    score: ScoreConfig = ScoreConfig()
    sequence: SequenceConfig = SequenceConfig()
    min_gain: float = 0.01  # adopt the refined pose only if its score is higher by this
    poor_score: float = 0.18  # below: flagged poorly_aligned (≈ the 10th percentile of well-aligned pairs)
    gross_position_m: float = 6.0  # corrections beyond these are gross errors (recovered or not)
    gross_heading_deg: float = 10.0
    agree_sigmas: float = 3.0  # pass-1 solution within this many σ of the sequence prior: warm start
    rig_sigmas: float = 4.0  # candidates with pitch/roll/height further from the sequence's are not adopted
    render_rows_deg: tuple[float, float] = (-70.0, 75.0)  # latitude band rendered for the score
    max_sequence_images: int = 24  # longer sequences are aligned in consecutive pieces (bounded memory)


@dataclass(frozen=True)
class AlignInput:
    image_id: str
    reported: Pose
    load_photo: Callable[[], np.ndarray]  # → (H, W, 3) uint8
    sequence_id: str | None = None
    captured_at_ms: int | None = None


@dataclass(frozen=True)
class AlignOutcome:
    image_id: str
    sequence_id: str | None
    status: str  # one of STATUSES
    flags: tuple[str, ...]
    reported: Pose
    pose: Pose  # adopted: the refined pose, or the reported one
    candidate: Pose  # the refinement's answer (adopted or not)
    score_before: AlignmentScore | None
    score_after: AlignmentScore | None  # at the adopted pose
    predicted_std: dict[str, float] = field(default_factory=dict)
    n_corners: int = 0
    n_buildings: int = 0
    time_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def correction(self) -> PoseCorrection:
        return PoseCorrection.between(self.reported, self.pose)

    @property
    def refined(self) -> bool:
        return self.status == "refined"

    def index_columns(self) -> dict[str, Any]:
        """Additive index columns (see ``s2r_data.store.schema``); the pose columns of the row are
        those of :attr:`pose`."""

        def sc(s: AlignmentScore | None) -> float | None:
            return float(s.score) if s is not None and np.isfinite(s.score) else None

        return {
            "alignment_score_before": sc(self.score_before),
            "alignment_status": self.status,
            "alignment_flags": ",".join(self.flags) or None,
            "alignment_edge_cost_deg": (float(self.score_after.edge_cost_deg)
                                        if self.score_after is not None and np.isfinite(self.score_after.edge_cost_deg) else None),
            "reported_x_local_m": float(self.reported.center_local_m[0]),
            "reported_y_local_m": float(self.reported.center_local_m[1]),
            "reported_z_local_m": float(self.reported.center_local_m[2]),
            "reported_R_world_to_cam_opensfm": [float(v) for v in self.reported.R_world_to_cam_opensfm.reshape(9)],
            "pose_correction": self.correction.to_list(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (cached per image by the flow)."""
        return {
            "image_id": self.image_id, "sequence_id": self.sequence_id, "status": self.status, "flags": list(self.flags),
            "reported": self.reported.to_dict(), "pose": self.pose.to_dict(), "candidate": self.candidate.to_dict(),
            "score_before": self.score_before.to_dict() if self.score_before else None,
            "score_after": self.score_after.to_dict() if self.score_after else None,
            "predicted_std": self.predicted_std, "n_corners": self.n_corners, "n_buildings": self.n_buildings,
            "time_s": self.time_s, "correction": self.correction.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlignOutcome":
        def sc(x: dict[str, Any] | None) -> AlignmentScore | None:
            if x is None:
                return None
            nan = float("nan")
            g = lambda k: nan if x.get(k) is None else float(x[k])  # noqa: E731
            return AlignmentScore(g("score"), g("edge_cost_deg"), g("local_optimality"), g("sky_iou"), g("min_rise_deg"), int(x.get("n_edges", 0)),
                                  int(x.get("n_building_edges", 0)), str(x.get("confidence", "low")), tuple(x.get("flags", ())))

        return cls(d["image_id"], d.get("sequence_id"), d["status"], tuple(d.get("flags", ())), Pose.from_dict(d["reported"]),
                   Pose.from_dict(d["pose"]), Pose.from_dict(d["candidate"]), sc(d.get("score_before")), sc(d.get("score_after")),
                   dict(d.get("predicted_std", {})), int(d.get("n_corners", 0)), int(d.get("n_buildings", 0)), float(d.get("time_s", 0.0)))


def score_pose(feats: PhotoFeatures, score_em: Any, pose: Pose, scene: Any, config: AlignConfig) -> AlignmentScore:
    """Score ``pose`` against the photo with a ray-cast render at the score width."""
    W = config.score.width_px
    H = W // 2

    def row(lat_deg: float) -> int:
        return int(np.clip(round((0.5 - lat_deg / 180.0) * H), 0, H))

    rows = (row(config.render_rows_deg[1]), row(config.render_rows_deg[0]))
    passes = scene.render(pose, W, rows=rows)
    try:
        edges = render_edges(passes.label, passes.depth_m, passes.normal, lat_range_deg=config.render_rows_deg)
    except PassesError as e:
        nan = float("nan")
        return AlignmentScore(nan, nan, nan, nan, nan, 0, 0, "low", ("render_nonfinite",), {"message": str(e)})
    return score_from_edges(score_em, feats.sky, edges, passes.label, pose.R_world_to_cam_opensfm, config.score)


def _std_vector(res: RefineResult) -> np.ndarray:
    p = res.predicted_std
    if not p:
        return np.full(6, np.inf)
    r = math.radians
    return np.array([r(p["heading_deg"]), r(p["pitch_deg"]), r(p["roll_deg"]), p["position_m"] / math.sqrt(2),
                     p["position_m"] / math.sqrt(2), p["height_m"]]) + np.array([r(0.05), r(0.05), r(0.05), 0.05, 0.05, 0.02])


def _is_gross(c: PoseCorrection, config: AlignConfig) -> bool:
    return c.horizontal_m > config.gross_position_m or abs(c.d_heading_deg) > config.gross_heading_deg


def _plausible(res: RefineResult, prior: PosePrior | None, config: AlignConfig) -> bool:
    """The rig is bolted on: a candidate whose pitch, roll or camera height is more than
    ``rig_sigmas`` σ from its sequence's is a wrong minimum, however well it scores."""
    if prior is None or res.status != "refined":
        return True
    return _rig_consistent(vector_from_pose(res.solution), prior, config)


def _rig_consistent(v: np.ndarray, prior: PosePrior, config: AlignConfig) -> bool:
    """Pitch, roll and camera height of pose vector ``v`` within ``rig_sigmas`` σ of the prior's."""
    d = v - prior.mean
    sig = np.maximum(prior.sigma, [0, math.radians(0.5), math.radians(0.5), 0, 0, 0.05])
    return bool(np.all(np.abs(d[[1, 2, 5]]) <= config.rig_sigmas * sig[[1, 2, 5]]))


def _decide(
    item: AlignInput, feats: PhotoFeatures, candidates: Sequence[RefineResult], scene: Any, config: AlignConfig,
    extra_flags: Sequence[str], t0: float, detail: dict[str, Any], prior: PosePrior | None = None,
) -> AlignOutcome:
    """Score the reported pose and every plausible refined candidate; adopt the best candidate if it
    beats the reported pose by ``min_gain`` (never worse), and flag what is doubtful."""
    score_em = edge_map(feats.sampler.chan, config.score.edge_config())
    before = score_pose(feats, score_em, item.reported, scene, config)
    refined = [c for c in candidates if c.status == "refined" and _plausible(c, prior, config)]
    if len(refined) < sum(c.status == "refined" for c in candidates):
        detail["implausible_candidates"] = sum(c.status == "refined" for c in candidates) - len(refined)
    first = candidates[0]
    flags = list(dict.fromkeys([*first.flags, *extra_flags]))
    if not refined:
        status = first.status
        if status == "refined":  # solutions existed, none plausible for this rig
            status = "kept_reported"
            flags.append("implausible_solution")
        return AlignOutcome(item.image_id, item.sequence_id, status, tuple(flags), item.reported, item.reported, first.solution,
                            before, before, first.predicted_std, first.n_corners, first.n_buildings, time.perf_counter() - t0, detail)
    scored = [(score_pose(feats, score_em, c.solution, scene, config), c) for c in refined]
    detail["candidate_scores"] = [round(float(sc.score), 4) if sc.usable else None for sc, _ in scored]
    after, res = max(scored, key=lambda t: t[0].score if t[0].usable else -1.0)
    gain = (after.score - before.score) if after.usable and before.usable else (math.inf if after.usable else -math.inf)
    correction = PoseCorrection.between(item.reported, res.solution)
    if gain >= config.min_gain:
        status, pose, final = "refined", res.solution, after
        if _is_gross(correction, config):
            flags.append("gross_error_recovered")
    else:
        status, pose, final = "kept_reported", item.reported, before
        flags.append("refinement_not_better")
    if "no_building_in_view" in after.flags or "no_building_in_view" in before.flags:
        flags.append("no_building_in_view")
        if status == "kept_reported":
            status = "low_confidence"
    if final.usable and final.score < config.poor_score:
        flags.append("poorly_aligned")
        if status == "kept_reported" and "gross_error_suspected" in flags:
            status = "unrecovered"
    if not final.usable:
        flags.append("score_unusable")
    return AlignOutcome(item.image_id, item.sequence_id, status, tuple(dict.fromkeys(flags)), item.reported, pose, res.solution,
                        before, final, res.predicted_std, res.n_corners, res.n_buildings, time.perf_counter() - t0, detail)


def _failed(item: AlignInput, flag: str, message: str, t0: float) -> AlignOutcome:
    return AlignOutcome(item.image_id, item.sequence_id, "failed", (flag,), item.reported, item.reported, item.reported, None, None,
                        time_s=time.perf_counter() - t0, detail={"message": message})


def align_sequence(items: Sequence[AlignInput], edges: ModelEdges, scene: Any, config: AlignConfig = AlignConfig()) -> list[AlignOutcome]:
    """Align the images of one sequence (in capture order; a single image is a sequence of one)."""
    t_start = time.perf_counter()
    rcfg = config.refine
    feats: list[PhotoFeatures | None] = []
    pass1: list[RefineResult | None] = []
    t_img: list[float] = []
    cpu_img: list[float] = []  # CPU seconds (all threads of this process): the cost on a quiet machine
    failures: dict[int, AlignOutcome] = {}
    for i, it in enumerate(items):
        t0 = time.perf_counter()
        c0 = time.process_time()
        try:
            f = photo_features(it.load_photo(), rcfg)
        except (PhotoError, OSError, ValueError) as e:
            failures[i] = _failed(it, "photo_unusable", f"{type(e).__name__}: {e}", t0)
            feats.append(None)
            pass1.append(None)
            t_img.append(time.perf_counter() - t0)
            cpu_img.append(time.process_time() - c0)
            continue
        feats.append(f)
        pass1.append(refine_pose(f, it.reported, edges, scene, rcfg, fine=False))
        t_img.append(time.perf_counter() - t0)
        cpu_img.append(time.process_time() - c0)

    n = len(items)
    rep = np.array([vector_from_pose(it.reported) for it in items]) if n else np.zeros((0, 6))
    times = np.array([it.captured_at_ms if it.captured_at_ms is not None else k for k, it in enumerate(items)], dtype=np.float64)
    sol = np.array([vector_from_pose(r.solution) if r is not None and r.status == "refined" else np.full(6, np.nan)
                    for r in pass1]).reshape(n, 6)
    usable = np.array([r is not None and r.status == "refined" for r in pass1], dtype=bool)
    prior = None
    traj = np.full((n, 3), np.nan)  # leave-one-out x, y, heading on the trajectory of the pass-1 solutions
    if n >= 3 and usable.sum() >= 2:
        std = np.array([_std_vector(r) if r is not None and r.status == "refined" else np.full(6, np.inf) for r in pass1])
        prior = fit_sequence_prior(along_track_m(rep[:, 3:5]), rep, sol, std, usable, config.sequence)
        inl = usable & (prior.inlier_weight > 0.5)
        traj[:, :2] = trajectory_xy_loo(times, sol[:, 3:5], inl)
        # heading on the trajectory: unwrap, interpolate like a coordinate
        h = np.where(usable, sol[:, 0], 0.0)
        traj[:, 2] = trajectory_xy_loo(times, np.stack([np.unwrap(h), np.zeros(n)], 1), inl)[:, 0]

    out: list[AlignOutcome] = []
    for i, it in enumerate(items):
        if i in failures:
            out.append(failures[i])
            continue
        t0 = time.perf_counter() - t_img[i]
        c0 = time.process_time() - cpu_img[i]
        f, r1 = feats[i], pass1[i]
        assert f is not None and r1 is not None
        extra: list[str] = []
        v1 = vector_from_pose(r1.solution)
        detail: dict[str, Any] = {"pass1": {"status": r1.status, "solution": v1.tolist()}}
        if prior is not None:
            pp = PosePrior(prior.mean[i].copy(), prior.sigma[i].copy())
            detail["sequence_prior"] = {"mean": pp.mean.tolist(), "sigma": pp.sigma.tolist(), "weight": float(prior.inlier_weight[i])}
            # a gross error: the reported pose is far from where the neighbours' solutions put it
            gross = False
            if np.isfinite(traj[i]).all():
                off_m = float(np.hypot(*(rep[i, 3:5] - traj[i, :2])))
                off_deg = abs(math.degrees(math.remainder(rep[i, 0] - traj[i, 2], 2 * math.pi)))
                gross = off_m > config.gross_position_m or off_deg > config.gross_heading_deg
                detail["trajectory_offset"] = {"m": off_m, "deg": off_deg}
            if gross:
                extra.append("gross_error_suspected")
            agree = False
            if r1.status == "refined" and not gross:
                d = v1 - pp.mean
                d[0] = math.remainder(d[0], 2 * math.pi)
                # a warm start only from a pass-1 solution that fits the sequence in heading and
                # position *and* in the rig's pitch, roll and height (one stuck at a wrong height
                # would stay there, and end up rejected as implausible)
                agree = bool(np.all(np.abs(d[[0, 3, 4]]) <= config.agree_sigmas * pp.sigma[[0, 3, 4]])) and _rig_consistent(v1, pp, config)
            if agree:
                cands = [refine_pose(f, it.reported, edges, scene, rcfg, prior=pp, start=r1.solution, coarse=False)]
            else:
                # the image disagrees with its sequence: its pass-1 solution, the prior (a gross
                # error in the reported pose moves the prior with it) or both are wrong — try the
                # prior, the trajectory of the neighbours and the pass-1 solution; the score decides
                grid = float(min(rcfg.grid_half_m, max(rcfg.grid_step_m, 2.5 * max(pp.sigma[3], pp.sigma[4]))))
                cands = [refine_pose(f, it.reported, edges, scene, rcfg, prior=pp, grid_half_m=grid)]
                if np.isfinite(traj[i]).all():
                    tm = pp.mean.copy()
                    tm[[3, 4, 0]] = traj[i]
                    ts = pp.sigma.copy()
                    ts[[3, 4]] = config.sequence.noise_xy_m
                    ts[0] = math.radians(2 * config.sequence.noise_heading_deg)
                    cands.append(refine_pose(f, it.reported, edges, scene, rcfg, prior=PosePrior(tm, ts)))
                if r1.status == "refined":
                    v_rig = v1.copy()
                    v_rig[[1, 2, 5]] = pp.mean[[1, 2, 5]]  # its heading and position, the sequence's rig
                    cands.append(refine_pose(f, it.reported, edges, scene, rcfg, start=pose_from_vector(v_rig, it.reported), coarse=False))
            detail["pass2"] = "warm" if agree else "search"
        elif r1.status == "refined":
            cands = [refine_pose(f, it.reported, edges, scene, rcfg, start=r1.solution, coarse=False)]
        else:
            cands = [r1]
        out.append(_decide(it, f, cands, scene, config, extra, t0, detail, pp if prior is not None else None))
        out[-1].detail["cpu_s"] = time.process_time() - c0
        feats[i] = None  # free the full-resolution channels
    _flag_inconsistent(out, times, config)
    for o in out:
        o.detail["sequence_time_s"] = time.perf_counter() - t_start
    return out


def _flag_inconsistent(out: list[AlignOutcome], times: np.ndarray, config: AlignConfig) -> None:
    """Flag adopted poses that sit off the trajectory of the sequence's other adopted poses (a gross
    error that the refinement did not recover, or recovered to the wrong place)."""
    if len(out) < 3:
        return
    xy = np.array([o.pose.center_local_m[:2] for o in out])
    ok = np.array([o.status == "refined" for o in out])
    pred = trajectory_xy_loo(times, xy, ok)
    for k, o in enumerate(out):
        if not np.isfinite(pred[k]).all():
            continue
        off = float(np.hypot(*(xy[k] - pred[k])))
        o.detail["trajectory_offset_after_m"] = off
        if off > config.gross_position_m and "inconsistent_with_sequence" not in o.flags:
            object.__setattr__(o, "flags", (*o.flags, "inconsistent_with_sequence"))


def align_images(
    items: Iterable[AlignInput],
    edges: ModelEdges,
    scene: Any,
    config: AlignConfig = AlignConfig(),
    *,
    progress: Callable[[AlignOutcome], None] | None = None,
) -> list[AlignOutcome]:
    """Align any set of images: grouped by ``sequence_id`` (capture order by ``captured_at_ms``,
    then image id; pieces of at most ``max_sequence_images``); images without a sequence are
    aligned alone."""
    groups: dict[str, list[AlignInput]] = {}
    for it in items:
        key = it.sequence_id if it.sequence_id else f"\0{it.image_id}"
        groups.setdefault(key, []).append(it)
    out: list[AlignOutcome] = []
    step = max(1, config.max_sequence_images)
    for key in sorted(groups):
        seq = sorted(groups[key], key=lambda it: (it.captured_at_ms if it.captured_at_ms is not None else 0, it.image_id))
        # a long sequence in pieces: each keeps every image's photo features until its second pass
        pieces = [seq[k:k + step] for k in range(0, len(seq), step)]
        if len(pieces) > 1 and len(pieces[-1]) < 3:  # no piece too short for a sequence prior
            last = pieces.pop()
            pieces[-1] = pieces[-1] + last
        for piece in pieces:
            for o in align_sequence(piece, edges, scene, config):
                out.append(o)
                if progress is not None:
                    progress(o)
    return out
