"""Area bookkeeping of the flat layers (roads, water, green) and the checks on it (pure functions).

Every flat layer is one union of clipped polygons (:mod:`.builder`), cleaned
(:func:`~s2r_data.osm.mesh.clean_polygons`) and triangulated
(:func:`~s2r_data.osm.mesh.flat_polygons`). :class:`FlatLayerArea` records the area after each
of these steps (square metres in ``local_m``); :func:`check_flat_layer` fails the build when the
mesh lost more than :data:`MIN_MESH_AREA_RATIO` of the union (a model without its roads must not
be written), and :func:`road_share_warning` flags a city whose roads cover an implausibly small
share of the clip polygon.

Road share of the clip polygon (city polygon + 200 m margin) in the registry's real extracts:
Liechtenstein 1.2 % (a mostly alpine, forested country: the lowest plausible share we have),
Paris 13e sample 5.7 % (its extract barely reaches into the margin), Helsinki centre 11 %; urban
street space is usually 10–30 % of the land. The Helsinki build that lost its roads (issue 17)
had 0.14 %. :data:`ROAD_SHARE_MIN` = 0.5 % sits a factor 2.4 below the lowest real extract and
3.6 above that failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import FlatLayerAreaError

__all__ = [
    "MIN_MESH_AREA_RATIO",
    "ROAD_SHARE_MIN",
    "FlatLayerArea",
    "check_flat_layer",
    "road_share_warning",
]

MIN_MESH_AREA_RATIO = 0.99  # mesh area / union area below this fails the build
ROAD_SHARE_MIN = 0.005  # road mesh area / clip polygon area below this is flagged (see module doc)


@dataclass(frozen=True)
class FlatLayerArea:
    """Areas (m², ``local_m``) of one flat layer at each build step, all inside the clip polygon."""

    layer: str
    union_area_m2: float  # the union of the layer's clipped polygons
    clean_area_m2: float  # after clean_polygons
    mesh_area_m2: float  # the triangles written to the model
    triangulation_fallbacks: int = 0

    @property
    def mesh_ratio(self) -> float:
        """Mesh area ÷ union area (1 for an empty layer)."""
        return self.mesh_area_m2 / self.union_area_m2 if self.union_area_m2 > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("union_area_m2", "clean_area_m2", "mesh_area_m2"):
            d[k] = round(d[k], 3)
        d["mesh_ratio"] = round(self.mesh_ratio, 6)
        return d


def check_flat_layer(area: FlatLayerArea, city: str, *, min_ratio: float = MIN_MESH_AREA_RATIO) -> None:
    """Raise :class:`FlatLayerAreaError` (naming the layer, the areas and the step that lost them)
    when the mesh covers less than ``min_ratio`` of the layer's union."""
    if area.mesh_ratio >= min_ratio:
        return
    step = "cleaning" if area.clean_area_m2 < min_ratio * area.union_area_m2 else "triangulation"
    raise FlatLayerAreaError(
        f"city {city!r}, layer {area.layer!r}: the mesh covers {area.mesh_area_m2:,.0f} m² of the "
        f"{area.union_area_m2:,.0f} m² union inside the clip polygon ({100 * area.mesh_ratio:.1f} %, at least "
        f"{100 * min_ratio:.0f} % required; after cleaning {area.clean_area_m2:,.0f} m², so the area was lost in "
        f"{step}). The model was not written: this is a builder bug, please report it with the OSM file"
    )


def road_share_warning(meta: Mapping[str, Any], *, min_share: float = ROAD_SHARE_MIN) -> str | None:
    """A warning when the road mesh covers less than ``min_share`` of the clip polygon, from a
    city model's ``meta`` (``None`` when plausible, or for models built before areas were kept)."""
    layers, clip_m2 = meta.get("flat_layers"), meta.get("clip_area_m2")
    if not layers or "road" not in layers or not clip_m2:
        return None
    road_m2 = float(layers["road"]["mesh_area_m2"])
    share = road_m2 / float(clip_m2)
    if share >= min_share:
        return None
    return (
        f"city {meta.get('city')!r}: roads cover {road_m2:,.0f} m², {100 * share:.2f} % of the "
        f"{float(clip_m2) / 1e6:.2f} km² clip polygon (below {100 * min_share:.1f} %, implausibly low even for a "
        "rural area): check the OSM extract covers the city (highway ways present) and the top-down preview"
    )
