"""Equirectangular panorama → perspective crop: sampling maps, pyramid level choice, samplers.

Conventions (:mod:`s2r_data.equirect`): a panorama is in its camera frame ``cam_opensfm`` (x right,
y down, z forward); pixel (px, py) has its centre at integers, row 0 on top, column (W−1)/2 looks
forward, and ``px`` wraps at the seam (valid range [−0.5, W − 0.5)).

A crop is a pinhole camera at the panorama's centre with

* ``yaw_deg``  — rotation of its forward axis about the panorama's vertical (−y) axis, positive to
  the right (towards +x, i.e. increasing px); 0 = panorama column (W−1)/2,
* ``pitch_deg`` — elevation of its forward axis above the panorama's horizon (+up), roll 0,
* ``fov_deg`` — horizontal field of view; square pixels; output h × w (``CropConfig.out_size``²).

Crop pixel (i, j) ↦ ray ((j − (w−1)/2)/f, (i − (h−1)/2)/f, 1) in the crop's ``cam_opensfm`` with
f = (w/2)/tan(fov/2); rotated into the panorama frame by ``R_crop_to_pano = R_y(yaw)·R_x(pitch)``;
then lon = atan2(x, z), lat = atan2(−y, hypot(x, z)) (atan2 only: no asin/acos whose fp32
arguments can land just past ±1 near the poles — the thesis warp's NaN); (px, py) by the equirect
formulas. :func:`plan_region` finds the inner chunks a map touches from its border alone.

Pyramid: the store keeps 2^k-downsampled levels (level-k coordinates = level-0 maps computed at
the level's size). :func:`pyramid_level` picks the level whose pixel angular size best matches the
crop's mean pixel (OpenGL ``LINEAR_MIPMAP_NEAREST``: round(log2 footprint)), so minified crops
are sampled from a pre-filtered image instead of aliasing.

Samplers: one map for every channel. CPU workers: :func:`crop_grid` (the map in the pixel
coordinates of the chunk region to read, plus that region's :class:`RegionPlan`), then the fused
kernel :func:`s2r_train.crop_kernel.sample_crop`; :func:`sample_bilinear_numpy` /
:func:`sample_nearest` are the pure-numpy references. GPU / batches: :func:`crop_batch_torch`
(whole panoramas on the device; :func:`perspective_map_torch`, :func:`sample_bilinear_torch`,
:func:`sample_nearest_torch`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

__all__ = [
    "CropConfig",
    "crop_rotation",
    "crop_rays",
    "perspective_map",
    "perspective_map_torch",
    "pyramid_level",
    "RegionPlan",
    "plan_region",
    "plan_region_from_border",
    "crop_grid",
    "sample_bilinear_numpy",
    "sample_nearest",
    "nearest_index",
    "sample_bilinear_torch",
    "sample_nearest_torch",
    "reflect_normals",
    "crop_right_axis_local",
    "crop_batch_torch",
]


@dataclass(frozen=True)
class CropConfig:
    """Random perspective-crop parameters (degrees; uniform draws in [lo, hi))."""

    out_size: int = 256  # square crops, pixels
    yaw_deg: tuple[float, float] = (0.0, 360.0)
    pitch_deg: tuple[float, float] = (0.0, 60.0)
    fov_deg: tuple[float, float] = (60.0, 120.0)
    flip_p: float = 0.5
    use_pyramid: bool = True

    def __post_init__(self) -> None:
        if self.out_size < 1:
            raise ValueError(f"CropConfig.out_size must be positive, got {self.out_size}")
        for name, (lo, hi), (mn, mx) in (
            ("yaw_deg", self.yaw_deg, (-360.0, 720.0)),
            ("pitch_deg", self.pitch_deg, (-90.0, 90.0)),
            ("fov_deg", self.fov_deg, (1.0, 179.0)),
        ):
            if not (mn <= lo <= hi <= mx):
                raise ValueError(f"CropConfig.{name}={(lo, hi)}: need {mn} ≤ lo ≤ hi ≤ {mx}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"CropConfig.flip_p={self.flip_p}: need a probability in [0, 1]")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CropConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"CropConfig: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crop_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """``R_crop_to_pano`` (3×3, float64): columns are the crop's x (right), y (down), z (forward)
    axes expressed in the panorama's ``cam_opensfm`` frame."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    # pitch up: forward (0,0,1) → (0, −sin p, cos p) (towards the panorama's up, −y)
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    # yaw right: forward (0,0,1) → (sin y, 0, cos y), rotation about the y axis
    Ry = np.array([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    return Ry @ Rx


def _focal_px(fov_deg: float, out_w: int) -> float:
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return (out_w / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


@lru_cache(maxsize=16)
def _pixel_offsets(out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    xs = (np.arange(out_w, dtype=np.float64) - (out_w - 1) / 2.0)[None, :]
    ys = (np.arange(out_h, dtype=np.float64) - (out_h - 1) / 2.0)[:, None]
    return xs, ys


def crop_rays(fov_deg: float, out_h: int, out_w: int) -> np.ndarray:
    """(h, w, 3) float64 un-normalised rays of the crop pixels in the crop's ``cam_opensfm``."""
    f = _focal_px(fov_deg, out_w)
    xs, ys = _pixel_offsets(out_h, out_w)
    return np.stack(np.broadcast_arrays(xs / f, ys / f, np.ones((1, 1))), axis=-1)


def _lonlat_to_px(lon, lat, pano_h: int, pano_w: int, xp):
    two_pi = 2.0 * math.pi
    px = lon * (pano_w / two_pi) + (pano_w - 1) / 2.0
    py = lat * (-pano_w / two_pi) + (pano_h - 1) / 2.0
    # wrap px into [−0.5, W − 0.5)
    px = xp.remainder(px + 0.5, pano_w) - 0.5
    return px, py


def perspective_map(
    yaw_deg: float,
    pitch_deg: float,
    fov_deg: float,
    out_hw: tuple[int, int],
    pano_hw: tuple[int, int],
    *,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Panorama pixel coordinates (px, py), each (h, w) ``dtype``, sampled by crop pixels.

    ``pano_hw`` is the size of the image being sampled (a pyramid level's size for level k).
    Always finite for finite angles (atan2/hypot only)."""
    out_h, out_w = out_hw
    pano_h, pano_w = pano_hw
    if pano_w != 2 * pano_h:
        raise ValueError(f"equirectangular images are 2:1; got {pano_h}×{pano_w}")
    R = crop_rotation(yaw_deg, pitch_deg).astype(dtype)
    f = _focal_px(fov_deg, out_w)
    xs, ys = _pixel_offsets(out_h, out_w)
    xs, ys = (xs / f).astype(dtype), (ys / f).astype(dtype)
    dx = xs * R[0, 0] + ys * R[0, 1] + R[0, 2]
    dy = xs * R[1, 0] + ys * R[1, 1] + R[1, 2]
    dz = xs * R[2, 0] + ys * R[2, 1] + R[2, 2]
    lon = np.arctan2(dx, dz)
    lat = np.arctan2(-dy, np.hypot(dx, dz))
    px, py = _lonlat_to_px(lon, lat, pano_h, pano_w, np)
    return px.astype(dtype, copy=False), py.astype(dtype, copy=False)


def perspective_map_torch(yaw_deg, pitch_deg, fov_deg, out_hw: tuple[int, int], pano_hw: tuple[int, int], *, device=None):
    """Batched fp32 maps: angles are (B,) tensors/sequences (degrees) → (px, py), each (B, h, w).

    Same maths as :func:`perspective_map` (tested equal); runs on any torch device."""
    import torch

    def t(v):
        return torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1)

    yaw, pitch, fov = t(yaw_deg), t(pitch_deg), t(fov_deg)
    if ((fov <= 0) | (fov >= 180)).any():
        raise ValueError("fov_deg must be in (0, 180)")
    out_h, out_w = out_hw
    pano_h, pano_w = pano_hw
    y, p = torch.deg2rad(yaw), torch.deg2rad(pitch)
    cy, sy, cp, sp = torch.cos(y), torch.sin(y), torch.cos(p), torch.sin(p)
    zero, one = torch.zeros_like(y), torch.ones_like(y)
    Ry = torch.stack([torch.stack([cy, zero, sy], -1), torch.stack([zero, one, zero], -1), torch.stack([-sy, zero, cy], -1)], -2)
    Rx = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cp, -sp], -1), torch.stack([zero, sp, cp], -1)], -2)
    R = (Ry @ Rx).to(torch.float32)  # (B,3,3)
    f = ((out_w / 2.0) / torch.tan(torch.deg2rad(fov) / 2.0)).to(torch.float32)
    xs = (torch.arange(out_w, device=device, dtype=torch.float32) - (out_w - 1) / 2.0)[None, None, :] / f[:, None, None]
    ys = (torch.arange(out_h, device=device, dtype=torch.float32) - (out_h - 1) / 2.0)[None, :, None] / f[:, None, None]
    Rb = R[:, :, :, None, None]
    dx = xs * Rb[:, 0, 0] + ys * Rb[:, 0, 1] + Rb[:, 0, 2]
    dy = xs * Rb[:, 1, 0] + ys * Rb[:, 1, 1] + Rb[:, 1, 2]
    dz = xs * Rb[:, 2, 0] + ys * Rb[:, 2, 1] + Rb[:, 2, 2]
    lon = torch.atan2(dx, dz)
    lat = torch.atan2(-dy, torch.hypot(dx, dz))
    return _lonlat_to_px(lon, lat, pano_h, pano_w, torch)


@lru_cache(maxsize=16)
def _pixel_offsets_torch(out_h: int, out_w: int):
    import torch

    xs = torch.arange(out_w, dtype=torch.float32)[None, :] - (out_w - 1) / 2.0
    ys = torch.arange(out_h, dtype=torch.float32)[:, None] - (out_h - 1) / 2.0
    return xs, ys


def pyramid_level(fov_deg: float, out_w: int, pano_w: int, n_levels: int) -> int:
    """Level k ∈ [0, n_levels] whose pixel size best matches the crop's pixels:
    k = clamp(round(log2(footprint)), 0, n_levels), footprint = mean crop-pixel angle
    (fov / out_w) / level-0 panorama pixel angle (360° / W). Rounding (OpenGL
    ``LINEAR_MIPMAP_NEAREST``) keeps ≤ √2 level-k pixels per crop pixel on average; a wide-FOV
    pinhole crop's pixels shrink towards its edges (cos²), so one level per crop is a compromise
    between aliasing at the centre and blur at the edges."""
    footprint = (fov_deg / out_w) / (360.0 / pano_w)
    if footprint <= 1.0:
        return 0
    return int(min(max(round(math.log2(footprint)), 0), n_levels))


@dataclass(frozen=True)
class RegionPlan:
    """Which inner chunks to read for a map, and how to turn map coordinates into region ones.

    The chunks (rows × cols, in reading order) form a region of ``region_hw`` pixels whose row 0
    is image row ``y_origin`` and column 0 image column ``x_origin`` ∈ [0, W) (the region may
    continue across the seam). ``bbox = (y0, y1, x0, x1)`` (region coordinates) is the tight box
    of every bilinear tap; :meth:`local` gives region coordinates."""

    chunk_rows: tuple[int, ...]
    chunk_cols: tuple[int, ...]  # in reading order; may wrap the seam or repeat column 0
    y_origin: int
    x_origin: int
    full_width: bool  # the map wraps around (pole in view): x is used modulo W
    bbox: tuple[int, int, int, int]
    n_rows_px: int  # region size = len(chunk_rows)·cy × len(chunk_cols)·cx
    n_cols_px: int

    @property
    def region_hw(self) -> tuple[int, int]:
        return self.n_rows_px, self.n_cols_px

    def local(self, px: np.ndarray, py: np.ndarray, image_w: int) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates → region coordinates (float32; rows clamped into the tap bbox)."""
        y0, y1, _, _ = self.bbox
        if self.full_width:
            x = np.remainder(px, image_w)
        else:
            x = np.remainder(px - self.x_origin, image_w)  # region < W wide: unambiguous
        y = np.clip(py - self.y_origin, y0, y1 - 1)
        return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def _boundary_loop(a: np.ndarray) -> np.ndarray:
    """The map's border pixels as a closed loop (top → right → bottom → left)."""
    return np.concatenate([a[0, :], a[1:, -1], a[-1, -2::-1], a[-2:0:-1, 0]]).astype(np.float64)


def plan_region(px: np.ndarray, py: np.ndarray, image_hw: tuple[int, int], chunk_hw: tuple[int, int]) -> RegionPlan:
    """Smallest set of (row, col) inner chunks covering every bilinear tap of the map.

    Only the map's border is inspected: on the sphere, latitude and longitude have no interior
    extrema except at the poles, and a pole inside the view shows up as the border's longitude
    winding once around (then every column is needed and the pole's row is the extreme)."""
    return plan_region_from_border(_boundary_loop(px), _boundary_loop(py), image_hw, chunk_hw)


def plan_region_from_border(bx: np.ndarray, by: np.ndarray, image_hw: tuple[int, int], chunk_hw: tuple[int, int]) -> RegionPlan:
    """:func:`plan_region` from the map's border loop alone (top → right → bottom → left, as
    :func:`_boundary_loop` orders it); ``bx`` may be unwrapped or wrapped (only its steps modulo W
    and its first value modulo W matter)."""
    H, W = image_hw
    cy, cx = chunk_hw
    n_cols = W // cx
    d = np.remainder(np.diff(bx, append=bx[:1]) + W / 2.0, W) - W / 2.0  # wrapped steps along the loop
    pole_inside = abs(float(d.sum())) > W / 2.0
    y_min, y_max = float(by.min()), float(by.max())
    if pole_inside:
        if float(by.mean()) < (H - 1) / 2.0:
            y_min = -0.5  # north pole row
        else:
            y_max = H - 0.5  # south pole row
    y_lo = int(np.floor(max(y_min, 0.0)))
    y_hi = int(min(np.floor(y_max) + 1, H - 1))
    r0, r1 = y_lo // cy, y_hi // cy
    rows = tuple(range(r0, r1 + 1))
    by0, by1 = y_lo - r0 * cy, y_hi - r0 * cy + 1
    unwrapped = bx[0] + np.concatenate([[0.0], np.cumsum(d[:-1])])
    lo, hi = float(unwrapped.min()), float(unwrapped.max())
    x_lo, x_hi = int(np.floor(lo)), int(np.floor(hi)) + 1
    if pole_inside or x_hi - x_lo + 1 >= W - cx:  # (nearly) all columns
        cols = tuple(range(n_cols)) + (0,)  # chunk 0 again so x ∈ [W−1, W) has its right neighbour
        return RegionPlan(rows, cols, r0 * cy, 0, True, (by0, by1, 0, W + 1), len(rows) * cy, len(cols) * cx)
    c0, c1 = x_lo // cx, x_hi // cx  # floor division: c0 may be negative (wraps)
    cols = tuple(c % n_cols for c in range(c0, c1 + 1))
    box = (by0, by1, x_lo - c0 * cx, x_hi - c0 * cx + 1)
    # x_origin modulo W: the same region whichever border point the unwrapping started from
    return RegionPlan(rows, cols, r0 * cy, (c0 % n_cols) * cx, False, box, len(rows) * cy, len(cols) * cx)


def _border_loop_torch(t) -> np.ndarray:
    """:func:`_boundary_loop` of an (h, w) torch tensor (float64 numpy)."""
    return np.concatenate(
        [t[0, :].numpy(), t[1:, -1].numpy(), t[-1, :-1].flip(0).numpy(), t[1:-1, 0].flip(0).numpy()]
    ).astype(np.float64)


def crop_grid(
    yaw_deg: float,
    pitch_deg: float,
    fov_deg: float,
    out_hw: tuple[int, int],
    image_hw: tuple[int, int],
    chunk_hw: tuple[int, int],
    *,
    flip: bool = False,
) -> tuple[RegionPlan, np.ndarray, np.ndarray]:
    """The CPU loader's sampling map: (:class:`RegionPlan`, x, y) where x, y (h, w) float32 are
    pixel coordinates in the plan's tap box ``bbox`` (column x0 / row y0 of the chunk region =
    0) — i.e. :meth:`RegionPlan.local` of :func:`perspective_map`'s (px, py) minus the box origin
    (tested equal), except that rows are not clamped (samplers clamp to the box, which
    :meth:`RegionPlan.local` does too). ``flip`` mirrors the crop left↔right (the map of column
    j is that of column w−1−j, bit for bit).

    Organised for speed (fp32, torch's vectorised atan2): ``R_crop_to_pano = R_y(yaw)·R_x(pitch)``
    and a rotation about the panorama's vertical only adds ``yaw`` to the longitude, so the rays
    are rotated by R_x(pitch) alone — whose y and z depend only on the row — leaving two atan2 and
    one hypot over the crop; the region is planned from the map's border
    (:func:`plan_region_from_border`)."""
    import torch

    out_h, out_w = out_hw
    H, W = image_hw
    if W != 2 * H:
        raise ValueError(f"equirectangular images are 2:1; got {H}×{W}")
    f = _focal_px(fov_deg, out_w)
    xs, ys = _pixel_offsets_torch(out_h, out_w)  # (1, w), (h, 1): pixel offsets from the centre
    xs, ys = xs * (1.0 / f), ys * (1.0 / f)
    p = math.radians(pitch_deg)
    cp, sp = math.cos(p), math.sin(p)
    up = ys * (-cp) + sp  # −y of R_x(pitch)·ray, (h, 1)
    fwd = ys * sp + cp  # z of R_x(pitch)·ray, (h, 1)
    lon = torch.atan2(xs, fwd)  # (h, w), longitude before the yaw
    lat = torch.atan2(up, torch.hypot(xs, fwd))  # (h, w); atan2 only: finite everywhere
    if flip:  # mirror the map itself (not the offsets): flipped crops are bit-exact mirrors
        lon, lat = lon.flip(1), lat.flip(1)
    s = W / (2.0 * math.pi)  # px per radian
    px0 = math.radians(yaw_deg) * s + (W - 1) / 2.0  # px = lon·s + px0
    py0 = (H - 1) / 2.0  # py = −lat·s + py0
    bx = np.remainder(_border_loop_torch(lon) * s + px0 + 0.5, W) - 0.5
    by = _border_loop_torch(lat) * (-s) + py0
    plan = plan_region_from_border(bx, by, image_hw, chunk_hw)
    y0, _, x0, _ = plan.bbox
    x = lon.mul_(s).add_(px0 - plan.x_origin)
    bx_region = _border_loop_torch(x)
    if not (bx_region.min() >= 0.0 and bx_region.max() < W):  # the seam is in view (longitude has no
        torch.remainder(x, W, out=x)  # interior extrema without a pole): region x is px − origin mod W
    x.sub_(x0)
    y = lat.mul_(-s).add_(py0 - plan.y_origin - y0)
    return plan, x.numpy(), y.numpy()


def sample_bilinear_numpy(image_chw: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Reference bilinear sampler on a whole equirect image (C, H, W): px wraps, py clamps.
    float64 maths; (C, h, w) float32."""
    C, H, W = image_chw.shape
    x = np.asarray(px, np.float64)
    y = np.clip(np.asarray(py, np.float64), 0, H - 1)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx, fy = x - x0, y - y0
    x0i = np.remainder(x0.astype(np.int64), W)
    x1i = np.remainder(x0i + 1, W)
    y0i = y0.astype(np.int64)
    y1i = np.minimum(y0i + 1, H - 1)
    img = image_chw.astype(np.float64)
    out = (
        img[:, y0i, x0i] * ((1 - fx) * (1 - fy))
        + img[:, y0i, x1i] * (fx * (1 - fy))
        + img[:, y1i, x0i] * ((1 - fx) * fy)
        + img[:, y1i, x1i] * (fx * fy)
    )
    return out.astype(np.float32)


def nearest_index(x: np.ndarray, y: np.ndarray, image_hw: tuple[int, int], *, wrap_w: int | None = None) -> np.ndarray:
    """Flat pixel indices (h·w,) of the nearest neighbours (round half up) of (x, y) in an
    (H, W) image; reuse one index for several nearest-sampled arrays of that size."""
    H, W = image_hw
    ix = np.floor(np.asarray(x, np.float32) + 0.5).astype(np.int64)
    iy = np.clip(np.floor(np.asarray(y, np.float32) + 0.5).astype(np.int64), 0, H - 1)
    ix = np.remainder(ix, wrap_w) if wrap_w else np.clip(ix, 0, W - 1)
    return (iy * W + ix).reshape(-1)


def sample_nearest(image_chw: np.ndarray, x: np.ndarray, y: np.ndarray, *, wrap_w: int | None = None) -> np.ndarray:
    """Nearest-neighbour sampling (round half up) of (C, H, W) at (x, y) → (C, h, w), same dtype.
    ``wrap_w``: wrap x modulo this width (whole equirect image); else clamp to the image."""
    C, H, W = image_chw.shape
    idx = nearest_index(x, y, (H, W), wrap_w=wrap_w)
    return image_chw.reshape(C, H * W)[:, idx].reshape((C,) + np.shape(x))


def _torch_grid(px, py, H: int, W: int):
    import torch

    # the image is circularly padded by one column on each side: padded x = px + 1
    gx = (px + 1.0) / (W + 1) * 2.0 - 1.0
    gy = py / (H - 1) * 2.0 - 1.0
    return torch.stack([gx, gy], dim=-1).to(torch.float32)


def sample_bilinear_torch(panos, px, py):
    """Batched bilinear sampling on any device: ``panos`` (B, C, H, W) float, ``px``/``py``
    (B, h, w) from :func:`perspective_map_torch` → (B, C, h, w). px wraps, py clamps."""
    import torch
    import torch.nn.functional as F

    B, C, H, W = panos.shape
    padded = torch.cat([panos[..., -1:], panos, panos[..., :1]], dim=-1)
    grid = _torch_grid(px, py.clamp(0, H - 1), H, W)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=True)


def sample_nearest_torch(panos, px, py):
    """Batched nearest sampling (labels): (B, C, H, W) any dtype → (B, C, h, w) same dtype."""
    import torch

    B, C, H, W = panos.shape
    ix = torch.remainder(torch.floor(px + 0.5).long(), W)
    iy = torch.floor(py + 0.5).long().clamp(0, H - 1)
    flat = panos.reshape(B, C, H * W)
    idx = (iy * W + ix).reshape(B, 1, -1).expand(B, C, -1)
    return torch.gather(flat, 2, idx).reshape(B, C, *px.shape[1:])


def crop_right_axis_local(R_world_to_cam_opensfm: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Unit right (x) axis of the crop camera in ``local_m`` for a panorama with that pose."""
    R_pano = np.asarray(R_world_to_cam_opensfm, dtype=np.float64).reshape(3, 3)
    right_pano = crop_rotation(yaw_deg, pitch_deg)[:, 0]
    return R_pano.T @ right_pano


def reflect_normals(normal_chw: np.ndarray, axis_local: Sequence[float]) -> np.ndarray:
    """Mirror world normals (3, h, w) across the plane ⟂ ``axis_local`` (unit): n − 2(n·a)a.

    Horizontal flip convention: flipping a crop left↔right is the view of the world mirrored
    across the crop camera's vertical plane through its view direction (the plane ⟂ its right
    axis), so the normals of the flipped crop are the source normals reflected across that
    plane. Sky normals (0) stay 0."""
    a = np.asarray(axis_local, dtype=np.float32).reshape(3, 1, 1)
    n = normal_chw.astype(np.float32, copy=False)
    d = (n * a).sum(axis=0, keepdims=True)
    return n - 2.0 * d * a


def crop_batch_torch(
    sim,
    real,
    label,
    R_world_to_cam_opensfm,
    yaw_deg,
    pitch_deg,
    fov_deg,
    flip,
    out_size: int,
    depth_range_m: tuple[float, float] = (0.0, 200.0),
) -> dict:
    """Batched (e.g. GPU) equivalent of ``PanoCropDataset.crop_view`` on whole panoramas that
    are already tensors on a device: ``sim`` (B, 7, H, W) float/half, ``real`` (B, 3, H, W) uint8,
    ``label`` (B, 1, H, W) uint8/int, ``R_world_to_cam_opensfm`` (B, 3, 3); angles (B,) degrees;
    ``flip`` (B,) bool. Returns ``sim`` (B, 7, n, n) [DiffCol, unit normals (reflected for flipped
    items), depth mapped by ``depth_range_m``; sky 0], ``real`` (B, 3, n, n) in [−1, 1],
    ``label`` (B, n, n) int64, ``sky`` (B, 1, n, n). Same conventions and non-sky-weighted
    normals/depth as the CPU loader; no pyramid (pass a downsampled panorama for wide crops)."""
    import torch

    B, _, H, W = sim.shape
    dev = sim.device
    px, py = perspective_map_torch(yaw_deg, pitch_deg, fov_deg, (out_size, out_size), (H, W), device=dev)
    fl = torch.as_tensor(flip, dtype=torch.bool, device=dev).reshape(B, 1, 1)
    px, py = torch.where(fl, px.flip(-1), px), torch.where(fl, py.flip(-1), py)
    nonsky = (label != 0).to(torch.float32)
    stack = torch.cat([sim.to(torch.float32), nonsky, real.to(torch.float32)], dim=1)  # (B, 11, H, W)
    s = sample_bilinear_torch(stack, px, py)
    lab = sample_nearest_torch(label, px, py)[:, 0].long()
    keep = (lab != 0).to(torch.float32)[:, None]
    out = torch.empty((B, 7, out_size, out_size), dtype=torch.float32, device=dev)
    out[:, 0:3] = s[:, 0:3].clamp(0.0, 1.0)
    n = s[:, 3:6]
    n = n * torch.rsqrt((n * n).sum(1, keepdim=True).clamp_min(1e-12)) * keep
    # crop right axis in the panorama frame is R_y(yaw)·x̂ = (cos yaw, 0, −sin yaw) for any pitch
    yaw = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=torch.float32, device=dev).reshape(B))
    right_pano = torch.stack([torch.cos(yaw), torch.zeros_like(yaw), -torch.sin(yaw)], dim=-1)
    R = torch.as_tensor(R_world_to_cam_opensfm, dtype=torch.float32, device=dev).reshape(B, 3, 3)
    axis = (R.transpose(1, 2) @ right_pano[:, :, None])[:, :, 0][:, :, None, None]  # (B, 3, 1, 1)
    reflected = n - 2.0 * (n * axis).sum(1, keepdim=True) * axis
    out[:, 3:6] = torch.where(fl[:, None], reflected, n)
    d0, d1 = depth_range_m
    depth = s[:, 6:7] / s[:, 7:8].clamp_min(1e-3)
    out[:, 6:7] = ((depth - d0) / (d1 - d0)).clamp(0.0, 1.0) * keep
    return {"sim": out, "real": s[:, 8:11] / 127.5 - 1.0, "label": lab, "sky": 1.0 - keep}
