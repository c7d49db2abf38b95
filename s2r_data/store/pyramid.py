"""Downsampled pyramid levels stored beside each sample (``sim_l1``, ``real_l1``, …).

Level k+1 pixel (i, j) covers level-k pixels (2i..2i+1, 2j..2j+1): with the equirect convention
(pixel centres at integers) a level-k coordinate p maps to (p + 0.5)/2 − 0.5 at level k+1, which is
the same as projecting with :mod:`s2r_data.equirect` at the smaller size.

* DiffCol, photo: mean of the 2×2 block (anti-aliased; photo rounded to uint8).
* label, masks: nearest = the block's top-left pixel (class indices cannot be averaged).
* normals, depth: mean over the block's *non-sky* pixels of the new level's sky mask (sky = label 0
  after the nearest pick): 0 on sky, so ``depth 0 ⇔ sky`` holds at every level; normals are
  renormalised to unit length.
"""

from __future__ import annotations

import numpy as np

__all__ = ["downsample_sample"]


def _pool_sum(x: np.ndarray) -> np.ndarray:
    return x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]


def downsample_sample(sim: np.ndarray, label: np.ndarray, real: np.ndarray, mask: np.ndarray):
    """One pyramid step for a sample: (7,H,W) f16, (1,H,W) u8, (3,H,W) u8, (2,H,W) u8 →
    the same at (H/2, W/2)."""
    C, H, W = sim.shape
    if H % 2 or W % 2:
        raise ValueError(f"pyramid levels need even sizes, got {H}×{W}")
    label2 = label[:, 0::2, 0::2].copy()
    mask2 = mask[:, 0::2, 0::2].copy()
    sky2 = label2[0] == 0
    mask2[0] = sky2  # keep the sky mask equal to label 0 at every level
    s = sim.astype(np.float32)
    diffcol = _pool_sum(s[0:3]) * 0.25
    nonsky = (label[0] != 0).astype(np.float32)
    n_nonsky = _pool_sum(nonsky)
    geo = _pool_sum(s[3:7] * nonsky) / np.maximum(n_nonsky, 1.0)
    geo[:, sky2] = 0.0
    # a non-sky block whose non-sky pixels are all elsewhere (n = 0) cannot happen: the kept
    # top-left pixel is non-sky. Renormalise normals.
    nrm = np.linalg.norm(geo[0:3], axis=0)
    geo[0:3] = np.where(nrm > 1e-6, geo[0:3] / np.maximum(nrm, 1e-6), 0.0)
    sim2 = np.concatenate([diffcol, geo], axis=0).astype(np.float16)
    real2 = np.clip(np.round(_pool_sum(real.astype(np.float32)) * 0.25), 0, 255).astype(np.uint8)
    return sim2, label2, real2, mask2
