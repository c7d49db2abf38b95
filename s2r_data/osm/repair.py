"""Broken OSM areas: what was repaired or dropped and why, and the repair of closed ways (pure).

libosmium assembles no area from a closed way whose ring crosses itself (a "bow-tie"), folds
back on itself (a zero-width spike) or has fewer than three distinct nodes, nor from one whose
nodes are missing from the extract. :func:`polygon_from_closed_way` rebuilds such a way from its
node locations with ``shapely.make_valid`` and keeps the polygonal part; what cannot be rebuilt
is reported as a :class:`FeatureIssue` with one of the reasons:

* ``incomplete``: nodes (or multipolygon member ways) missing from the extract;
* ``invalid``: the geometry cannot be repaired into a polygon;
* ``degenerate``: fewer than three distinct nodes, zero area, or smaller than the builder's
  minimum piece once projected (a sliver).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import shapely

from .mesh import polygon_parts

__all__ = ["INCOMPLETE", "INVALID", "DEGENERATE", "REPAIRED", "FeatureIssue", "polygon_from_closed_way"]

INCOMPLETE, INVALID, DEGENERATE, REPAIRED = "incomplete", "invalid", "degenerate", "repaired"


@dataclass(frozen=True)
class FeatureIssue:
    """One OSM area that was repaired or dropped (``reason``), with a human-readable ``detail``."""

    kind: str  # "building", "road", "water", "green"
    osm_id: str  # "w123" / "r45"
    reason: str  # INCOMPLETE | INVALID | DEGENERATE | REPAIRED
    detail: str
    bbox_lonlat: tuple[float, float, float, float] | None = None  # of the located nodes, if any

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.osm_id, "reason": self.reason, "detail": self.detail}


def polygon_from_closed_way(
    coords_lonlat: Sequence[tuple[float, float] | None],
) -> tuple[shapely.Geometry | None, str, str]:
    """A closed way's node locations (``None`` for a node missing from the extract) → ``(geometry,
    reason, detail)``: the valid (Multi)Polygon and ``REPAIRED``, or ``None`` and why not."""
    n = len(coords_lonlat)
    missing = sum(c is None for c in coords_lonlat)
    if missing:
        return None, INCOMPLETE, f"{missing} of {n} nodes missing from the extract"
    xy = np.asarray(coords_lonlat, dtype=np.float64).reshape(-1, 2)
    distinct = len(np.unique(xy, axis=0))
    if distinct < 3:
        return None, DEGENERATE, f"{distinct} distinct node positions (a polygon needs 3)"
    ring = xy if np.array_equal(xy[0], xy[-1]) else np.vstack([xy, xy[:1]])
    poly = shapely.Polygon(ring)
    why = shapely.is_valid_reason(poly)
    parts, _ = polygon_parts(np.array([shapely.make_valid(poly)], dtype=object))
    parts = parts[shapely.area(parts) > 0]
    if len(parts) == 0:
        if shapely.area(poly) == 0.0 or why.startswith("Too few points"):
            return None, DEGENERATE, "zero area (collinear nodes)"
        return None, INVALID, f"no polygon left after make_valid ({why})"
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(list(parts))
    return geom, REPAIRED, f"{why}: rebuilt with make_valid ({len(parts)} polygon{'s' * (len(parts) > 1)})"
