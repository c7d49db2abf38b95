"""Building outlines and parts (``local_m`` shapely geometries + tags) → solids with heights.

OSM Simple 3D Buildings: a ``building:part`` replaces the ``building`` outline it lies in (the
part's interior point is inside the outline). Where the parts do not cover the whole outline,
the uncovered remainder (outline minus parts, opened by 0.5 m to drop slivers, pieces ≥ 4 m²)
keeps the outline's tags and heights; when nothing substantial remains, the outline is
*replaced* and disappears. A part with no height information of its own inherits the tagged top
of its outline. Heights per solid: :func:`s2r_data.osm.heights.building_height`, tops clamped to
``max_height_m`` with a warning naming the OSM id (:attr:`BuildingSolids.clamped`). Solids
whose outline leaves no polygon of at least 0.01 m² after cleaning are listed in
:attr:`BuildingSolids.dropped` (reason ``degenerate``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from .heights import DEFAULT_MAX_HEIGHT_M, HEIGHT_TAGS, BuildingHeight, building_height
from .mesh import clean_polygons
from .repair import DEGENERATE, FeatureIssue

__all__ = ["BuildingSolids", "building_solids", "RESIDUAL_OPENING_M", "RESIDUAL_MIN_AREA_M2", "FOOTPRINT_MAX_BASE_M"]

RESIDUAL_OPENING_M = 0.5
RESIDUAL_MIN_AREA_M2 = 4.0
FOOTPRINT_MAX_BASE_M = 2.5  # solids starting above this do not block the street (arcades, canopies)
MIN_PIECE_AREA_M2 = 0.01  # smaller polygon pieces are dropped by clean_polygons

log = logging.getLogger(__name__)


@dataclass
class BuildingSolids:
    polygons: np.ndarray  # oriented shapely Polygons (one row per polygon piece)
    base_m: np.ndarray  # float64, per polygon
    top_m: np.ndarray  # float64, per polygon
    solid: np.ndarray  # int64, index of the solid each polygon belongs to
    solid_ids: list[str]  # OSM id per solid ("w123", "r45", "w123-rest" for a remainder)
    counts: dict[str, int] = field(default_factory=dict)
    dropped: list[FeatureIssue] = field(default_factory=list)  # buildings that left no polygon
    repaired: list[FeatureIssue] = field(default_factory=list)  # filled in by the builder
    clamped: list[dict[str, Any]] = field(default_factory=list)  # {"id", "height_m", "clamped_to_m", "tags"}

    def footprint_union(self) -> shapely.Geometry:
        """Union of polygons whose base is at street level (≤ :data:`FOOTPRINT_MAX_BASE_M`).

        Polygons touching no other one are kept as they are; only the touching ones go through
        the (costlier) GEOS union.
        """
        polys = self.polygons[self.base_m <= FOOTPRINT_MAX_BASE_M]
        if len(polys) == 0:
            return shapely.MultiPolygon()
        a, b = shapely.STRtree(polys).query(polys, predicate="intersects")
        touching = np.bincount(a[a != b], minlength=len(polys)) > 0
        merged = shapely.get_parts(shapely.union_all(polys[touching])) if touching.any() else []
        pieces = [p for p in list(polys[~touching]) + list(merged) if p.geom_type == "Polygon" and not p.is_empty]
        return shapely.MultiPolygon(pieces)


def _is_part(tags: dict[str, str]) -> bool:
    v = tags.get("building:part")
    return v is not None and v != "no"


def _residual(outline: shapely.Geometry, parts: list[shapely.Geometry]) -> shapely.Geometry | None:
    rest = shapely.difference(outline, shapely.union_all(parts))
    d = RESIDUAL_OPENING_M / 2
    rest = shapely.buffer(shapely.buffer(rest, -d, join_style="mitre"), d, join_style="mitre")
    rest = shapely.intersection(rest, outline)  # the mitre re-growth must not leave the outline
    pieces = [p for p in shapely.get_parts(rest) if p.geom_type == "Polygon" and p.area >= RESIDUAL_MIN_AREA_M2]
    return shapely.MultiPolygon(pieces) if pieces else None


def _height_tags(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={tags[k]}" for k in HEIGHT_TAGS if k in tags) or "no height tags"


def building_solids(
    geoms_local: np.ndarray,
    tags: list[dict[str, str]],
    ids: list[str],
    *,
    level_height_m: float,
    max_height_m: float = DEFAULT_MAX_HEIGHT_M,
) -> BuildingSolids:
    """Resolve outline/part overlaps and compute base/top heights (≤ ``max_height_m``) for every solid."""
    geoms_local = np.asarray(geoms_local, dtype=object)
    is_part = np.array([_is_part(t) for t in tags], dtype=bool)
    outline_idx = np.flatnonzero(~is_part)
    part_idx = np.flatnonzero(is_part)

    # which outline does each part lie in (its interior point inside the outline)
    parts_of: dict[int, list[int]] = {}
    outline_of_part: dict[int, int] = {}
    if len(part_idx) and len(outline_idx):
        tree = shapely.STRtree(geoms_local[outline_idx])
        pts = shapely.point_on_surface(geoms_local[part_idx])
        p_hits, o_hits = tree.query(pts, predicate="within")
        for p, o in zip(part_idx[p_hits], outline_idx[o_hits]):
            parts_of.setdefault(int(o), []).append(int(p))
            # a part inside several (overlapping) outlines inherits from the smallest one
            prev = outline_of_part.get(int(p))
            if prev is None or shapely.area(geoms_local[o]) < shapely.area(geoms_local[prev]):
                outline_of_part[int(p)] = int(o)

    solid_geoms: list[shapely.Geometry] = []
    solid_tags: list[dict[str, str]] = []
    solid_ids: list[str] = []
    solid_src: list[int] = []  # input index the solid's tags come from
    replaced = trimmed = 0
    for i in range(len(geoms_local)):
        g = geoms_local[i]
        if not is_part[i] and i in parts_of:
            rest = _residual(g, [geoms_local[p] for p in parts_of[i]])
            if rest is None:
                replaced += 1
                continue
            trimmed += 1
            g = rest
            solid_ids.append(f"{ids[i]}-rest")
        else:
            solid_ids.append(ids[i])
        solid_geoms.append(g)
        solid_tags.append(tags[i])
        solid_src.append(i)

    polys, solid_of_poly = clean_polygons(np.asarray(solid_geoms, dtype=object), min_area_m2=MIN_PIECE_AREA_M2)
    n_solids = len(solid_geoms)
    area_per_solid = np.bincount(solid_of_poly, weights=shapely.area(polys), minlength=n_solids)

    # heights: tagged ones first, then parts inherit their outline's tagged top
    heights = {}
    for i, src in enumerate(solid_src):
        heights[src] = building_height(solid_tags[i], float(area_per_solid[i]), level_height_m, max_height_m)
    outline_heights = {
        o: building_height(tags[o], float(shapely.area(geoms_local[o])), level_height_m, max_height_m) for o in parts_of
    }
    base = np.empty(n_solids)
    top = np.empty(n_solids)
    sources: Counter[str] = Counter()
    clamped: list[dict[str, Any]] = []
    for i, src in enumerate(solid_src):
        h: BuildingHeight = heights[src]
        b, t, s = h.base_m, h.top_m, h.top_source
        from_tags = solid_tags[i]
        if s == "default" and src in outline_of_part:
            oh = outline_heights[outline_of_part[src]]
            if oh.top_source != "default" and oh.top_m > b:
                t, s, h, from_tags = oh.top_m, "inherited", oh, tags[outline_of_part[src]]
        base[i], top[i] = b, t
        sources[s] += 1
        if h.clamped_from_m is not None:
            clamped.append({"id": solid_ids[i], "height_m": round(h.clamped_from_m, 2), "clamped_to_m": float(t),
                            "tags": _height_tags(from_tags)})
            log.warning(
                "building %s: height %.0f m (%s) is above max_height_m = %.0f m; clamped to %.0f m",
                solid_ids[i], h.clamped_from_m, _height_tags(from_tags), max_height_m, t,
            )

    has_poly = np.bincount(solid_of_poly, minlength=n_solids) > 0
    dropped = [
        FeatureIssue("building", solid_ids[i], DEGENERATE,
                     f"no polygon piece of at least {MIN_PIECE_AREA_M2} m² (area {shapely.area(solid_geoms[i]):.4f} m²)")
        for i in np.flatnonzero(~has_poly)
    ]
    counts = {
        "building_outlines": int(len(outline_idx)),
        "building_parts": int(len(part_idx)),
        "outlines_replaced_by_parts": replaced,
        "outlines_trimmed_by_parts": trimmed,
        "building_solids": int(has_poly.sum()),
        **{f"heights_from_{k}": int(v) for k, v in sorted(sources.items())},
    }
    return BuildingSolids(
        polygons=polys,
        base_m=base[solid_of_poly],
        top_m=top[solid_of_poly],
        solid=solid_of_poly,
        solid_ids=solid_ids,
        counts=counts,
        dropped=dropped,
        clamped=clamped,
    )
