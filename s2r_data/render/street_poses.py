"""Random street-level panorama poses in a city model (benchmarks, agreement tests, smoke renders)."""

from __future__ import annotations

import numpy as np

from ..citymodel import CityModel
from ..poses import Pose, rotation_from_heading_pitch_roll

__all__ = ["random_street_poses"]


def random_street_poses(
    model: CityModel,
    n: int,
    *,
    seed: int,
    prefix: str = "street",
    area_local_m=None,
    height_m: float = 2.5,
    pitch_range_deg: float = 3.0,
    roll_range_deg: float = 2.0,
    clearance_m: float = 1.5,
) -> list[Pose]:
    """``n`` cameras ``height_m`` above the ground, outside building footprints buffered by
    ``clearance_m``, inside ``area_local_m`` (a shapely polygon in ``local_m``; default: the middle
    80 % of the model's bounding box), with a uniform random heading, pitch uniform in
    ±``pitch_range_deg`` and roll uniform in ±``roll_range_deg``. Deterministic for a ``seed``."""
    import shapely

    lo, hi = model.bbox_local_m()
    region = area_local_m if area_local_m is not None else shapely.box(lo[0] * 0.8, lo[1] * 0.8, hi[0] * 0.8, hi[1] * 0.8)
    free = region.difference(model.footprints().buffer(clearance_m))
    if free.is_empty:
        raise ValueError("no free street area to place cameras in (the region is covered by buildings)")
    shapely.prepare(free)
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = free.bounds
    poses: list[Pose] = []
    while len(poses) < n:
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if not shapely.contains_xy(free, x, y):
            continue
        R = rotation_from_heading_pitch_roll(
            rng.uniform(0, 360), rng.uniform(-pitch_range_deg, pitch_range_deg), rng.uniform(-roll_range_deg, roll_range_deg)
        )
        poses.append(Pose(f"{prefix}{len(poses):04d}", [x, y, height_m], R))
    return poses
