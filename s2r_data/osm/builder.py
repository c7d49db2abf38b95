"""OSM extract + city → :class:`~s2r_data.citymodel.CityModel` (the orchestration of this package).

Pipeline: read features (:mod:`.reader`) → project to the city's ``local_m`` frame
(:class:`~s2r_data.frames.LocalFrame`, vectorised over all coordinates) → keep what touches the
city polygon buffered by ``margin_m`` → buildings: outline/part resolution and heights
(:mod:`.buildings`), prisms (:mod:`.mesh`) → roads, water, green: buffered lines and areas
clipped to the buffered polygon, one union per layer, cleaned and triangulated flat (the mesh
must keep ≥ 99 % of the union's area, else :class:`FlatLayerAreaError`; the areas are kept in
``meta["flat_layers"]``) → ground quad → :class:`CityModel`.

Buildings libosmium could not assemble are repaired where possible and otherwise listed with
their OSM id and reason in ``meta["dropped_buildings"]`` (:mod:`.repair`); tops above
``BuildConfig.max_height_m`` are clamped and listed in ``meta["clamped_heights"]``.

Buildings are kept whole (not cut at the clip polygon) when they intersect it; flat layers are
clipped. Heights of the flat layers (metres): ground 0, water 0.01, green 0.015, road 0.02.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import shapely

from ..checksums import file_sha256
from ..cities import CityConfig
from ..citymodel import CityModel, Mesh
from ..frames import LocalFrame
from .buildings import BuildingSolids, building_solids
from .classify import road_width_m, waterway_width_m
from .errors import NoBuildingsError, OSMFileMissingError, OutsideExtentError
from .heights import DEFAULT_MAX_HEIGHT_M
from .layer_areas import FlatLayerArea, check_flat_layer, road_share_warning
from .mesh import clean_polygons, extrude_polygons, flat_polygons, repair_polygonal
from .reader import OSMFeatures, check_osm_path, read_header_bbox_lonlat, read_osm
from .repair import INCOMPLETE, INVALID, REPAIRED, DEGENERATE, FeatureIssue

__all__ = [
    "BUILDER_VERSION",
    "ATTRIBUTION",
    "Z_GROUND_M",
    "Z_WATER_M",
    "Z_GREEN_M",
    "Z_ROAD_M",
    "Z_FLAT_M",
    "BuildConfig",
    "build_city_model",
    "build_or_load_city_model",
    "MODEL_FILENAME",
    "city_clip_polygons",
    "city_building_solids",
    "city_flat_layers",
    "flat_layer_mesh",
    "building_issue_counts",
]

log = logging.getLogger(__name__)

# 1.1: flat layers unioned (no coplanar overlaps); 1.2: flat-layer cleaning keeps the area of large
# unions (issue 17), invalid building ways repaired, heights clamped to max_height_m
BUILDER_VERSION = "s2r-osm-1.2"
ATTRIBUTION = "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)"
Z_GROUND_M, Z_WATER_M, Z_GREEN_M, Z_ROAD_M = 0.0, 0.01, 0.015, 0.02
Z_FLAT_M = {"road": Z_ROAD_M, "water": Z_WATER_M, "green": Z_GREEN_M}  # the flat layers, in build order
MODEL_FILENAME = "city_model.npz"
_BUFFER_QUAD_SEGS = 2  # quarter-circle segments of buffered line ends/joins
_BOUNDARY_SEGMENTIZE_DEG = 0.0005  # densify lon/lat boundary edges (~50 m) before projecting


@dataclass(frozen=True)
class BuildConfig:
    margin_m: float = 200.0  # the city polygon is buffered by this much before clipping
    level_height_m: float = 3.0
    max_height_m: float = DEFAULT_MAX_HEIGHT_M  # building tops above this are clamped (with a warning)

    def __post_init__(self) -> None:
        if not (0.0 <= self.margin_m <= 50_000.0):
            raise ValueError(f"margin_m={self.margin_m} must be in [0, 50000] metres")
        if not (1.0 <= self.level_height_m <= 10.0):
            raise ValueError(f"level_height_m={self.level_height_m} must be in [1, 10] metres")
        if not (2 * self.level_height_m <= self.max_height_m <= 2000.0):
            raise ValueError(
                f"max_height_m={self.max_height_m} must be in [2 × level_height_m, 2000] metres "
                f"(level_height_m={self.level_height_m})"
            )


def _city_origin(city: CityConfig, registry: str | Path | None) -> str:
    """Where the city's settings come from, for error messages ("city 'x' in my-cities.yaml")."""
    return f"city {city.name!r} in {registry}" if registry else f"city {city.name!r} (its city registry entry)"


def _resolve_osm_path(city: CityConfig, osm_path: Path | None, registry: str | Path | None = None) -> Path:
    """The OSM file to read; errors name what the user passed (``osm_path``, i.e. ``--osm``, or the
    city's ``osm_source`` in ``registry``)."""
    if osm_path is not None:
        return check_osm_path(osm_path, origin=f"given as the OSM path (--osm) for city {city.name!r}")
    try:
        path = city.local_osm_path()
    except FileNotFoundError as e:
        raise OSMFileMissingError(str(e)) from None
    return check_osm_path(path, origin=f"`osm_source` of {_city_origin(city, registry)}")


def _to_local(geoms_lonlat: np.ndarray, frame: LocalFrame) -> np.ndarray:
    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = frame.lonlat_to_local(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    if len(geoms_lonlat) == 0:
        return np.empty(0, dtype=object)
    return shapely.transform(geoms_lonlat, fwd)


def _valid(geoms: np.ndarray) -> np.ndarray:
    geoms = np.asarray(geoms, dtype=object)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = geoms[ok]
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def _clip(geoms: np.ndarray, clip: shapely.Geometry) -> np.ndarray:
    """Geometries cut to ``clip`` (a prepared polygon); those outside are dropped."""
    geoms = _valid(geoms)
    if len(geoms) == 0:
        return geoms
    geoms = geoms[shapely.intersects(clip, geoms)]
    inside = shapely.contains_properly(clip, geoms)
    out = geoms.copy()
    if (~inside).any():
        out[~inside] = shapely.intersection(geoms[~inside], clip)
    return out[~shapely.is_empty(out)]


def _buffered_lines(lines_local: np.ndarray, widths_m: list[float]) -> np.ndarray:
    if len(lines_local) == 0:
        return np.empty(0, dtype=object)
    return shapely.buffer(lines_local, np.asarray(widths_m) / 2.0, quad_segs=_BUFFER_QUAD_SEGS)


def _query_bbox_lonlat(city: CityConfig, margin_m: float) -> tuple[float, float, float, float]:
    """City bbox grown by the margin (+10 % and 100 m for road/river half-widths), in degrees."""
    lon0, lat0, lon1, lat1 = city.polygon.bounds
    grow_m = margin_m * 1.1 + 100.0
    dlat = grow_m / 110_000.0
    dlon = grow_m / (110_000.0 * max(np.cos(np.radians(max(abs(lat0), abs(lat1)))), 0.05))
    return (lon0 - dlon, lat0 - dlat, lon1 + dlon, lat1 + dlat)


def _union_layer(geoms: np.ndarray) -> np.ndarray:
    """The union of one flat layer's polygons, as a one-element array (empty input stays empty)."""
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return geoms
    return np.array([shapely.union_all(repair_polygonal(geoms))], dtype=object)


def city_flat_layers(
    features: OSMFeatures, clip: shapely.Geometry, frame: LocalFrame
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The clipped polygons (``local_m``) of each flat layer (``road``, ``water``, ``green``: lines
    buffered to their width, areas as they are; water cut out of green), and how many lines and
    areas each has (``road_lines``, ``road_areas``, ``water_lines``, ``water_areas``, ``green_areas``)."""

    def lines_and_areas(line_kind: str, area_kind: str, width_fn) -> tuple[np.ndarray, int, int]:
        lfs, afs = features[line_kind], features[area_kind]
        lines = _to_local(lfs.geometries_lonlat(), frame)
        ok = ~(shapely.is_missing(lines) | shapely.is_empty(lines)) if len(lines) else np.zeros(0, bool)
        widths = [width_fn(t) for t, k in zip(lfs.tags, ok) if k]
        buffered = _buffered_lines(lines[ok], widths)
        areas = _to_local(afs.geometries_lonlat(), frame)
        clipped_lines = _clip(buffered, clip)
        clipped_areas = _clip(areas, clip)
        return np.concatenate([clipped_lines, clipped_areas]), len(clipped_lines), len(clipped_areas)

    roads, n_road_lines, n_road_areas = lines_and_areas("road_line", "road_area", road_width_m)
    water, n_water_lines, n_water_areas = lines_and_areas("water_line", "water_area", waterway_width_m)
    green = _clip(_to_local(features["green_area"].geometries_lonlat(), frame), clip)
    n_green = len(green)
    if len(water) and len(green):
        water_union = shapely.union_all(water)
        shapely.prepare(water_union)
        hit = shapely.intersects(water_union, green)
        if hit.any():
            green = green.copy()
            green[hit] = shapely.difference(green[hit], water_union)
    counts = {"road_lines": n_road_lines, "road_areas": n_road_areas, "water_lines": n_water_lines,
              "water_areas": n_water_areas, "green_areas": n_green}
    return {"road": roads, "water": water, "green": green}, counts


def flat_layer_mesh(name: str, geoms: np.ndarray) -> tuple[Mesh, FlatLayerArea]:
    """One flat layer's polygons → its mesh at the layer's height (:data:`Z_FLAT_M`) and its areas.

    One union per layer: overlapping pieces (a footway buffer over a street's edge, a park over a
    lawn) would give coplanar duplicate triangles, which shade black in lit renders (each hit's
    shadow ray hits its coplanar twin) and double the triangle count.
    """
    union = _union_layer(geoms)
    polys, _ = clean_polygons(union)
    mesh, fallbacks = flat_polygons(polys, Z_FLAT_M[name])
    area = FlatLayerArea(
        name, float(shapely.area(union).sum()), float(shapely.area(polys).sum()), mesh.area_xy_m2(), fallbacks
    )
    return mesh, area


def _ground_quad(clip_bounds: tuple[float, float, float, float]) -> Mesh:
    x0, y0, x1, y1 = clip_bounds
    v = np.array([[x0, y0, Z_GROUND_M], [x1, y0, Z_GROUND_M], [x1, y1, Z_GROUND_M], [x0, y1, Z_GROUND_M]])
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))


def _extent_lonlat(features: OSMFeatures) -> shapely.Geometry | None:
    box = features.header_bbox_lonlat or features.data_bbox_lonlat
    return None if box is None else shapely.box(*box)


def _outside_extent_error(
    city: CityConfig, path: Path, extent: shapely.Geometry | None, registry: str | Path | None = None
) -> OutsideExtentError:
    ext = "unknown (no geometry)" if extent is None else "lon/lat " + ", ".join(f"{v:.5f}" for v in extent.bounds)
    return OutsideExtentError(
        f"{_city_origin(city, registry)} (boundary lon/lat {', '.join(f'{v:.5f}' for v in city.polygon.bounds)}) "
        f"lies outside the extent of OSM file {path} ({ext}); use an extract that covers the city or fix its "
        "boundary_lonlat (order is lon, lat)"
    )


def city_clip_polygons(
    city: CityConfig, margin_m: float, frame: LocalFrame | None = None
) -> tuple[shapely.Geometry, shapely.Geometry]:
    """The city boundary in ``local_m`` (edges densified before projecting) and it buffered by
    ``margin_m`` (the clip polygon), both prepared."""
    dense = shapely.segmentize(city.polygon, _BOUNDARY_SEGMENTIZE_DEG)
    boundary_local = _to_local(np.array([dense], dtype=object), frame or city.frame)[0]
    clip = shapely.buffer(boundary_local, margin_m) if margin_m > 0 else boundary_local
    shapely.prepare(boundary_local)
    shapely.prepare(clip)
    return boundary_local, clip


def city_building_solids(
    features: OSMFeatures, city: CityConfig, boundary_local: shapely.Geometry, clip: shapely.Geometry,
    level_height_m: float, frame: LocalFrame | None = None, *, max_height_m: float = DEFAULT_MAX_HEIGHT_M,
) -> tuple[BuildingSolids, int]:
    """Building solids (``local_m``) of every building area intersecting ``clip``, and how many
    building areas intersect the city boundary itself.

    The solids also list the buildings reaching ``clip`` that were repaired (by the reader, or
    here with ``make_valid``) or dropped (by the reader: incomplete, invalid, degenerate; here:
    undecodable geometry; when cleaning: degenerate)."""
    frame = frame or city.frame
    bfs = features["building"]
    geoms = _to_local(bfs.geometries_lonlat(), frame)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms)) if len(geoms) else np.zeros(0, bool)
    dropped = [FeatureIssue("building", i, INVALID, "geometry could not be decoded") for i, k in zip(bfs.ids, ok) if not k]
    geoms = geoms[ok] if len(geoms) else geoms
    tags = [t for t, k in zip(bfs.tags, ok) if k]
    ids = [i for i, k in zip(bfs.ids, ok) if k]
    invalid = np.flatnonzero(~shapely.is_valid(geoms))
    invalid_why = {ids[j]: shapely.is_valid_reason(geoms[j]) for j in invalid}
    if len(invalid):
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    n_in_city = int(shapely.intersects(boundary_local, geoms).sum()) if len(geoms) else 0
    sel = shapely.intersects(clip, geoms) if len(geoms) else np.zeros(0, bool)
    sel_ids = [i for i, k in zip(ids, sel) if k]
    solids = building_solids(
        geoms[sel], [t for t, k in zip(tags, sel) if k], sel_ids,
        level_height_m=level_height_m, max_height_m=max_height_m,
    )
    kept = set(sel_ids)
    by_reader = {r.osm_id: r for r in features.repaired if r.kind == "building"}
    solids.repaired = [by_reader[i] for i in sel_ids if i in by_reader] + [
        FeatureIssue("building", i, REPAIRED, f"{invalid_why[i]} (local_m): repaired with make_valid")
        for i in sel_ids if i in invalid_why and i not in by_reader
    ]
    reader_dropped = [d for d in features.dropped if d.kind == "building"]
    near = _boxes_reach(clip, [d.bbox_lonlat for d in reader_dropped], frame)
    solids.dropped = (
        [d for d, hit in zip(reader_dropped, near) if hit and d.osm_id not in kept] + dropped + solids.dropped
    )
    return solids, n_in_city


def _boxes_reach(clip: shapely.Geometry, boxes_lonlat: list, frame: LocalFrame) -> np.ndarray:
    """Which lon/lat boxes (``None``: unknown, counts as reaching) intersect ``clip`` (``local_m``)."""
    known = np.array([b is not None for b in boxes_lonlat], dtype=bool)
    out = ~known
    if known.any():
        b = np.array([b for b in boxes_lonlat if b is not None], dtype=np.float64)
        corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)  # (n, 4, 2)
        boxes_local = shapely.envelope(_to_local(shapely.multipoints(corners), frame))  # a point for a 1-node box
        out[known] = shapely.intersects(clip, boxes_local)
    return out


def building_issue_counts(solids: BuildingSolids) -> dict[str, int]:
    """Counts of dropped buildings by reason, repaired buildings and clamped heights."""
    reasons = [d.reason for d in solids.dropped]
    return {
        "buildings_dropped": len(reasons),
        **{f"buildings_dropped_{r}": reasons.count(r) for r in (INCOMPLETE, INVALID, DEGENERATE)},
        "buildings_repaired": len(solids.repaired),
        "building_heights_clamped": len(solids.clamped),
    }


def cache_key(city: CityConfig, source_sha256: str, config: BuildConfig) -> str:
    """What a cached model must match to be reused: input bytes, builder version, city, config."""
    doc = {
        "source_sha256": source_sha256,
        "builder_version": BUILDER_VERSION,
        "boundary_lonlat": city.boundary_lonlat,
        "reference_lonlat": city.reference_lonlat,
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _build(
    city: CityConfig, osm_path: Path, source_sha256: str, config: BuildConfig, registry: str | Path | None = None
) -> CityModel:
    t0 = time.perf_counter()
    header_bbox = read_header_bbox_lonlat(osm_path)
    if header_bbox is not None and not shapely.intersects(shapely.box(*header_bbox), city.polygon):
        raise _outside_extent_error(city, osm_path, shapely.box(*header_bbox), registry)
    features = read_osm(osm_path, bbox_lonlat=_query_bbox_lonlat(city, config.margin_m))
    t_read = time.perf_counter()

    frame = city.frame
    boundary_local, clip = city_clip_polygons(city, config.margin_m, frame)

    # ---- buildings ----------------------------------------------------------------------
    solids, n_in_city = city_building_solids(
        features, city, boundary_local, clip, config.level_height_m, frame, max_height_m=config.max_height_m
    )
    if n_in_city == 0:
        extent = _extent_lonlat(features)
        if extent is None or not shapely.intersects(extent, city.polygon):
            raise _outside_extent_error(city, osm_path, extent, registry)
        raise NoBuildingsError(
            f"no building of OSM file {osm_path} intersects the boundary of {_city_origin(city, registry)} "
            f"({len(features['building'])} building areas read around it); check its "
            "boundary_lonlat or use an extract with buildings there"
        )
    ext = extrude_polygons(solids.polygons, solids.base_m, solids.top_m)
    footprints = solids.footprint_union()
    t_build = time.perf_counter()

    # ---- flat layers --------------------------------------------------------------------
    pieces, flat_counts = city_flat_layers(features, clip, frame)
    fallbacks = ext.earcut_fallbacks
    meshes: dict[str, Mesh] = {"wall": ext.walls, "roof": ext.roofs, "ground": _ground_quad(clip.bounds)}
    layer_areas: dict[str, FlatLayerArea] = {}
    for name, geoms in pieces.items():
        meshes[name], layer_areas[name] = flat_layer_mesh(name, geoms)
        fallbacks += layer_areas[name].triangulation_fallbacks
        check_flat_layer(layer_areas[name], city.name)  # fail loudly rather than write a model without roads
    t_flat = time.perf_counter()

    stat = osm_path.stat()
    with warnings.catch_warnings():  # pyproj warns that PROJ strings are lossy; this one is complete
        warnings.simplefilter("ignore", UserWarning)
        proj = frame.proj_string
    meta = {
        "city": city.name,
        "reference_lonlat": list(city.reference_lonlat),
        "boundary_lonlat": [list(p) for p in city.boundary_lonlat],
        "proj": proj,
        "frame": "local_m (x east, y north, z up, metres)",
        "source": {
            "file": osm_path.name,
            "sha256": source_sha256,
            "bytes": stat.st_size,
            "sorted_on_read": features.sorted_on_read,
            "header_bbox_lonlat": list(features.header_bbox_lonlat) if features.header_bbox_lonlat else None,
        },
        "counts": {
            "buildings": solids.counts["building_solids"],
            "parts": solids.counts["building_parts"],
            "roads": flat_counts["road_lines"] + flat_counts["road_areas"],
            "water": flat_counts["water_lines"] + flat_counts["water_areas"],
            "green": flat_counts["green_areas"],
            "buildings_in_city_polygon": n_in_city,
            **solids.counts,
            **{k: v for k, v in flat_counts.items() if k != "green_areas"},
            "triangulation_fallbacks": fallbacks,
            **building_issue_counts(solids),
        },
        "clip_area_m2": round(float(clip.area), 3),
        "flat_layers": {name: a.to_dict() for name, a in layer_areas.items()},
        "dropped_buildings": [d.to_dict() for d in solids.dropped],
        "repaired_buildings": [r.to_dict() for r in solids.repaired],
        "clamped_heights": solids.clamped,
        "z_m": {"ground": Z_GROUND_M, "water": Z_WATER_M, "green": Z_GREEN_M, "road": Z_ROAD_M},
        "clip_bounds_local_m": list(clip.bounds),
        "attribution": ATTRIBUTION,
        "builder_version": BUILDER_VERSION,
        "build_config": asdict(config),
        "cache_key": cache_key(city, source_sha256, config),
        "build_time_s": {
            "read": round(t_read - t0, 3),
            "buildings": round(t_build - t_read, 3),
            "flat_layers": round(t_flat - t_build, 3),
            "total": round(t_flat - t0, 3),
        },
    }
    meta["warnings"] = [w for w in (road_share_warning(meta),) if w]
    for w in meta["warnings"]:
        log.warning("%s", w)
    log.info("built city model %s in %.2f s: %s", city.name, t_flat - t0, meta["counts"])
    return CityModel(meshes=meshes, footprints_wkb=shapely.to_wkb(footprints), meta=meta)


def build_city_model(
    city: CityConfig,
    *,
    margin_m: float = 200.0,
    level_height_m: float = 3.0,
    max_height_m: float = DEFAULT_MAX_HEIGHT_M,
    osm_path: str | Path | None = None,
    registry: str | Path | None = None,
) -> CityModel:
    """Build the city's meshes from its OSM extract (``osm_path`` overrides ``city.osm_source``;
    ``registry``, the file the city was read from, is only named in error messages).

    Raises (all :class:`~s2r_data.osm.errors.OSMError`): ``OSMFileMissingError``,
    ``OSMPathIsFolderError``, ``OSMFileCorruptError``, ``OutsideExtentError``,
    ``NoBuildingsError``, ``FlatLayerAreaError``.
    """
    config = BuildConfig(margin_m=margin_m, level_height_m=level_height_m, max_height_m=max_height_m)
    path = _resolve_osm_path(city, None if osm_path is None else Path(osm_path), registry)
    return _build(city, path, file_sha256(path), config, registry)


def _cached_key(model_path: Path) -> str | None:
    try:
        with np.load(model_path, allow_pickle=False) as z:
            return json.loads(z["meta_json"].tobytes().decode()).get("cache_key")
    except Exception:  # unreadable/partial/old file: rebuild
        return None


def build_or_load_city_model(
    city: CityConfig,
    out_dir: str | Path,
    *,
    force: bool = False,
    margin_m: float = 200.0,
    level_height_m: float = 3.0,
    max_height_m: float = DEFAULT_MAX_HEIGHT_M,
    osm_path: str | Path | None = None,
    registry: str | Path | None = None,
) -> Path:
    """``out_dir/city_model.npz`` for ``city``: reused if built from the same OSM bytes by the same
    builder version with the same city and settings, else (or with ``force``) rebuilt and written
    atomically (with ``summary.json``). Returns the model path."""
    config = BuildConfig(margin_m=margin_m, level_height_m=level_height_m, max_height_m=max_height_m)
    path = _resolve_osm_path(city, None if osm_path is None else Path(osm_path), registry)
    sha = file_sha256(path)
    model_path = Path(out_dir) / MODEL_FILENAME
    if not force and model_path.is_file() and _cached_key(model_path) == cache_key(city, sha, config):
        log.info("reusing %s (same source, builder and settings)", model_path)
        return model_path
    model = _build(city, path, sha, config, registry)
    return model.save(model_path)
