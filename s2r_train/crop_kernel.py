"""Fused CPU kernel of the crop loader: one pass over the crop's pixels samples every channel of a
store region with one map and writes the finished item values.

Per crop pixel, from the region pixel coordinates (x, y) of :func:`s2r_train.crops.crop_grid`
(clamped to the region, i.e. border replication — the region already holds every tap):

* bilinear taps (exact float32 weights) of the float16 ``sim`` planes — read through a 65 536-entry
  float16 → float32 table, so the region stays float16 and is never converted as a whole — and of
  the uint8 photo;
* DiffCol clamped to [0, 1]; normals and depth interpolated over non-sky taps only (normals
  renormalised to unit length — undoing the blend between faces and the sky taps' zeros — depth
  divided by the non-sky weight: no half-depth halo at skylines), then 0 where the nearest label
  is sky; depth mapped to [0, 1] by the fixed range (clipped); normals of flipped crops reflected
  across the plane ⟂ the crop's right axis (:func:`s2r_train.crops.reflect_normals`);
* the photo rounded to its 8-bit grid (round half up); label and photo-valid mask by nearest
  neighbour (round half up).

Returns False if any sampled sim value is not finite (NaN/Inf in the store), so the caller can
re-draw. Replaces per-channel casts, interleaving, remaps and a dozen post-processing passes
(``docs/benchmarks-loader.md``); ``tests/train/test_crop_kernel.py`` checks it against a float64
``grid_sample`` pipeline on the same region (≤ 2e-5). Inputs are validated in
:func:`sample_crop`: the compiled loop does no bounds checks, and clamps every coordinate (NaN →
0) so no tap can leave the region.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uintp

__all__ = ["HALF_TO_FLOAT", "sample_crop"]

#: float16 bit pattern → float32 value (256 KiB: stays in a core's L2 cache)
HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)


@njit(inline="always")
def _bilinear(a, base, i00, i01, i10, i11, w00, w01, w10, w11):  # pragma: no cover - compiled
    return w00 * a[base + i00] + w01 * a[base + i01] + w10 * a[base + i10] + w11 * a[base + i11]


@njit(inline="always")
def _bilinear_lut(a, lut, base, i00, i01, i10, i11, w00, w01, w10, w11):  # pragma: no cover - compiled
    return (w00 * lut[a[base + i00]] + w01 * lut[a[base + i01]]
            + w10 * lut[a[base + i10]] + w11 * lut[a[base + i11]])


@njit(cache=True, nogil=True, boundscheck=False)
def _sample_crop(x, y, sim_bits, real, label, valid, region_w, lut, depth_near_m, depth_scale, axis, flip,
                 sim_out, real_out, label_out, valid_out):  # pragma: no cover - compiled (tested through sample_crop)
    # flat arrays and unsigned (uintp) offsets: no negative-index wrap-around checks per access
    n = x.shape[0]
    bw = uintp(region_w)
    plane = uintp(label.shape[0])  # region pixels
    bh = plane // bw
    x_max, y_max = np.float32(bw - uintp(1)), np.float32(bh - uintp(1))
    ax, ay, az = axis[0], axis[1], axis[2]
    zero, one, half = np.float32(0.0), np.float32(1.0), np.float32(0.5)
    total = np.float32(0.0)  # NaN/Inf anywhere make the sum non-finite
    for p in range(n):
        xf, yf = x[p], y[p]
        if not xf > zero:  # also NaN
            xf = zero
        elif xf > x_max:
            xf = x_max
        if not yf > zero:
            yf = zero
        elif yf > y_max:
            yf = y_max
        x0, y0 = uintp(xf), uintp(yf)
        fx, fy = xf - np.float32(x0), yf - np.float32(y0)
        i00 = y0 * bw + x0
        i01 = i00 + (uintp(1) if x0 + uintp(1) < bw else uintp(0))
        i10 = i00 + (bw if y0 + uintp(1) < bh else uintp(0))
        i11 = i10 + (i01 - i00)
        w00, w01, w10, w11 = (one - fx) * (one - fy), fx * (one - fy), (one - fx) * fy, fx * fy
        q = uintp(yf + half) * bw + uintp(xf + half)  # nearest (round half up)
        lab = label[q]
        label_out[p] = lab
        valid_out[p] = valid[q]
        o = uintp(p)
        c0 = _bilinear_lut(sim_bits, lut, uintp(0), i00, i01, i10, i11, w00, w01, w10, w11)  # DiffCol
        c1 = _bilinear_lut(sim_bits, lut, plane, i00, i01, i10, i11, w00, w01, w10, w11)
        c2 = _bilinear_lut(sim_bits, lut, uintp(2) * plane, i00, i01, i10, i11, w00, w01, w10, w11)
        total += c0 + c1 + c2
        sim_out[o] = min(max(c0, zero), one)
        sim_out[o + uintp(n)] = min(max(c1, zero), one)
        sim_out[o + uintp(2 * n)] = min(max(c2, zero), one)
        real_out[o] = np.uint8(_bilinear(real, uintp(0), i00, i01, i10, i11, w00, w01, w10, w11) + half)  # photo
        real_out[o + uintp(n)] = np.uint8(_bilinear(real, plane, i00, i01, i10, i11, w00, w01, w10, w11) + half)
        real_out[o + uintp(2 * n)] = np.uint8(_bilinear(real, uintp(2) * plane, i00, i01, i10, i11, w00, w01, w10, w11) + half)
        o += uintp(3 * n)
        nx = _bilinear_lut(sim_bits, lut, uintp(3) * plane, i00, i01, i10, i11, w00, w01, w10, w11)
        ny = _bilinear_lut(sim_bits, lut, uintp(4) * plane, i00, i01, i10, i11, w00, w01, w10, w11)
        nz = _bilinear_lut(sim_bits, lut, uintp(5) * plane, i00, i01, i10, i11, w00, w01, w10, w11)
        depth = _bilinear_lut(sim_bits, lut, uintp(6) * plane, i00, i01, i10, i11, w00, w01, w10, w11)
        total += nx + ny + nz + depth
        if lab == 0:  # sky: normal 0, depth 0
            nx = ny = nz = depth = zero
        else:
            inv = one / np.float32(math.sqrt(max(nx * nx + ny * ny + nz * nz, np.float32(1e-12))))
            nx, ny, nz = nx * inv, ny * inv, nz * inv
            if flip:
                d2 = np.float32(2.0) * (nx * ax + ny * ay + nz * az)
                nx, ny, nz = nx - d2 * ax, ny - d2 * ay, nz - d2 * az
            nonsky = (w00 * np.float32(label[i00] != 0) + w01 * np.float32(label[i01] != 0)
                      + w10 * np.float32(label[i10] != 0) + w11 * np.float32(label[i11] != 0))
            depth_m = depth / max(nonsky, np.float32(1e-3))
            depth = min(max((depth_m - depth_near_m) * depth_scale, zero), one)
        sim_out[o] = nx
        sim_out[o + uintp(n)] = ny
        sim_out[o + uintp(2 * n)] = nz
        sim_out[o + uintp(3 * n)] = depth
    return math.isfinite(total)


def sample_crop(
    x: np.ndarray,
    y: np.ndarray,
    sim_f16: np.ndarray,
    real_u8: np.ndarray,
    label_u8: np.ndarray,
    valid_u8: np.ndarray,
    *,
    depth_range_m: tuple[float, float],
    flip_axis: np.ndarray | None,
    sim_out: np.ndarray,
    real_out: np.ndarray,
    label_out: np.ndarray,
    valid_out: np.ndarray,
) -> bool:
    """Sample one crop (module docstring). ``x``, ``y``: (h, w) float32 region pixel coordinates;
    region arrays: ``sim_f16`` (7, H, W) float16, ``real_u8`` (3, H, W), ``label_u8`` /
    ``valid_u8`` (H, W) uint8; ``flip_axis``: the crop's unit right axis in ``local_m`` for a
    flipped crop (None: not flipped). Outputs (written in place): ``sim_out`` (7, h, w) float32,
    ``real_out`` (3, h, w) uint8, ``label_out`` / ``valid_out`` (h, w) uint8. False if a sampled
    sim value is not finite (outputs then incomplete)."""
    d0, d1 = depth_range_m
    axis = np.zeros(3, np.float32) if flip_axis is None else np.asarray(flip_axis, np.float32).reshape(3)
    region_hw, crop_hw = label_u8.shape, np.shape(x)
    for name, a, shape, dtype in (
        ("y", y, crop_hw, None), ("sim_f16", sim_f16, (7,) + region_hw, np.float16), ("real_u8", real_u8, (3,) + region_hw, np.uint8),
        ("label_u8", label_u8, region_hw, np.uint8), ("valid_u8", valid_u8, region_hw, np.uint8),
        ("sim_out", sim_out, (7,) + crop_hw, np.float32), ("real_out", real_out, (3,) + crop_hw, np.uint8),
        ("label_out", label_out, crop_hw, np.uint8), ("valid_out", valid_out, crop_hw, np.uint8),
    ):
        if np.shape(a) != shape or (dtype is not None and a.dtype != dtype):
            want = np.dtype(dtype).name if dtype is not None else "any dtype"
            raise ValueError(f"sample_crop: {name} is {np.shape(a)} {getattr(a, 'dtype', '')}, expected {shape} {want}")
    if len(crop_hw) != 2 or len(region_hw) != 2 or 0 in region_hw:
        raise ValueError(f"sample_crop: need a 2-D map and a non-empty 2-D region, got {crop_hw} and {region_hw}")
    outs = (sim_out, real_out, label_out, valid_out)
    if any(not a.flags.c_contiguous for a in outs):
        raise ValueError("sample_crop writes into C-contiguous outputs")
    flat = lambda a, dtype: np.ascontiguousarray(a, dtype).reshape(-1)  # noqa: E731 - views when already so
    return bool(_sample_crop(
        flat(x, np.float32), flat(y, np.float32), flat(sim_f16, np.float16).view(np.uint16), flat(real_u8, np.uint8),
        flat(label_u8, np.uint8), flat(valid_u8, np.uint8), region_hw[1], HALF_TO_FLOAT, np.float32(d0),
        np.float32(1.0 / (d1 - d0)), axis, flip_axis is not None, *(a.reshape(-1) for a in outs),
    ))
