"""Edges of a rendered panorama (any backend): discontinuities of the class, depth and normal passes,
located between pixels, with their image orientation, kind, weight and 3-D position.

A discontinuity between horizontal neighbours (x, x+1) sits at x + ½, between vertical neighbours
at y + ½. Its *kind* follows from the classes on the two sides (:class:`.model_edges.EdgeKind`):
building against sky or building with a vertical orientation → ``VERTICAL`` (corners and
silhouettes), building against the ground → ``GROUND_LINE``, roof lines and other horizontal
building edges → ``ROOFLINE`` (low weight: OSM heights are guesses), two ground layers →
``GROUND_BOUNDARY``. The model's own cut (ground against sky at the horizon) is no edge.

Each edge sample keeps the nearer side's depth, so the score can move it in 3-D to test nearby
poses without re-rendering (:mod:`.score`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..citymodel import CLASS_BY_NAME
from ..equirect import pixel_to_bearing
from .model_edges import KIND_WEIGHTS, EdgeKind

__all__ = ["RenderEdges", "render_edges", "PassesError", "check_passes"]

_SKY = 0
_BUILDING = (CLASS_BY_NAME["wall"].index, CLASS_BY_NAME["roof"].index)
_WALL = CLASS_BY_NAME["wall"].index
_ROOF = CLASS_BY_NAME["roof"].index
_DEPTH_JUMP = 0.08  # relative depth change that makes an edge
_NORMAL_JUMP_COS = math.cos(math.radians(25.0))


class PassesError(ValueError):
    """Render passes unusable for scoring (shape mismatch, non-finite values)."""


def check_passes(label: np.ndarray, depth_m: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W) label, (H, W) depth, (3, H, W) normal (leading singleton axes allowed) → validated arrays.
    Raises :class:`PassesError` naming the problem."""
    lab = np.asarray(label)
    dep = np.asarray(depth_m)
    nor = np.asarray(normal)
    lab = lab[0] if lab.ndim == 3 else lab
    dep = dep[0] if dep.ndim == 3 else dep
    if lab.ndim != 2 or dep.shape != lab.shape or nor.shape != (3,) + lab.shape:
        raise PassesError(f"render passes must be label (H, W), depth (H, W), normal (3, H, W); got {lab.shape}, {dep.shape}, {nor.shape}")
    h, w = lab.shape
    if w != 2 * h:
        raise PassesError(f"render passes must be a 2:1 panorama, got {w}×{h}")
    dep = dep.astype(np.float32)
    nor = nor.astype(np.float32)
    if not np.isfinite(dep).all() or not np.isfinite(nor).all():
        raise PassesError("render passes contain NaN/inf (depth or normal); re-render this pose")
    return lab, dep, nor


@dataclass(frozen=True)
class RenderEdges:
    width: int
    height: int
    px: np.ndarray  # float64 (N,) edge position, pixels of the render
    py: np.ndarray
    line_angle_rad: np.ndarray  # (N,) direction of the edge line in the image, [0, π)
    kind: np.ndarray  # uint8 (N,) EdgeKind
    weight: np.ndarray  # float64 (N,)
    depth_m: np.ndarray  # (N,) distance of the nearer side

    def __len__(self) -> int:
        return int(len(self.px))

    def xyz_cam(self) -> np.ndarray:
        """(N, 3) edge points in ``cam_opensfm`` (bearing × depth)."""
        return pixel_to_bearing(self.px, self.py, self.width, self.height) * self.depth_m[:, None]

    def building_fraction(self, label: np.ndarray) -> float:
        lab = label[0] if label.ndim == 3 else label
        return float(np.isin(lab, _BUILDING).mean())


def _orientation_field(lab: np.ndarray, dep: np.ndarray, nor: np.ndarray, box_px: int = 3) -> np.ndarray:
    """Gradient direction (mod π) of a multi-channel encoding of the passes: central differences,
    structure tensor averaged over a ``box_px`` square (cheap; only the 45° bins depend on it)."""
    chans = [np.isin(lab, _BUILDING).astype(np.float32), (lab == _SKY).astype(np.float32),
             np.where(dep > 0, np.log1p(dep) / 3.0, 0).astype(np.float32), nor[0] * 0.5, nor[1] * 0.5]
    sxx = np.zeros(lab.shape, np.float32)
    syy = np.zeros(lab.shape, np.float32)
    sxy = np.zeros(lab.shape, np.float32)
    for c in chans:
        gx = np.roll(c, -1, axis=1) - np.roll(c, 1, axis=1)
        gy = np.zeros_like(c)
        gy[1:-1] = c[2:] - c[:-2]
        sxx += gx * gx
        syy += gy * gy
        sxy += gx * gy
    sxx, syy, sxy = (ndi.uniform_filter(t, box_px, mode=("nearest", "wrap")) for t in (sxx, syy, sxy))
    return 0.5 * np.arctan2(2 * sxy, sxx - syy)


def _kind_of(a: np.ndarray, b: np.ndarray, vertical_line: np.ndarray) -> np.ndarray:
    ba, bb = np.isin(a, _BUILDING), np.isin(b, _BUILDING)
    sa, sb = a == _SKY, b == _SKY
    kind = np.full(a.shape, 255, dtype=np.uint8)
    both_b = ba & bb
    one_b = ba ^ bb
    other_sky = (ba & sb) | (bb & sa)
    other_ground = one_b & ~other_sky
    roof_wall = both_b & (a != b)
    kind[(other_sky | (both_b & ~roof_wall)) & vertical_line] = EdgeKind.VERTICAL
    kind[(other_sky | both_b) & ~vertical_line] = EdgeKind.ROOFLINE
    kind[roof_wall & vertical_line] = EdgeKind.ROOFLINE
    kind[other_ground & ~vertical_line] = EdgeKind.GROUND_LINE
    kind[other_ground & vertical_line] = EdgeKind.VERTICAL
    flat = ~ba & ~bb & ~sa & ~sb
    kind[flat & (a != b)] = EdgeKind.GROUND_BOUNDARY
    return kind


def render_edges(label: np.ndarray, depth_m: np.ndarray, normal: np.ndarray, *, kind_weights: dict[EdgeKind, float] | None = None,
                 lat_range_deg: tuple[float, float] = (-70.0, 75.0)) -> RenderEdges:
    """Edges of the passes (see the module docstring); rows outside ``lat_range_deg`` are skipped."""
    lab, dep, nor = check_passes(label, depth_m, normal)
    H, W = lab.shape
    weights = {**KIND_WEIGHTS, **(kind_weights or {})}
    kw = np.array([weights[EdgeKind(k)] for k in range(len(EdgeKind))] + [0.0] * (256 - len(EdgeKind)))
    grad_dir = _orientation_field(lab, dep, nor)
    lat = -((np.arange(H) + 0.5) / H - 0.5) * 180.0
    row_ok = (lat >= lat_range_deg[0]) & (lat <= lat_range_deg[1])

    def disc(a_lab, b_lab, a_dep, b_dep, a_nor, b_nor):
        d = a_lab != b_lab
        both = (a_dep > 0) & (b_dep > 0)
        jump = both & (np.abs(a_dep - b_dep) > _DEPTH_JUMP * np.minimum(a_dep, b_dep))
        ncos = (a_nor * b_nor).sum(0)
        bend = both & (ncos < _NORMAL_JUMP_COS) & np.isin(a_lab, _BUILDING) & np.isin(b_lab, _BUILDING)
        return d | jump | bend

    out = []
    # horizontal neighbours (x, x+1), wrapping at the seam
    b_lab, b_dep, b_nor = np.roll(lab, -1, 1), np.roll(dep, -1, 1), np.roll(nor, -1, 2)
    m = disc(lab, b_lab, dep, b_dep, nor, b_nor) & row_ok[:, None]
    ys, xs = np.nonzero(m)
    out.append((xs + 0.5, ys.astype(np.float64), lab[ys, xs], b_lab[ys, xs], dep[ys, xs], b_dep[ys, xs],
                grad_dir[ys, xs]))
    # vertical neighbours (y, y+1)
    b_lab, b_dep, b_nor = lab[1:], dep[1:], nor[:, 1:]
    m = disc(lab[:-1], b_lab, dep[:-1], b_dep, nor[:, :-1], b_nor) & row_ok[:-1, None]
    ys, xs = np.nonzero(m)
    out.append((xs.astype(np.float64), ys + 0.5, lab[ys, xs], b_lab[ys, xs], dep[ys, xs], b_dep[ys, xs],
                grad_dir[ys, xs]))
    px, py, la, lb, da, db, gd = (np.concatenate([o[i] for o in out]) for i in range(7))
    line = np.mod(gd + math.pi / 2, math.pi)
    vertical = np.abs(line - math.pi / 2) <= math.radians(30)
    kind = _kind_of(la, lb, vertical)
    near = np.where((da > 0) & ((db <= 0) | (da <= db)), da, db)
    keep = (kind != 255) & (near > 0)
    px, py, line, kind, near = px[keep], py[keep], line[keep], kind[keep], near[keep]
    return RenderEdges(W, H, px % W, py, line.astype(np.float64), kind, kw[kind].astype(np.float64), near.astype(np.float64))
