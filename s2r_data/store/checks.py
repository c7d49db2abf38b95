"""Per-sample content checks shared by the writer (before writing) and :func:`verify` (after)."""

from __future__ import annotations

import numpy as np

from ..citymodel import CLASSES

__all__ = ["sample_problems", "NORMAL_TOLERANCE", "DIFFCOL_TOLERANCE"]

NORMAL_TOLERANCE = 0.02  # |‖n‖ − 1| on surfaces (float16 storage)
DIFFCOL_TOLERANCE = 1e-3


def sample_problems(sim: np.ndarray, label: np.ndarray, real: np.ndarray, mask: np.ndarray) -> list[str]:
    """Problems of a (sim f16/f32 (7,H,W), label u8 (1,H,W), real u8 (3,H,W), mask u8 (2,H,W))
    sample, as short sentences naming the array. Empty list = consistent."""
    out: list[str] = []
    H, W = label.shape[-2:]
    for name, a, c in (("sim", sim, 7), ("label", label, 1), ("real", real, 3), ("mask", mask, 2)):
        if a.shape != (c, H, W):
            out.append(f"{name}: shape {a.shape}, expected {(c, H, W)}")
    if out:
        return out
    s = sim.astype(np.float32)
    finite = np.isfinite(s)
    if not finite.all():
        bad = [i for i in range(7) if not finite[i].all()]
        out.append(f"sim: {int((~finite).sum())} non-finite values in channels {bad}")
        s = np.where(finite, s, 0.0)
    n_classes = len(CLASSES)
    if label.max(initial=0) >= n_classes:
        out.append(f"label: values ≥ {n_classes} (max {int(label.max())}); classes are s2r_data.citymodel.CLASSES")
    if mask.max(initial=0) > 1:
        out.append("mask: values other than 0/1")
    sky = label[0] == 0
    if not np.array_equal(mask[0].astype(bool), sky):
        out.append(f"mask: sky channel disagrees with label 0 at {int((mask[0].astype(bool) != sky).sum())} pixels")
    depth = s[6]
    if (depth[sky] != 0).any():
        out.append(f"sim: depth ≠ 0 at {int((depth[sky] != 0).sum())} sky pixels (sky must have depth 0)")
    if (depth[~sky] <= 0).any():
        out.append(f"sim: depth ≤ 0 at {int((depth[~sky] <= 0).sum())} non-sky pixels (depth 0 means sky)")
    dc = s[0:3]
    if dc.min(initial=0) < -DIFFCOL_TOLERANCE or dc.max(initial=0) > 1 + DIFFCOL_TOLERANCE:
        out.append(f"sim: DiffCol outside [0, 1] (min {dc.min():.4g}, max {dc.max():.4g})")
    nrm = np.linalg.norm(s[3:6], axis=0)
    if (np.abs(nrm[~sky] - 1) > NORMAL_TOLERANCE).any():
        out.append(f"sim: {int((np.abs(nrm[~sky] - 1) > NORMAL_TOLERANCE).sum())} non-sky normals are not unit length")
    if (nrm[sky] > 0).any():
        out.append(f"sim: {int((nrm[sky] > 0).sum())} sky pixels have a non-zero normal")
    return out
