"""Pixel agreement between two renders of the same pose (e.g. the ray caster vs Blender).

*Edge pixel* (of a render): a pixel whose 3×3 neighbourhood (longitude wraps at the seam, rows
clamp at the poles) holds another label, another sky value or a normal more than
:data:`EDGE_NORMAL_DEG` away: its ray passes within about a pixel of a silhouette, a class boundary
or a crease, where a 1e-6 px difference in the ray can change what is hit.

:func:`compare_passes` reports, for a *reference* and a *candidate*:

* ``label_agreement`` — fraction of all pixels with the same label;
* ``label_diff_off_edge`` — differing labels on pixels that are not edges of the reference (should be 0);
* ``sky_diff_off_edge`` — the same for the sky mask;
* ``depth_within_1cm`` — among pixels hit in both with the same label and not an edge of either,
  the fraction whose depths differ by ≤ 1 cm (also ``depth_max_abs_err_m``);
* ``normal_within_0_1deg`` — the same set, normals within 0.1° (after re-normalising the float16
  normals), and ``normal_max_err_deg``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .sim_passes import SimPasses

__all__ = ["EDGE_NORMAL_DEG", "edge_mask", "compare_passes", "PassAgreement"]

EDGE_NORMAL_DEG = 1.0


def _neighbourhood_differs(a: np.ndarray, differ) -> np.ndarray:
    """(H, W) bool: some pixel of the 3×3 neighbourhood differs (``differ(x, y)``) from the centre.
    ``a`` is (C, H, W)."""
    out = np.zeros(a.shape[1:], dtype=bool)
    padded = np.concatenate([a[:, :1], a, a[:, -1:]], axis=1)  # clamp rows
    h = a.shape[1]
    for dy in (-1, 0, 1):
        rows = padded[:, 1 + dy : 1 + dy + h]
        for dx in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            out |= differ(a, np.roll(rows, dx, axis=2))  # roll wraps the longitude seam
    return out


def _unit(n: np.ndarray) -> np.ndarray:
    n = n.astype(np.float64)
    return n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-12)


def edge_mask(passes: SimPasses) -> np.ndarray:
    """(H, W) bool: the edge pixels of ``passes`` (module doc)."""
    cos_max = np.cos(np.radians(EDGE_NORMAL_DEG))
    edges = _neighbourhood_differs(passes.label, lambda a, b: (a != b)[0])
    edges |= _neighbourhood_differs(passes.sky_mask, lambda a, b: (a != b)[0])
    # normal creases between surfaces (sky pixels have normal 0: the sky test covers them)
    edges |= _neighbourhood_differs(_unit(passes.normal), lambda a, b: ((a * b).sum(0) < cos_max) & a.any(0) & b.any(0))
    return edges


@dataclass(frozen=True)
class PassAgreement:
    n_pixels: int
    label_agreement: float
    label_diff_off_edge: int
    sky_diff_off_edge: int
    n_compared: int  # pixels in the depth / normal comparison
    depth_within_1cm: float
    depth_max_abs_err_m: float
    normal_within_0_1deg: float
    normal_max_err_deg: float
    edge_fraction: float  # edge pixels of the reference

    def to_dict(self) -> dict:
        return asdict(self)


def compare_passes(reference: SimPasses, candidate: SimPasses) -> PassAgreement:
    """Agreement of ``candidate`` with ``reference`` (same pose and size; module doc)."""
    if reference.label.shape != candidate.label.shape:
        raise ValueError(f"renders differ in size: {reference.label.shape[1:]} vs {candidate.label.shape[1:]}")
    ref_edges = edge_mask(reference)
    label_diff = (reference.label != candidate.label)[0]
    sky_diff = (reference.sky_mask != candidate.sky_mask)[0]
    both = ~reference.sky_mask[0] & ~candidate.sky_mask[0] & ~label_diff & ~ref_edges & ~edge_mask(candidate)
    dd = np.abs(reference.depth_m[0].astype(np.float64) - candidate.depth_m[0])[both]
    a, b = _unit(reference.normal)[:, both], _unit(candidate.normal)[:, both]
    ang = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b, axis=0), axis=0), (a * b).sum(0)))
    n = int(both.sum())
    return PassAgreement(
        n_pixels=int(label_diff.size),
        label_agreement=float(1.0 - label_diff.mean()),
        label_diff_off_edge=int((label_diff & ~ref_edges).sum()),
        sky_diff_off_edge=int((sky_diff & ~ref_edges).sum()),
        n_compared=n,
        depth_within_1cm=float((dd <= 0.01).mean()) if n else 1.0,
        depth_max_abs_err_m=float(dd.max()) if n else 0.0,
        normal_within_0_1deg=float((ang <= 0.1).mean()) if n else 1.0,
        normal_max_err_deg=float(ang.max()) if n else 0.0,
        edge_fraction=float(ref_edges.mean()),
    )
