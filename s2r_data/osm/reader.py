"""Read an OSM extract (``.osm`` XML or ``.osm.pbf``) into lon/lat features per kind (I/O edge).

pyosmium assembles areas (closed ways and multipolygon relations, holes kept) and gives node
locations to ways; geometries come out as WKB and are decoded by shapely in bulk. Only objects
carrying one of :data:`~s2r_data.osm.classify.OSM_KEYS` reach Python.

Area assembly needs input sorted by type, then id. Overpass XML often is not ("Way IDs out of
order"): XML inputs are checked in one pass and, if unsorted, sorted into a temporary
``.osm.pbf`` (``osmium.MergeInputReader`` → ``osmium.WriteHandler``) which is read instead. A PBF
that turns out unsorted while reading is sorted the same way and read again.

Areas libosmium cannot assemble are not lost silently: a closed way whose ring is invalid
(self-intersecting, folded back) is rebuilt from its nodes with ``make_valid``
(:mod:`.repair`); what stays unusable (nodes or member ways missing from the extract, no polygon
left, collinear nodes) is listed in :attr:`OSMFeatures.dropped` with its id and reason. Only areas
that reach the query box are tracked (multipolygon relations libosmium could not assemble are
located by a second pass over their member ways, run only when there are such relations).
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
from .errors import OSMError, OSMFileCorruptError, OSMFileMissingError, OSMPathIsFolderError
from .repair import INCOMPLETE, INVALID, REPAIRED, FeatureIssue, polygon_from_closed_way

__all__ = [
    "FeatureSet",
    "OSMFeatures",
    "read_osm",
    "read_header_bbox_lonlat",
    "is_sorted",
    "sort_osm_file",
    "check_osm_path",
]

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
    # areas reaching the query box that libosmium could not assemble: rebuilt (reason "repaired",
    # their geometry is in ``kinds``) or dropped (reasons "incomplete", "invalid", "degenerate")
    repaired: list[FeatureIssue] = field(default_factory=list)
    dropped: list[FeatureIssue] = field(default_factory=list)

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


@dataclass
class _AreaBook:
    """Areas that should appear while reading, so that those libosmium never assembles (or
    assembles invalid) are noticed at the end."""

    closed_ways: dict[int, tuple[str, dict[str, str], list[tuple[float, float] | None]]] = field(default_factory=dict)
    open_building_ways: dict[int, list[tuple[float, float] | None]] = field(default_factory=dict)
    relations: dict[int, tuple[str, list[int]]] = field(default_factory=dict)  # id → (kind, member way ids)
    assembled: set[tuple[str, int]] = field(default_factory=set)  # ("w" | "r", id) of good areas
    failed: dict[tuple[str, int], str] = field(default_factory=dict)  # ("w" | "r", id) → reason


def _node_coords(nodes) -> list[tuple[float, float] | None]:
    return [(n.lon, n.lat) if n.location.valid() else None for n in nodes]


def _coords_bbox(coords: list[tuple[float, float] | None]) -> tuple[float, float, float, float] | None:
    xy = [c for c in coords if c is not None]
    if not xy:
        return None
    lons, lats = [c[0] for c in xy], [c[1] for c in xy]
    return min(lons), min(lats), max(lons), max(lats)


def _way_near_box(nodes, kind: str, q: tuple[float, float, float, float] | None) -> bool:
    """As :func:`_area_outside` for a way's nodes: for buildings the first located node decides
    (cheap: regional extracts hold millions), for other kinds the bbox of all located nodes."""
    if q is None:
        return True
    if kind == "building":
        s = BUILDING_SLACK_DEG
        for n in nodes:
            loc = n.location
            if loc.valid():
                return q[0] - s <= loc.lon <= q[2] + s and q[1] - s <= loc.lat <= q[3] + s
        return False
    return not _disjoint(_nodes_bbox(nodes), q)


def _area_kind_set(kinds: dict[str, FeatureSet], kind: str) -> FeatureSet:
    return kinds["building" if kind == "building" else f"{kind}_area"]


def _read_features(
    path: Path, bbox_lonlat: tuple[float, float, float, float] | None, extent: _Extent
) -> tuple[dict[str, FeatureSet], _AreaBook]:
    kinds = {k: FeatureSet() for k in _FEATURE_KINDS}
    book = _AreaBook()
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
            if kind is None:
                continue
            key = ("w" if obj.from_way() else "r", obj.orig_id())
            has_rings = obj.num_rings()[0] > 0  # an invalid area comes without rings
            if has_rings and bbox_lonlat is not None and _area_outside(obj, kind, bbox_lonlat):
                book.assembled.add(key)  # a good area, elsewhere
                continue
            try:
                geom = wkb_factory.create_multipolygon(obj)
            except osmium.InvalidLocationError:
                book.failed[key] = INCOMPLETE
                continue
            except RuntimeError:  # "invalid area": rings that cannot be assembled
                book.failed[key] = INVALID
                continue
            book.assembled.add(key)
            fs = _area_kind_set(kinds, kind)
            fs.ids.append(key[0] + str(key[1]))
        elif obj.is_way():
            tags = dict(obj.tags)
            area_kind = classify_area(tags)
            if area_kind is not None and _way_near_box(obj.nodes, area_kind, bbox_lonlat):
                coords = _node_coords(obj.nodes)
                # libosmium makes areas of ways whose ends are the same node or at the same place
                if obj.is_closed() or (coords[0] is not None and coords[0] == coords[-1]):
                    book.closed_ways[obj.id] = (area_kind, tags, coords)
                elif area_kind == "building":
                    book.open_building_ways[obj.id] = coords
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
        elif obj.is_relation():
            tags = dict(obj.tags)
            kind = classify_area(tags)
            if kind is not None and tags.get("type") in ("multipolygon", "boundary"):
                book.relations[obj.id] = (kind, [m.ref for m in obj.members if m.type == "w"])
            continue
        else:
            continue
        fs.tags.append(tags)
        fs.wkb.append(geom)
    return kinds, book


def _member_way_bboxes(path: Path, way_ids: set[int]) -> dict[int, tuple[float, float, float, float] | None]:
    """Bounding boxes (lon/lat) of the located nodes of the given ways (one pass over nodes and ways)."""
    if not way_ids:
        return {}
    fp = (
        osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.IdFilter(way_ids))
    )
    return {w.id: _coords_bbox(_node_coords(w.nodes)) for w in fp}


def _union_bbox(boxes) -> tuple[float, float, float, float] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _settle_areas(
    path: Path, kinds: dict[str, FeatureSet], book: _AreaBook, bbox_lonlat: tuple[float, float, float, float] | None
) -> tuple[list[FeatureIssue], list[FeatureIssue]]:
    """Rebuild closed ways without an assembled area, list what stays unusable: ``(repaired, dropped)``."""
    repaired: list[FeatureIssue] = []
    dropped: list[FeatureIssue] = []
    for wid, (kind, tags, coords) in book.closed_ways.items():
        if ("w", wid) in book.assembled:
            continue
        box = _coords_bbox(coords)
        geom, reason, detail = polygon_from_closed_way(coords)
        if geom is None:
            dropped.append(FeatureIssue(kind, f"w{wid}", reason, detail, box))
            continue
        fs = _area_kind_set(kinds, kind)
        fs.ids.append(f"w{wid}")
        fs.tags.append(tags)
        fs.wkb.append(shapely.to_wkb(geom))
        repaired.append(FeatureIssue(kind, f"w{wid}", REPAIRED, detail, box))
    members = {w for kind, ways in book.relations.values() if kind == "building" for w in ways}
    for wid, coords in book.open_building_ways.items():
        if wid in members:
            continue
        missing = sum(c is None for c in coords)
        reason, detail = (
            (INCOMPLETE, f"{missing} of {len(coords)} nodes missing from the extract (and the way is not closed)")
            if missing else (INVALID, "way is not closed (and no multipolygon member)")
        )
        dropped.append(FeatureIssue("building", f"w{wid}", reason, detail, _coords_bbox(coords)))
    lost = {rid: v for rid, v in book.relations.items() if ("r", rid) not in book.assembled}
    boxes = _member_way_bboxes(path, {w for _, ways in lost.values() for w in ways})
    for rid, (kind, ways) in lost.items():
        box = _union_bbox(boxes.get(w) for w in ways)
        if box is None or (bbox_lonlat is not None and _disjoint(box, bbox_lonlat)):
            continue  # no located member near the query box: not part of this area
        found = sum(w in boxes for w in ways)
        reason = book.failed.get(("r", rid), INCOMPLETE)
        if reason == INCOMPLETE:
            detail = f"multipolygon: {len(ways) - found} of {len(ways)} member ways missing from the extract"
            if found == len(ways):
                detail = "multipolygon: member ways have nodes missing from the extract"
        else:
            detail = "multipolygon: rings could not be assembled (open, crossing or overlapping member ways)"
        dropped.append(FeatureIssue(kind, f"r{rid}", reason, detail, box))
    return repaired, dropped


_OSM_SUFFIXES = (".osm", ".osm.pbf", ".pbf", ".osm.bz2", ".osm.gz", ".o5m")


def check_osm_path(path: str | Path, *, origin: str = "") -> Path:
    """``path`` if it is a file, else :class:`OSMPathIsFolderError` (listing the OSM files in the
    folder) or :class:`OSMFileMissingError`. ``origin`` says where the path came from (e.g.
    "`osm_source` of city 'x' in my-cities.yaml"; default: the path as given) and is named in the
    message with what to fix."""
    path = Path(path)
    where = f" ({origin})" if origin else ""
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.is_file() and p.name.lower().endswith(_OSM_SUFFIXES))
        hint = f"OSM files in it: {', '.join(found[:5])}{' …' if len(found) > 5 else ''}" if found else "it holds no OSM file"
        raise OSMPathIsFolderError(
            f"OSM path {path}{where} is a folder, not an OSM file; give the .osm or .osm.pbf file itself ({hint})"
        )
    if not path.is_file():
        raise OSMFileMissingError(
            f"OSM file {path}{where} does not exist; fix the path or download the extract there"
        )
    return path


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
    path = check_osm_path(path)
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
                kinds, book = _read_features(src, bbox_lonlat, extent := _Extent())
            except RuntimeError as e:
                if "out of order" not in str(e) or sorted_on_read:
                    raise
                src, sorted_on_read = sort_osm_file(path, sorted_path), True
                kinds, book = _read_features(src, bbox_lonlat, extent := _Extent())
            repaired, dropped = _settle_areas(src, kinds, book, bbox_lonlat)
            if not any(len(fs) for fs in kinds.values()) and not _has_any_object(src):
                raise OSMFileCorruptError(f"OSM file {path} contains no OSM objects; re-download or re-export it")
        except OSMError:
            raise
        except RuntimeError as e:
            raise OSMFileCorruptError(f"OSM file {path} cannot be parsed ({e}); re-download or re-export it") from e
    return OSMFeatures(
        kinds=kinds, header_bbox_lonlat=header_bbox, sorted_on_read=sorted_on_read, data_bbox_lonlat=extent.bbox(),
        repaired=repaired, dropped=dropped,
    )
