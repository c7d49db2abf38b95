"""Capture sequences of the realistic stand-in content: where the 360° rigs really were.

Stand-in data generation only (never imported by the pipeline). A sequence is one pass of a
rig along a street route (OSM street ways merged where they continue each other): a car (roof
rig, in the right-hand lane) or a walker (backpack rig, on the right-hand sidewalk), one image
every 2–5 m (real 360° captures), the rig tilted a little (a per-sequence mounting tilt plus
per-image motion). Some routes are captured a second time in the opposite direction. Routes
nearest ``centre_xy_m`` come first. True camera positions keep ``clearance_m`` from the (true)
building footprints; images that would not are dropped (a gap in the sequence).

Lengths in metres, angles in degrees (heading clockwise from grid north of ``local_m``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import LineString, MultiLineString, Point

from .standin_world import StreetWay, tangent_heading_deg

__all__ = ["CaptureConfig", "CapturedImage", "CaptureSequence", "street_routes", "plan_sequences"]


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    count: int = 24  # images in all
    images_per_sequence: tuple[int, int] = (5, 12)
    spacing_m: tuple[float, float] = (2.0, 5.0)  # per sequence, uniform
    spacing_jitter: float = 0.15  # relative, per step
    p_opposite_pass: float = 0.5  # a route is captured again in the other direction
    p_walker: float = 0.3  # backpack rig on the sidewalk instead of a car roof rig
    car_mount_height_m: tuple[float, float] = (2.1, 2.6)  # camera above the street, per sequence
    walker_mount_height_m: tuple[float, float] = (1.8, 2.1)
    mount_height_jitter_m: float = 0.03  # per image
    rig_tilt_sigma_deg: float = 2.0  # pitch and roll of the mounting, per sequence
    motion_tilt_sigma_deg: float = 1.0  # pitch and roll per image
    clearance_m: float = 1.5  # true camera ↔ true building footprints
    boundary_inset_m: float = 10.0  # routes stay this far inside the city boundary
    min_route_m: float = 15.0
    centre_xy_m: tuple[float, float] = (0.0, 0.0)  # routes nearest this point first

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"CaptureConfig.count={self.count!r} must be an integer >= 1")
        lo, hi = self.images_per_sequence
        if not 2 <= lo <= hi:
            raise ValueError(f"CaptureConfig.images_per_sequence={self.images_per_sequence!r} must be (low, high) with 2 <= low <= high")
        for name in ("spacing_m", "car_mount_height_m", "walker_mount_height_m"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"CaptureConfig.{name}={getattr(self, name)!r} must be (low, high) with 0 < low <= high")
        for name in ("p_opposite_pass", "p_walker"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CaptureConfig.{name}={getattr(self, name)!r} must be in [0, 1]")
        if not 0 <= self.spacing_jitter < 0.5:
            raise ValueError(f"CaptureConfig.spacing_jitter={self.spacing_jitter!r} must be in [0, 0.5)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CapturedImage:
    """A true camera pose: centre (``x_m``, ``y_m``, ``z_m`` above the street) and orientation."""

    x_m: float
    y_m: float
    z_m: float
    heading_deg: float  # clockwise from grid north
    pitch_deg: float
    roll_deg: float
    along_track_m: float  # distance from the sequence's first image along the route
    t_s: float  # seconds after the sequence's first image


@dataclass(frozen=True)
class CaptureSequence:
    route: str  # route key (street ways it follows)
    direction: int  # +1 along the route's geometry, -1 against it
    platform: str  # "car" or "walker"
    mount_height_m: float
    spacing_m: float
    images: tuple[CapturedImage, ...]
    opposite_of: int | None = None  # index of the sequence this one retraces in the other direction

    def summary(self) -> dict[str, Any]:
        return {"route": self.route, "direction": self.direction, "platform": self.platform, "mount_height_m": self.mount_height_m,
                "spacing_m": self.spacing_m, "opposite_of": self.opposite_of, "n_images": len(self.images)}


@dataclass(frozen=True)
class _Route:
    key: str
    line: LineString
    width_m: float


def street_routes(
    ways: Sequence[StreetWay], boundary_local: shapely.Geometry, *, inset_m: float = 10.0, min_length_m: float = 15.0,
    max_length_m: float = 100.0,
) -> list[_Route]:
    """Street ways merged into routes where they continue each other (shapely ``line_merge``),
    clipped to the boundary shrunk by ``inset_m``, cut into pieces of at most ``max_length_m``
    (one sequence each at most); carriageway width = the narrowest way's."""
    if not ways:
        return []
    inner = boundary_local.buffer(-inset_m) if inset_m > 0 else boundary_local
    merged = shapely.line_merge(MultiLineString([w.line for w in ways]))
    parts = list(shapely.get_parts(merged))
    tree = shapely.STRtree([w.line for w in ways])
    out: list[_Route] = []
    for part in parts:
        clipped = part.intersection(inner)
        for whole in shapely.get_parts(shapely.line_merge(clipped) if clipped.geom_type == "MultiLineString" else clipped):
            if not isinstance(whole, LineString) or whole.length < min_length_m:
                continue
            n_cut = max(1, math.ceil(whole.length / max_length_m))
            pieces = [shapely.ops.substring(whole, k * whole.length / n_cut, (k + 1) * whole.length / n_cut) for k in range(n_cut)]
            for piece in pieces:
                idx = tree.query(piece, predicate="dwithin", distance=0.01)
                members = sorted({ways[i].key for i in idx if ways[i].line.distance(piece.interpolate(0.5, normalized=True)) < 50})
                widths = [ways[i].width_m for i in idx] or [7.0]
                key = "+".join(members[:3]) + (f"+{len(members) - 3}" if len(members) > 3 else "") if members else f"route{len(out)}"
                out.append(_Route(key, piece, float(min(widths))))
    keys: dict[str, int] = {}
    unique: list[_Route] = []
    for r in out:  # one street can give several pieces: number them
        n = keys.get(r.key, 0)
        keys[r.key] = n + 1
        unique.append(_Route(r.key if n == 0 else f"{r.key}#{n}", r.line, r.width_m))
    return unique


def _pass(route: _Route, s_positions: np.ndarray, direction: int, lateral_m: float, platform: str, mount_m: float,
          spacing_m: float, config: CaptureConfig, keep_out: shapely.Geometry | None, rng: np.random.Generator) -> CaptureSequence:
    """Images at arc lengths ``s_positions`` (in travel order) ``lateral_m`` right of travel."""
    tilt_p, tilt_r = rng.normal(0.0, config.rig_tilt_sigma_deg, size=2)
    speed = 6.0 if platform == "car" else 1.4  # m/s
    images = []
    s0 = float(s_positions[0]) if len(s_positions) else 0.0
    for s in s_positions:
        p = route.line.interpolate(float(s))
        h_line = tangent_heading_deg(route.line, float(s))
        heading = h_line if direction > 0 else (h_line + 180.0) % 360.0
        hr = math.radians(heading)
        x = p.x + lateral_m * math.cos(hr)  # right of travel = heading + 90°
        y = p.y - lateral_m * math.sin(hr)
        pitch, roll = rng.normal(0.0, config.motion_tilt_sigma_deg, size=2)
        z = mount_m + rng.normal(0.0, config.mount_height_jitter_m)
        if keep_out is not None and keep_out.contains(Point(x, y)):
            continue
        d = abs(float(s) - s0)
        images.append(CapturedImage(float(x), float(y), float(z), float(heading), float(tilt_p + pitch), float(tilt_r + roll), d, d / speed))
    return CaptureSequence(route.key, direction, platform, float(mount_m), float(spacing_m), tuple(images))


def plan_sequences(routes: Sequence[_Route], true_footprints: shapely.Geometry, config: CaptureConfig, rng: np.random.Generator) -> list[CaptureSequence]:
    """Sequences along ``routes`` (nearest the centre first) until ``config.count`` images.

    Raises ``ValueError`` when the routes cannot hold that many images (name a bigger city or a
    smaller count)."""
    keep_out = true_footprints.buffer(config.clearance_m) if not true_footprints.is_empty else None
    if keep_out is not None:
        shapely.prepare(keep_out)
    centre = Point(*config.centre_xy_m)
    min_images = min(3, config.images_per_sequence[0])  # fewer only where asked for
    order = sorted(range(len(routes)), key=lambda i: (routes[i].line.distance(centre), routes[i].key))
    taken: list[np.ndarray] = []  # xy of images already placed (other routes must not duplicate them)
    out: list[CaptureSequence] = []
    total = 0

    def room() -> int:
        return config.count - total

    for i in order:
        if room() <= 0:
            break
        route = routes[i]
        L = route.line.length
        spacing = float(rng.uniform(*config.spacing_m))
        n_want = int(rng.integers(config.images_per_sequence[0], config.images_per_sequence[1] + 1))
        steps = spacing * (1.0 + rng.uniform(-config.spacing_jitter, config.spacing_jitter, size=max(n_want - 1, 0)))
        span = float(steps.sum())
        if span > L:  # a short route: as many as fit
            keep = int(np.searchsorted(np.cumsum(steps), L, side="right"))
            steps, span = steps[:keep], float(steps[:keep].sum())
        if len(steps) + 1 < min_images:
            continue
        # the window nearest the centre, shifted a little
        s_mid = route.line.project(centre) + rng.normal(0.0, 10.0)
        s_start = float(np.clip(s_mid - span / 2, 0.0, L - span))
        s_pos = s_start + np.concatenate([[0.0], np.cumsum(steps)])
        direction = 1 if rng.random() < 0.5 else -1
        passes = [direction]
        if rng.random() < config.p_opposite_pass:
            passes.append(-direction)
        first_index = len(out)
        for k, d in enumerate(passes):
            if room() <= 0:
                break
            walker = rng.random() < config.p_walker
            half = route.width_m / 2.0
            lateral = half + 1.5 if walker else min(half / 2.0, 1.75)
            mount = float(rng.uniform(*(config.walker_mount_height_m if walker else config.car_mount_height_m)))
            s_travel = s_pos if d > 0 else s_pos[::-1]
            if k > 0:  # the second pass: its own spacing over the same stretch
                sp2 = float(rng.uniform(*config.spacing_m))
                s_travel = np.arange(s_pos[-1], s_pos[0], -sp2) if d < 0 else np.arange(s_pos[0], s_pos[-1], sp2)
                spacing = sp2
            seq = _pass(route, s_travel, d, lateral, "walker" if walker else "car", mount, spacing, config, keep_out, rng)
            xy = np.array([[im.x_m, im.y_m] for im in seq.images]).reshape(-1, 2)
            if k == 0 and taken and len(xy):
                prev = np.concatenate(taken)
                dmin = np.sqrt(((xy[:, None, :] - prev[None, :, :]) ** 2).sum(-1)).min(1)
                if np.mean(dmin < 3.0) > 0.5:
                    break  # another route already covers this stretch (overlapping ways)
            if len(seq.images) < min(min_images, room()):
                continue  # too few left after the clearance check (the last sequence may be short)
            images = seq.images[: room()]
            seq = CaptureSequence(seq.route, seq.direction, seq.platform, seq.mount_height_m, seq.spacing_m, images,
                                  first_index if k > 0 and len(out) > first_index else None)
            out.append(seq)
            taken.append(xy[: len(images)])
            total += len(images)
    if total < config.count:
        raise ValueError(
            f"the streets hold only {total} of the {config.count} requested panoramas ({len(routes)} routes); "
            "ask for fewer (--count) or use a city with more streets (--city)"
        )
    return out
