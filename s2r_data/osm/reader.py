"""Read an OSM extract (``.osm`` XML or ``.osm.pbf``) into lon/lat features per kind (I/O edge).

pyosmium assembles areas (closed ways and multipolygon relations, holes kept) and gives node
locations to ways; geometries come out as WKB and are decoded by shapely in bulk. Only objects
carrying one of :data:`~s2r_data.osm.classify.OSM_KEYS` reach Python.

Area assembly needs input sorted by type, then id. Overpass XML often is not ("Way IDs out of
order"): XML inputs are checked in one pass and, if unsorted, sorted into a temporary
``.osm.pbf`` (``osmium.MergeInputReader`` → ``osmium.WriteHandler``) which is read instead. A PBF
that turns out unsorted while reading is sorted the same way and read again.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import osmium
import shapely

from .classify import OSM_KEYS, classify_area, classify_line
from .errors import OSMError, OSMFileCorruptError, OSMFileMissingError

__all__ = ["FeatureSet", "OSMFeatures", "read_osm", "read_header_bbox_lonlat", "is_sorted", "sort_osm_file"]

_FEATURE_KINDS = ("building", "road_area", "road_line", "water_area", "water_line", "green_area")


@dataclass
class FeatureSet:
    """Features of one kind: ids (``w123`` / ``r45``), tags and lon/lat geometries (shapely)."""

    ids: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    wkb: list[bytes | str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def geometries_lonlat(self) -> np.ndarray:
        if not self.wkb:
            return np.empty(0, dtype=object)
        return shapely.from_wkb(np.asarray(self.wkb, dtype=object), on_invalid="ignore")


@dataclass
class OSMFeatures:
    kinds: dict[str, FeatureSet]
    header_bbox_lonlat: tuple[float, float, float, float] | None  # (min lon, min lat, max lon, max lat)
    sorted_on_read: bool  # True when the input had to be sorted first
    # bbox of the first node of every classified object, read or skipped (None if there were none)
    data_bbox_lonlat: tuple[float, float, float, float] | None = None

    def __getitem__(self, kind: str) -> FeatureSet:
        return self.kinds[kind]


def _is_xml(path: Path) -> bool:
    name = path.name.lower()
    return not name.endswith((".pbf", ".o5m", ".o5c"))


def read_header_bbox_lonlat(path: Path) -> tuple[float, float, float, float] | None:
    """The extract's declared bounds (PBF header bbox / XML ``<bounds>``), or ``None``."""
    try:
        reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
        try:
            box = reader.header().box()
        finally:
            reader.close()
    except RuntimeError as e:
        raise OSMFileCorruptError(f"OSM file {path} cannot be parsed ({e}); re-download or re-export it") from e
    if not box.valid():
        return None
    return (box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat)


class _OrderCheck(osmium.SimpleHandler):
    def __init__(self) -> None:
        super().__init__()
        self.last = (-1, -(2**63))
        self.sorted = True
        self.count = 0

    def _see(self, kind: int, osm_id: int) -> None:
        self.count += 1
        key = (kind, osm_id)
        if key <= self.last:
            self.sorted = False
        self.last = key

    def node(self, o) -> None:
        self._see(0, o.id)

    def way(self, o) -> None:
        self._see(1, o.id)

    def relation(self, o) -> None:
        self._see(2, o.id)


def is_sorted(path: Path) -> bool:
    """True if objects come as nodes, ways, relations, each by increasing id (one full pass)."""
    h = _OrderCheck()
    try:
        h.apply_file(str(path))
    except RuntimeError as e:
        raise OSMFileCorruptError(f"OSM file {path} cannot be parsed ({e}); re-download or re-export it") from e
    return h.sorted


def sort_osm_file(path: Path, out_pbf: Path) -> Path:
    """Write ``path`` sorted by type then id (duplicates dropped) to ``out_pbf``."""
    merger = osmium.MergeInputReader()
    try:
        merger.add_file(str(path))
        writer = osmium.WriteHandler(str(out_pbf))
        try:
            merger.apply(writer, simplify=True)
        finally:
            writer.close()
    except RuntimeError as e:
        raise OSMFileCorruptError(f"OSM file {path} cannot be parsed ({e}); re-download or re-export it") from e
    return out_pbf


def _line_wkb(way, wkb_factory) -> bytes | str | None:
    try:
        return wkb_factory.create_linestring(way)
    except (osmium.InvalidLocationError, RuntimeError):
        # nodes outside the extract (clipped ways): keep the part we have
        coords = [(n.lon, n.lat) for n in way.nodes if n.location.valid()]
        line = shapely.LineString(coords) if len(coords) >= 2 else None
        if line is None or line.length == 0:
            return None
        return shapely.to_wkb(line)


BUILDING_SLACK_DEG = 0.02  # a building intersecting the query box has its first node within ~2 km of it


def _nodes_bbox(nodes) -> tuple[float, float, float, float] | None:
    lons, lats = [], []
    for n in nodes:
        loc = n.location
        if loc.valid():
            lons.append(loc.lon)
            lats.append(loc.lat)
    if not lons:
        return None
    return min(lons), min(lats), max(lons), max(lats)


def _disjoint(b: tuple[float, float, float, float] | None, q: tuple[float, float, float, float]) -> bool:
    return b is None or b[2] < q[0] or b[0] > q[2] or b[3] < q[1] or b[1] > q[3]


def _area_outside(area, kind: str, q: tuple[float, float, float, float]) -> bool:
    if kind == "building":  # many and small: the first node decides (cheap)
        for ring in area.outer_rings():
            for n in ring:
                loc = n.location
                return not (
                    loc.valid()
                    and q[0] - BUILDING_SLACK_DEG <= loc.lon <= q[2] + BUILDING_SLACK_DEG
                    and q[1] - BUILDING_SLACK_DEG <= loc.lat <= q[3] + BUILDING_SLACK_DEG
                )
        return True
    boxes = [b for b in (_nodes_bbox(ring) for ring in area.outer_rings()) if b is not None]
    if not boxes:
        return True
    return _disjoint((min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                      max(b[3] for b in boxes)), q)


class _Extent:
    """Running lon/lat bounding box of probe points (first node of each candidate object)."""

    def __init__(self) -> None:
        self.box = [math.inf, math.inf, -math.inf, -math.inf]

    def add_first_node(self, nodes) -> None:
        for n in nodes:
            loc = n.location
            if loc.valid():
                b = self.box
                lon, lat = loc.lon, loc.lat
                b[0], b[1], b[2], b[3] = min(b[0], lon), min(b[1], lat), max(b[2], lon), max(b[3], lat)
                return

    def bbox(self) -> tuple[float, float, float, float] | None:
        return tuple(self.box) if math.isfinite(self.box[0]) else None  # type: ignore[return-value]


def _read_features(
    path: Path, bbox_lonlat: tuple[float, float, float, float] | None, extent: _Extent
) -> dict[str, FeatureSet]:
    kinds = {k: FeatureSet() for k in _FEATURE_KINDS}
    wkb_factory = osmium.geom.WKBFactory()
    key_filter = osmium.filter.KeyFilter(*OSM_KEYS)
    processor = osmium.FileProcessor(str(path)).with_areas(osmium.filter.KeyFilter(*OSM_KEYS)).with_filter(key_filter)
    for obj in processor:
        if obj.is_area():
            tags = dict(obj.tags)
            kind = classify_area(tags)
            if kind is not None:
                for ring in obj.outer_rings():
                    extent.add_first_node(ring)
                    break
            if kind is None or (bbox_lonlat is not None and _area_outside(obj, kind, bbox_lonlat)):
                continue
            try:
                geom = wkb_factory.create_multipolygon(obj)
            except (osmium.InvalidLocationError, RuntimeError):
                continue
            fs = kinds["building" if kind == "building" else f"{kind}_area"]
            fs.ids.append(("w" if obj.from_way() else "r") + str(obj.orig_id()))
        elif obj.is_way():
            tags = dict(obj.tags)
            kind = classify_line(tags)
            if kind is not None:
                extent.add_first_node(obj.nodes)
            if kind is None or (bbox_lonlat is not None and _disjoint(_nodes_bbox(obj.nodes), bbox_lonlat)):
                continue
            geom = _line_wkb(obj, wkb_factory)
            if geom is None:
                continue
            fs = kinds[f"{kind}_line"]
            fs.ids.append(f"w{obj.id}")
        else:
            continue
        fs.tags.append(tags)
        fs.wkb.append(geom)
    return kinds


def _has_any_object(path: Path) -> bool:
    for _ in osmium.FileProcessor(str(path)):
        return True
    return False


def read_osm(path: str | Path, bbox_lonlat: tuple[float, float, float, float] | None = None) -> OSMFeatures:
    """Read buildings, roads, water and green features (lon/lat) from an OSM file.

    With ``bbox_lonlat`` (min lon, min lat, max lon, max lat), features whose nodes all lie
    outside it are skipped early (for buildings: whose first node lies more than
    :data:`BUILDING_SLACK_DEG` outside it), so a city can be built from a regional extract
    without holding the whole region's geometry. Without it, everything is read.

    Raises :class:`OSMFileMissingError` or :class:`OSMFileCorruptError` (unparseable, or no OSM
    objects at all).
    """
    path = Path(path)
    if not path.is_file():
        raise OSMFileMissingError(
            f"OSM file {path} does not exist; check `osm_source` in data/cities.yaml or download the extract there"
        )
    if path.stat().st_size == 0:
        raise OSMFileCorruptError(f"OSM file {path} is empty (0 bytes); re-download or re-export it")
    header_bbox = read_header_bbox_lonlat(path)
    with tempfile.TemporaryDirectory(prefix="s2r-osm-sort-") as tmp:
        sorted_path = Path(tmp) / "sorted.osm.pbf"
        src, sorted_on_read = path, False
        if _is_xml(path) and not is_sorted(path):
            src, sorted_on_read = sort_osm_file(path, sorted_path), True
        try:
            try:
                kinds = _read_features(src, bbox_lonlat, extent := _Extent())
            except RuntimeError as e:
                if "out of order" not in str(e) or sorted_on_read:
                    raise
                src, sorted_on_read = sort_osm_file(path, sorted_path), True
                kinds = _read_features(src, bbox_lonlat, extent := _Extent())
            if not any(len(fs) for fs in kinds.values()) and not _has_any_object(src):
                raise OSMFileCorruptError(f"OSM file {path} contains no OSM objects; re-download or re-export it")
        except OSMError:
            raise
        except RuntimeError as e:
            raise OSMFileCorruptError(f"OSM file {path} cannot be parsed ({e}); re-download or re-export it") from e
    return OSMFeatures(
        kinds=kinds, header_bbox_lonlat=header_bbox, sorted_on_read=sorted_on_read, data_bbox_lonlat=extent.bbox()
    )
