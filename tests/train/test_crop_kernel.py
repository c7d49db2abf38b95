"""The fused CPU crop kernel against a plain float32 torch pipeline (grid_sample + tensor ops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2r_train import crops
from s2r_train.crop_kernel import sample_crop

DEPTH_RANGE = (2.0, 150.0)


def _region(rng, h=37, w=53):
    """A store-like region: smooth unit normals and depth on surfaces, zeros on sky (label 0)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    label = rng.integers(1, 7, (h, w)).astype(np.uint8)
    label[: h // 3, : w // 2] = 0  # a sky patch with a skyline through the region
    label[rng.random((h, w)) < 0.05] = 0
    sky = label == 0
    a, b = 0.7 * np.sin(xx / 9.0), 0.5 * np.cos(yy / 7.0)
    normal = np.stack([np.cos(b) * np.sin(a), np.sin(b), np.cos(b) * np.cos(a)])
    sim = np.empty((7, h, w), np.float32)
    sim[0:3] = rng.uniform(-0.2, 1.2, (3, h, w))  # DiffCol, partly outside [0, 1] (clamped)
    sim[3:6] = normal
    sim[6] = 1.0 + 200.0 * rng.random((h, w))  # metres; some beyond the range (clipped)
    sim[3:7, sky] = 0.0
    real = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    valid = (rng.random((h, w)) < 0.8).astype(np.uint8)
    return sim.astype(np.float16), real, label, valid


def _reference(x, y, sim16, real, label, valid, axis):
    """The same item values from torch float32 ops (what the loader computed before the kernel)."""
    h, w = label.shape
    src = torch.cat([torch.from_numpy(sim16.astype(np.float32)), torch.from_numpy((label != 0).astype(np.float32))[None],
                     torch.from_numpy(real.astype(np.float32))])[None]
    xc, yc = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    grid = torch.from_numpy(np.stack([xc / (w - 1) * 2 - 1, yc / (h - 1) * 2 - 1], -1).astype(np.float32))[None]
    o = F.grid_sample(src.double(), grid.double(), mode="bilinear", padding_mode="border", align_corners=True)[0]
    iy, ix = np.floor(yc + 0.5).astype(int), np.floor(xc + 0.5).astype(int)
    lab, val = label[iy, ix], valid[iy, ix]
    keep = torch.from_numpy(lab != 0).double()
    out = torch.empty((7,) + x.shape, dtype=torch.float64)
    out[0:3] = o[0:3].clamp(0, 1)
    n = o[3:6] / (o[3:6] ** 2).sum(0).clamp_min(1e-12).sqrt() * keep
    if axis is not None:
        a = torch.as_tensor(axis, dtype=torch.float64).reshape(3, 1, 1)
        n = n - 2 * (n * a).sum(0, keepdim=True) * a
    out[3:6] = n
    d0, d1 = DEPTH_RANGE
    out[6] = ((o[6] / o[7].clamp_min(1e-3) - d0) / (d1 - d0)).clamp(0, 1) * keep
    return out.numpy(), o[8:11].numpy(), lab, val


def _run(x, y, sim16, real, label, valid, axis=None):
    oh, ow = x.shape
    outs = dict(sim_out=np.empty((7, oh, ow), np.float32), real_out=np.empty((3, oh, ow), np.uint8),
                label_out=np.empty((oh, ow), np.uint8), valid_out=np.empty((oh, ow), np.uint8))
    ok = sample_crop(x, y, sim16, real, label, valid, depth_range_m=DEPTH_RANGE, flip_axis=axis, **outs)
    return ok, outs


@pytest.mark.parametrize("flip", [False, True])
def test_kernel_matches_the_float_pipeline(flip):
    rng = np.random.default_rng(7 + flip)
    sim16, real, label, valid = _region(rng)
    h, w = label.shape
    # a rotated, scaled map, partly outside the region (clamped like border replication)
    ii, jj = np.mgrid[0:24, 0:31].astype(np.float32)
    x = (jj * 1.9 - ii * 0.35 - 2.0).astype(np.float32)
    y = (ii * 1.7 + jj * 0.3 - 1.5).astype(np.float32)
    x[0, 0], y[-1, -1] = w + 3.0, h + 2.0
    axis = crops.crop_right_axis_local(np.eye(3), 40.0, 10.0) if flip else None
    ok, out = _run(x, y, sim16, real, label, valid, axis)
    assert ok
    sim, real_f, lab, val = _reference(x, y, sim16, real, label, valid, axis)
    np.testing.assert_array_equal(out["label_out"], lab)
    np.testing.assert_array_equal(out["valid_out"], val)
    np.testing.assert_allclose(out["sim_out"], sim, atol=2e-5)
    assert np.abs(out["real_out"].astype(np.float64) - real_f).max() <= 0.5 + 1e-3  # rounded to the 8-bit grid
    assert (out["sim_out"][3:7][:, lab == 0] == 0).all() and (lab == 0).any()
    n = np.linalg.norm(out["sim_out"][3:6], axis=0)[lab != 0]
    np.testing.assert_allclose(n, 1.0, atol=1e-5)


def test_flip_reflects_exactly_the_unflipped_normals():
    rng = np.random.default_rng(3)
    sim16, real, label, valid = _region(rng)
    ii, jj = np.mgrid[0:16, 0:20].astype(np.float32)
    x, y = jj * 2.1 + 3.3, ii * 1.9 + 2.2
    axis = crops.crop_right_axis_local(np.eye(3), 100.0, 30.0)
    _, plain = _run(x, y, sim16, real, label, valid)
    _, flipped = _run(x, y, sim16, real, label, valid, axis)
    np.testing.assert_allclose(flipped["sim_out"][3:6], crops.reflect_normals(plain["sim_out"][3:6], axis), atol=1e-6)
    for key in ("real_out", "label_out", "valid_out"):
        np.testing.assert_array_equal(flipped[key], plain[key])


def test_non_finite_samples_are_reported_only_where_tapped():
    rng = np.random.default_rng(5)
    sim16, real, label, valid = _region(rng)
    x = np.full((4, 4), 10.25, np.float32)
    y = np.full((4, 4), 20.5, np.float32)
    bad = sim16.copy()
    bad[6, 30, 40] = np.nan  # far from the taps
    assert _run(x, y, bad, real, label, valid)[0]
    for value in (np.nan, np.inf):
        bad = sim16.copy()
        bad[1, 21, 11] = value  # the (y1, x1) tap
        assert not _run(x, y, bad, real, label, valid)[0]


def test_outputs_must_be_contiguous():
    rng = np.random.default_rng(1)
    sim16, real, label, valid = _region(rng)
    x = y = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        sample_crop(x, y, sim16, real, label, valid, depth_range_m=DEPTH_RANGE, flip_axis=None,
                    sim_out=np.empty((7, 4, 8), np.float32)[:, :, ::2], real_out=np.empty((3, 4, 4), np.uint8),
                    label_out=np.empty((4, 4), np.uint8), valid_out=np.empty((4, 4), np.uint8))


def test_bad_shapes_are_refused_before_the_unchecked_loop():
    rng = np.random.default_rng(2)
    sim16, real, label, valid = _region(rng)
    x = y = np.zeros((4, 4), np.float32)
    outs = dict(sim_out=np.empty((7, 4, 4), np.float32), real_out=np.empty((3, 4, 4), np.uint8),
                label_out=np.empty((4, 4), np.uint8), valid_out=np.empty((4, 4), np.uint8))
    common = dict(depth_range_m=DEPTH_RANGE, flip_axis=None)
    with pytest.raises(ValueError, match="real_u8 is"):
        sample_crop(x, y, sim16, real[:, :-1], label, valid, **common, **outs)
    with pytest.raises(ValueError, match="sim_f16 is .* expected .* float16"):
        sample_crop(x, y, sim16.astype(np.float32), real, label, valid, **common, **outs)
    with pytest.raises(ValueError, match="label_out is"):
        sample_crop(x, y, sim16, real, label, valid, **common, **dict(outs, label_out=np.empty((4, 5), np.uint8)))
    with pytest.raises(ValueError, match="y is"):
        sample_crop(x, np.zeros((4, 3), np.float32), sim16, real, label, valid, **common, **outs)


def test_non_finite_coordinates_stay_inside_the_region():
    rng = np.random.default_rng(4)
    sim16, real, label, valid = _region(rng)
    x = np.array([[np.nan, np.inf], [-np.inf, 1e30]], np.float32)
    y = np.array([[np.inf, np.nan], [1e30, -np.inf]], np.float32)
    ok, out = _run(x, y, sim16, real, label, valid)
    assert ok  # clamped to the region's corners (NaN → 0): nothing read outside it
    h, w = label.shape
    corners = {(0, 0): (h - 1, 0), (0, 1): (0, w - 1), (1, 0): (h - 1, 0), (1, 1): (0, w - 1)}
    for (i, j), (yy, xx) in corners.items():
        assert out["label_out"][i, j] == label[yy, xx]
