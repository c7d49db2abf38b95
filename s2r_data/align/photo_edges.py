"""Photo edges of an equirectangular panorama: oriented edge maps with distance transforms, and a
sub-pixel edge search along a direction (pure numpy/scipy).

Colour is used through three opponent channels (luminance, blue–yellow, red–green): a pale facade
against a pale sky differs mostly in blue–yellow, asphalt against pavement in luminance.

* :func:`edge_map` — at a working width (e.g. 512 px): gradient (derivative of Gaussian),
  non-maximum suppression, a relative threshold, and one truncated distance transform per *line
  orientation* bin (edge direction in the image, 0 = horizontal line, 90° = vertical line). A model
  edge projected with image direction θ reads the distance map of θ's bin: a vertical building
  corner is never attracted by a window sill.
* :class:`PhotoSampler` + :func:`edge_offsets` — at full resolution: the photo's opponent channels
  sampled bilinearly along the normal of a projected model edge; the strongest nearby step gives
  the edge's signed offset in pixels (parabolic peak, sub-pixel). No full-resolution gradient
  image is computed.
* :func:`sky_mask` — a weight-free sky estimate (smooth, bright, connected to the top rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "PhotoError",
    "EdgeMapConfig",
    "EdgeMap",
    "opponent_channels",
    "check_photo",
    "downsample_channels",
    "edge_map",
    "PhotoSampler",
    "edge_offsets",
    "sky_mask",
    "bilinear",
]


class PhotoError(ValueError):
    """The photo cannot be used for alignment (wrong shape, empty, constant)."""


def check_photo(photo: np.ndarray, *, name: str = "photo") -> np.ndarray:
    """Validate an equirectangular photo, (H, W, 3) or (3, H, W), uint8 or float in [0, 1]; returns it
    as (H, W, 3) (same dtype). Raises :class:`PhotoError` naming the problem (shape, NaN, empty)."""
    a = np.asarray(photo)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[2] != 3:
        raise PhotoError(f"{name}: expected an RGB image (H, W, 3) or (3, H, W), got shape {a.shape}")
    h, w = a.shape[:2]
    if h < 8 or w != 2 * h:
        raise PhotoError(f"{name}: an equirectangular panorama is 2:1 and at least 16×8 px, got {w}×{h}")
    if a.dtype != np.uint8 and not np.isfinite(a).all():
        raise PhotoError(f"{name}: contains NaN/inf pixels")
    sub = a[:: max(1, h // 64), :: max(1, w // 128)].astype(np.float32)
    if float(sub.std()) < (0.25 if a.dtype == np.uint8 else 1e-3):
        raise PhotoError(f"{name}: the image is empty (one constant colour); re-download or drop it")
    return a


def opponent_channels(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB, uint8 or float in [0, 1] → (3, H, W) float32: luminance, blue–yellow, red–green
    (units of the [0, 1] scale)."""
    f = np.float32(1.0 / 255.0) if rgb.dtype == np.uint8 else np.float32(1.0)
    r = rgb[..., 0].astype(np.float32) * f
    g = rgb[..., 1].astype(np.float32) * f
    b = rgb[..., 2].astype(np.float32) * f
    out = np.empty((3,) + r.shape, dtype=np.float32)
    np.add(r, g, out=out[2])
    out[0] = (out[2] + b) * np.float32(1 / 3)
    out[1] = (b - out[2] * np.float32(0.5)) * np.float32(1.5)
    out[2] = (r - g) * np.float32(1.5)
    return out


def downsample_channels(chan: np.ndarray, width: int) -> np.ndarray:
    """Area-average (C, H, W) panorama channels to ``width`` × ``width/2`` (integer factors; else zoom)."""
    C, h, w = chan.shape
    if w == width:
        return chan
    f = w // width
    if f >= 1 and w == f * width and h == f * (width // 2):
        return chan.reshape(C, width // 2, f, width, f).mean(axis=(2, 4), dtype=np.float32)
    return ndi.zoom(chan, (1, width // 2 / h, width / w), order=1).astype(np.float32)


@dataclass(frozen=True)
class EdgeMapConfig:
    width_px: int = 512  # working width (height = width / 2)
    sigma_px: float = 1.0  # derivative-of-Gaussian scale
    rel_threshold: float = 4.0  # keep edges stronger than this × the median gradient ...
    abs_threshold: float = 0.02  # ... and than this (opponent units per pixel)
    n_bins: int = 4  # line-orientation bins over 180°
    bin_halfwidth_deg: float = 30.0  # an edge pixel belongs to every bin within this angle
    truncate_px: float = 12.0  # distance transforms saturate here


@dataclass(frozen=True)
class EdgeMap:
    width: int
    height: int
    magnitude: np.ndarray  # float32 (H, W)
    line_angle_rad: np.ndarray  # float32 (H, W) in [0, π): direction of the edge line (0 = horizontal)
    edges: np.ndarray  # bool (H, W), thinned
    dt_px: np.ndarray  # float32 (n_bins, H, W), truncated distance to the nearest edge of that bin
    config: EdgeMapConfig
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def bin_of(self, line_angle_rad: np.ndarray) -> np.ndarray:
        """Nearest orientation bin of line angles (radians, any range)."""
        n = self.dt_px.shape[0]
        a = np.mod(line_angle_rad, math.pi)
        return np.round(a / (math.pi / n)).astype(np.int64) % n

    def distance(self, px: np.ndarray, py: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """Bilinear distance (px) to the nearest photo edge of ``bins`` at (px, py) (x wraps)."""
        return bilinear(self.dt_px, px, py, channel=bins)

    def distance_and_gradient(self, px: np.ndarray, py: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bilinear distance and its x, y derivatives (central differences of the transform,
        computed once and cached) at (px, py) for each point's bin."""
        stack = self._cache.get("dt_grad")
        if stack is None:
            dt = self.dt_px
            gx = 0.5 * (np.roll(dt, -1, axis=2) - np.roll(dt, 1, axis=2))
            gy = np.zeros_like(dt)
            gy[:, 1:-1] = 0.5 * (dt[:, 2:] - dt[:, :-2])
            stack = np.stack([dt, gx, gy], axis=1).reshape(-1, self.height, self.width)  # (n_bins · 3, H, W)
            self._cache["dt_grad"] = stack
        b = np.asarray(bins, dtype=np.int64) * 3
        d, gx, gy = bilinear(stack, px, py, channel=np.stack([b, b + 1, b + 2]))
        return d, gx, gy


def _gradients(chan: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    gx = np.empty_like(chan)
    gy = np.empty_like(chan)
    for c in range(chan.shape[0]):
        # x wraps around the panorama seam; y does not
        ndi.gaussian_filter(chan[c], sigma, order=(0, 1), output=gx[c], mode=("nearest", "wrap"))
        ndi.gaussian_filter(chan[c], sigma, order=(1, 0), output=gy[c], mode=("nearest", "wrap"))
    return gx, gy


def _structure(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-channel gradient magnitude and gradient direction (Di Zenzo)."""
    sxx = (gx * gx).sum(0)
    syy = (gy * gy).sum(0)
    sxy = (gx * gy).sum(0)
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)  # gradient direction, mod π
    lam = 0.5 * (sxx + syy + np.sqrt((sxx - syy) ** 2 + 4 * sxy**2))
    return np.sqrt(lam).astype(np.float32), theta.astype(np.float32)


def _nms(mag: np.ndarray, grad_dir: np.ndarray) -> np.ndarray:
    """Thin edges: keep pixels not smaller than both neighbours along the gradient (4 directions)."""
    q = np.round(np.mod(grad_dir, math.pi) / (math.pi / 4)).astype(np.int64) % 4
    keep = np.zeros(mag.shape, dtype=bool)
    pad = np.pad(mag, 1, mode="edge")
    pad[1:-1, 0], pad[1:-1, -1] = mag[:, -1], mag[:, 0]  # wrap in x
    H, W = mag.shape
    c = pad[1:-1, 1:-1]
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        a = pad[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
        b = pad[1 - dy : 1 - dy + H, 1 - dx : 1 - dx + W]
        m = q == k
        keep |= m & (c >= a) & (c >= b)
    return keep


def edge_map(chan_full: np.ndarray, config: EdgeMapConfig = EdgeMapConfig(), *, valid: np.ndarray | None = None) -> EdgeMap:
    """Oriented photo edges at ``config.width_px`` with per-orientation distance transforms.

    ``chan_full``: the photo's :func:`opponent_channels` (3, H, W) at any 2:1 size;
    ``valid``: optional bool (h, w) at the working size, False where the photo is unusable."""
    chan = downsample_channels(chan_full, config.width_px)
    gx, gy = _gradients(chan, config.sigma_px)
    mag, grad_dir = _structure(gx, gy)
    thr = max(config.abs_threshold, config.rel_threshold * float(np.median(mag)))
    edges = _nms(mag, grad_dir) & (mag > thr)
    if valid is not None:
        edges &= valid
    line = np.mod(grad_dir + math.pi / 2, math.pi).astype(np.float32)
    n = config.n_bins
    H, W = mag.shape
    dts = np.empty((n, H, W), dtype=np.float32)
    half = math.radians(config.bin_halfwidth_deg)
    for b in range(n):
        centre = b * math.pi / n
        dang = np.abs(np.mod(line - centre + math.pi / 2, math.pi) - math.pi / 2)
        e = edges & (dang <= half)
        if not e.any():
            dts[b] = config.truncate_px
            continue
        # the seam wraps: transform a copy padded by the truncation width on both sides
        p = int(math.ceil(config.truncate_px)) + 1
        ep = np.concatenate([e[:, -p:], e, e[:, :p]], axis=1)
        d = ndi.distance_transform_edt(~ep)[:, p:-p]
        dts[b] = np.minimum(d, config.truncate_px)
    return EdgeMap(W, H, mag, line, edges, dts, config)


def bilinear(img: np.ndarray, px: np.ndarray, py: np.ndarray, *, channel: np.ndarray | int | None = None) -> np.ndarray:
    """Bilinear samples of ``img`` (C, H, W) or (H, W) at pixel coordinates (x wraps, y clamps).

    ``channel``: per-sample channel index (array) or one channel; None = all channels → (C, N)."""
    if img.ndim == 2:
        img = img[None]
        channel = 0
    C, H, W = img.shape
    px = np.asarray(px, dtype=np.float64)
    py = np.clip(np.asarray(py, dtype=np.float64), 0.0, H - 1.0)
    x0 = np.floor(px)
    y0 = np.minimum(np.floor(py), H - 2)
    fx = (px - x0).astype(np.float32)
    fy = (py - y0).astype(np.float32)
    x0 = x0.astype(np.int64) % W
    x1 = (x0 + 1) % W
    y0 = y0.astype(np.int64)
    y1 = y0 + 1
    flat = img.reshape(C, H * W)
    i00, i01, i10, i11 = y0 * W + x0, y0 * W + x1, y1 * W + x0, y1 * W + x1
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    if channel is None:
        return flat[:, i00] * w00 + flat[:, i01] * w01 + flat[:, i10] * w10 + flat[:, i11] * w11
    ch = np.asarray(channel, dtype=np.int64)  # (N,) or (K, N): K samples per point, weights shared
    base = ch * (H * W)
    f = img.reshape(-1)
    return f[base + i00] * w00 + f[base + i01] * w01 + f[base + i10] * w10 + f[base + i11] * w11


@dataclass(frozen=True)
class PhotoSampler:
    """The photo's opponent channels at full resolution, lightly smoothed, for edge searches."""

    chan: np.ndarray  # float32 (3, H, W)

    @classmethod
    def of(cls, chan: np.ndarray, *, sigma_px: float = 0.0) -> "PhotoSampler":
        """From :func:`opponent_channels` (kept, not copied, when ``sigma_px`` is 0)."""
        if sigma_px > 0:
            chan = chan.copy()
            for c in range(3):
                ndi.gaussian_filter(chan[c], sigma_px, output=chan[c], mode=("nearest", "wrap"))
        return cls(chan)

    @property
    def width(self) -> int:
        return int(self.chan.shape[2])

    @property
    def height(self) -> int:
        return int(self.chan.shape[1])


def edge_offsets(
    sampler: PhotoSampler,
    px: np.ndarray,
    py: np.ndarray,
    normal_xy: np.ndarray,
    *,
    radius_px: float,
    min_step: float = 0.03,
    prior_sigma_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed sub-pixel offset (px, along ``normal_xy``) from each point to the strongest colour
    step near it, and that step's strength; NaN offset where no step ≥ ``min_step`` lies within
    ``radius_px``.

    The step is the opponent-colour difference across the normal, averaged over three samples
    along the edge (±1 px); steps nearer to the prediction are preferred with a Gaussian of
    ``prior_sigma_px`` (default radius / 2)."""
    n = np.asarray(normal_xy, dtype=np.float64)
    tx, ty = -n[:, 1], n[:, 0]
    R = int(math.ceil(radius_px))
    ks = np.arange(-R, R + 1, dtype=np.float64)
    N, K = len(px), len(ks)
    if N == 0:
        return np.zeros(0), np.zeros(0)
    # sample positions: offsets k ± 0.5 along n, tangent −1, 0, +1
    prof = np.zeros((N, K), dtype=np.float32)
    for t in (-1.0, 0.0, 1.0):
        bx = px[:, None] + t * tx[:, None]
        by = py[:, None] + t * ty[:, None]
        xa = bx + (ks[None] + 0.5) * n[:, 0:1]
        ya = by + (ks[None] + 0.5) * n[:, 1:2]
        xb = bx + (ks[None] - 0.5) * n[:, 0:1]
        yb = by + (ks[None] - 0.5) * n[:, 1:2]
        a = bilinear(sampler.chan, xa.ravel(), ya.ravel())
        b = bilinear(sampler.chan, xb.ravel(), yb.ravel())
        prof += np.sqrt(((a - b) ** 2).sum(0)).reshape(N, K)
    prof /= 3.0
    s = prior_sigma_px if prior_sigma_px is not None else max(radius_px / 2.0, 1.0)
    score = prof * np.exp(-0.5 * (ks[None] / s) ** 2)
    # local maxima only (not at the window ends)
    inner = np.zeros_like(score, dtype=bool)
    inner[:, 1:-1] = (prof[:, 1:-1] >= prof[:, :-2]) & (prof[:, 1:-1] >= prof[:, 2:])
    score = np.where(inner & (prof >= min_step), score, -1.0)
    j = np.argmax(score, axis=1)
    rows = np.arange(N)
    ok = score[rows, j] > 0
    jj = np.clip(j, 1, K - 2)
    y0, y1, y2 = prof[rows, jj - 1], prof[rows, jj], prof[rows, jj + 1]
    den = y0 - 2 * y1 + y2
    frac = np.where(np.abs(den) > 1e-9, 0.5 * (y0 - y2) / np.where(np.abs(den) > 1e-9, den, 1.0), 0.0)
    frac = np.clip(frac, -0.5, 0.5)
    off = ks[jj] + frac
    return np.where(ok, off, np.nan), np.where(ok, prof[rows, j], 0.0)


def sky_mask(chan_full: np.ndarray, width: int = 256, *, max_gradient: float = 0.04) -> np.ndarray:
    """Weight-free sky estimate at ``width`` from :func:`opponent_channels`: bright, smooth pixels of
    the upper half connected to the top rows. bool (width/2, width)."""
    chan = downsample_channels(chan_full, width)
    gx, gy = _gradients(chan, 1.0)
    mag, _ = _structure(gx, gy)
    lum = chan[0]
    H = chan.shape[1]
    smooth = mag < max_gradient
    bright = lum > max(0.25, float(np.percentile(lum, 30)))
    cand = smooth & bright
    cand[H // 2 + H // 16 :] = False  # not below ≈ −11° elevation
    lab, n = ndi.label(cand)
    if n == 0:
        return np.zeros_like(cand)
    top = np.unique(lab[0:2][lab[0:2] > 0])
    # labels that touch the seam are one region: wrap by joining labels of column 0 and W−1
    sky = np.isin(lab, top)
    left, right = lab[:, 0], lab[:, -1]
    joined = np.unique(np.concatenate([right[(left > 0) & sky[:, 0] & (right > 0)], left[(right > 0) & sky[:, -1] & (left > 0)]]))
    if len(joined):
        sky |= np.isin(lab, joined)
    return sky
