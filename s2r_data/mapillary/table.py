"""The harvest table: explicit Parquet schema, atomic writes, merges of per-tile parts.

One row per discovered panorama id (``image_id`` unique), whatever happened to it (``status`` +
``reason``). Per-tile parts ``tiles/<z>_<x>_<y>.parquet`` let a flow harvest one tile per task;
a tile still in progress has its finished rows in ``tiles/<z>_<x>_<y>.progress.jsonl``
(:mod:`.progress`). :func:`merge_harvest_tables` folds both into ``harvest.parquet``. Listings skip
temp files of interrupted writes. No URL is ever stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path, is_temp_name
from .progress import JOURNAL_SUFFIX, read_journal
from .records import STATUSES
from .tempfiles import harvest_session

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "HARVEST_TABLE",
    "TILES_DIR",
    "tile_part_path",
    "tile_part_paths",
    "tile_rows_on_disk",
    "rows_to_table",
    "write_table",
    "read_table",
    "table_rows",
    "merge_rows",
    "merge_harvest_tables",
]

SCHEMA_VERSION = "1"
HARVEST_TABLE = "harvest.parquet"
TILES_DIR = "tiles"

_TS = pa.timestamp("ms", tz="UTC")
_FIELDS = [
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("tile", pa.string()),  # "14/x/y"
    pa.field("lon", pa.float64()),  # computed_geometry, else geometry, else the tile point
    pa.field("lat", pa.float64()),
    pa.field("position_source", pa.string()),  # computed | original | tile
    pa.field("computed_rotation", pa.list_(pa.float64(), 3)),  # angle-axis, world(ENU)→camera
    pa.field("computed_compass_angle", pa.float64()),
    pa.field("compass_angle", pa.float64()),
    pa.field("computed_altitude", pa.float64()),
    pa.field("altitude", pa.float64()),
    pa.field("captured_at", _TS),
    pa.field("sequence_id", pa.string()),
    pa.field("camera_type", pa.string()),
    pa.field("width", pa.int32()),  # original image size per Graph
    pa.field("height", pa.int32()),
    pa.field("exif_orientation", pa.int16()),
    pa.field("is_pano", pa.bool_()),
    pa.field("atomic_scale", pa.float64()),
    pa.field("quality_score", pa.float64()),
    pa.field("merge_cc", pa.float64()),
    pa.field("creator_id", pa.string()),
    pa.field("creator_username", pa.string()),
    pa.field("make", pa.string()),
    pa.field("model", pa.string()),
    pa.field("pose_confidence", pa.string()),  # sfm | low | compass (s2r_data.poses)
    pa.field("status", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("image_path", pa.string()),  # relative to the harvest dir: images/<id>.jpg
    pa.field("image_sha256", pa.string()),
    pa.field("image_width", pa.int32()),  # downloaded JPEG
    pa.field("image_height", pa.int32()),
    pa.field("image_size", pa.string()),  # "2048" | "original"
    pa.field("harvested_at", _TS, nullable=False),
]
SCHEMA = pa.schema(_FIELDS, metadata={"schema_version": SCHEMA_VERSION, "producer": "s2r_data.mapillary"})
_BUILD_SCHEMA = pa.schema([f if f.name != "status" else pa.field("status", pa.string(), nullable=False) for f in _FIELDS])
# On disk ``computed_rotation`` is list<double>: pyarrow 25 writes a nullable fixed_size_list but
# cannot read it back once it holds a null ("ArrowInvalid: Expected all lists to be of size=3").
# read_table() restores fixed_size_list<double>[3]; plain pq.read_table() gets list<double>.
_DISK_SCHEMA = pa.schema(
    [f if f.name != "computed_rotation" else pa.field("computed_rotation", pa.list_(pa.float64())) for f in _FIELDS],
    metadata=SCHEMA.metadata,
)


def tile_part_path(out_dir: str | Path, tile: str) -> Path:
    return Path(out_dir) / TILES_DIR / (tile.replace("/", "_") + ".parquet")


def tile_part_paths(out_dir: str | Path, suffix: str = ".parquet") -> list[Path]:
    """The finished files ``tiles/*<suffix>`` (sorted), never the temp file of a write in progress
    or of a killed one (``.14_x_y.parquet.<hex>.partial.parquet``)."""
    d = Path(out_dir) / TILES_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(suffix) and not is_temp_name(p.name) and p.is_file())


def tile_rows_on_disk(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every tile part, then of every progress journal (tiles still in progress)."""
    rows: list[dict[str, Any]] = []
    for part in tile_part_paths(out_dir):
        rows = merge_rows(rows, table_rows(read_table(part)))
    for journal in tile_part_paths(out_dir, JOURNAL_SUFFIX):
        rows = merge_rows(rows, read_journal(journal))
    return rows


def rows_to_table(rows: Sequence[Mapping[str, Any]], extra_metadata: Mapping[str, str] | None = None) -> pa.Table:
    """Rows → table with :data:`SCHEMA`, sorted by (tile, captured_at, image_id)."""
    bad = {r.get("status") for r in rows} - set(STATUSES)
    if bad:
        raise ValueError(f"unknown status values {sorted(map(str, bad))}; allowed {STATUSES}")
    t = pa.Table.from_pylist([dict(r) for r in rows], schema=_BUILD_SCHEMA)
    if t.num_rows:
        # sort before dictionary-encoding (sort_by rejects dictionary columns)
        t = t.sort_by([("tile", "ascending"), ("captured_at", "ascending"), ("image_id", "ascending")])
    t = t.cast(SCHEMA)
    md = dict(SCHEMA.metadata)
    md.update({k.encode(): str(v).encode() for k, v in (extra_metadata or {}).items()})
    return t.replace_schema_metadata(md)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Atomic write (temp file + rename), zstd. ``computed_rotation`` goes to disk as list<double>
    (see ``_DISK_SCHEMA``); :func:`read_table` gives back :data:`SCHEMA` exactly."""
    path = Path(path)
    disk = table.cast(_DISK_SCHEMA.with_metadata(table.schema.metadata))
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(disk, tmp, compression="zstd")
    return path


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    try:
        t = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError ...
        raise ValueError(f"harvest table {path} is unreadable ({type(e).__name__}: {e}); delete it and rerun the harvest") from e
    version = (t.schema.metadata or {}).get(b"schema_version", b"?").decode()
    if version != SCHEMA_VERSION:
        raise ValueError(f"harvest table {path} has schema_version {version}, expected {SCHEMA_VERSION}; delete it and rerun")
    return t.cast(SCHEMA.with_metadata(t.schema.metadata))


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts with the same value types :func:`rows_to_table` takes (timestamps as ms ints)."""
    t = table.cast(_BUILD_SCHEMA.with_metadata(None)) if table.num_rows else table
    cols = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols[name] = col.to_pylist()
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())] if cols else []


def _prefer_new(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    # a transient failure never overwrites a finished row
    return not (new["status"] == "failed" and old["status"] != "failed")


def merge_rows(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Union by ``image_id``; a row from ``new`` replaces the old one unless it is ``failed``
    and the old one is not."""
    out: dict[str, dict[str, Any]] = {}
    for r in old:
        out[str(r["image_id"])] = dict(r)
    for r in new:
        k = str(r["image_id"])
        if k not in out or _prefer_new(out[k], r):
            out[k] = dict(r)
    return list(out.values())


def merge_harvest_tables(out_dir: str | Path, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Fold the tile parts and progress journals of ``out_dir/tiles/`` (and an existing
    ``harvest.parquet``) into ``out_dir/harvest.parquet``, atomically. Idempotent."""
    out_dir = Path(out_dir)
    target = out_dir / HARVEST_TABLE
    with harvest_session(out_dir):
        rows: list[dict[str, Any]] = table_rows(read_table(target)) if target.is_file() else []
        rows = merge_rows(rows, tile_rows_on_disk(out_dir))
        meta: dict[str, str] = {}
        for part in tile_part_paths(out_dir):
            md = pq.read_schema(part).metadata or {}
            for k in (b"layer", b"image_size"):
                if md.get(k) is not None:
                    meta[k.decode()] = md[k].decode()
        meta.update(extra_metadata or {})
        return write_table(rows_to_table(rows, {**meta, "summary": json.dumps(_status_counts(rows))}), target)


def _status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return dict(sorted(counts.items()))
