"""The Parquet index: one row per committed sample.

Two places hold rows:

* ``<url>/index.d/<image_id>.parquet`` — one fragment per sample, written atomically by the
  writer *after* the sample's arrays: the fragment's existence is the commit marker.
* ``<url>/index.parquet`` — the compacted index (:func:`compact_index` merges fragments into it
  by compare-and-swap, then deletes the merged fragments; no lock, so it works on object stores).

:func:`read_index` returns their union (compacted rows win over a fragment for the same id),
sorted by ``zarr_index``. It lists and reads the fragments *before* reading ``index.parquet``, so a
concurrent compaction (which writes ``index.parquet`` before deleting fragments) never hides a row.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import re
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..poses import Pose, heading_pitch_roll_deg
from .conditional import read_versioned, replace_if_version
from .schema import INDEX_SCHEMA, ROW_FIELDS_FROM_CALLER
from .urls import StoreLocation

__all__ = [
    "IndexRowError",
    "make_index_row",
    "row_table",
    "read_index",
    "compact_index",
    "write_index_table",
    "valid_image_id",
    "empty_index",
    "update_index",
]

_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


class IndexRowError(ValueError):
    pass


def valid_image_id(image_id: str) -> str:
    image_id = str(image_id)
    if not _ID_RE.match(image_id) or image_id in (".", ".."):
        raise IndexRowError(
            f"image_id {image_id!r} is not usable as a file name: use letters, digits, '_', '-', '.' (≤ 200 chars)"
        )
    return image_id


def _to_ms_utc(value: Any, field: str) -> _dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, (int, np.integer)):
        return _dt.datetime.fromtimestamp(int(value) / 1000.0, tz=_dt.timezone.utc)
    if isinstance(value, str):
        d = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=_dt.timezone.utc)
    raise IndexRowError(f"{field}: expected datetime, epoch milliseconds or ISO string, got {type(value).__name__}")


def make_index_row(
    *, image_id: str, city: str, zarr_index: int, row: Mapping[str, Any], written_at: _dt.datetime | None = None
) -> dict[str, Any]:
    """Validated full index row. ``row`` holds caller columns (see ``schema.ROW_FIELDS_FROM_CALLER``)
    and may carry ``pose`` (a :class:`s2r_data.poses.Pose`), which fills position/rotation columns."""
    row = dict(row)
    out: dict[str, Any] = {f: None for f in ROW_FIELDS_FROM_CALLER}
    pose = row.pop("pose", None)
    if pose is not None:
        if not isinstance(pose, Pose):
            raise IndexRowError(f"row['pose'] must be an s2r_data.poses.Pose, got {type(pose).__name__}")
        h, p, r = heading_pitch_roll_deg(pose.R_world_to_cam_opensfm)
        out.update(
            x_local_m=float(pose.center_local_m[0]),
            y_local_m=float(pose.center_local_m[1]),
            z_local_m=float(pose.center_local_m[2]),
            R_world_to_cam_opensfm=[float(v) for v in pose.R_world_to_cam_opensfm.reshape(9)],
            heading_deg=h,
            pitch_deg=p,
            roll_deg=r,
            pose_confidence=pose.confidence,
            lon=None if math.isnan(pose.lon_deg) else float(pose.lon_deg),
            lat=None if math.isnan(pose.lat_deg) else float(pose.lat_deg),
        )
    unknown = sorted(set(row) - set(ROW_FIELDS_FROM_CALLER))
    if unknown:
        raise IndexRowError(
            f"image {image_id}: unknown index columns {unknown}; allowed: {list(ROW_FIELDS_FROM_CALLER)} (+ 'pose')"
        )
    out.update({k: v for k, v in row.items()})
    R = out.get("R_world_to_cam_opensfm")
    if R is None:
        raise IndexRowError(
            f"image {image_id}: the row needs 'pose' (s2r_data.poses.Pose) or 'R_world_to_cam_opensfm' "
            "(9 floats, row-major): every rendered sample has a pose, and the crop loader needs it"
        )
    else:
        R = np.asarray(R, dtype=np.float64).reshape(-1)
        if R.shape != (9,) or not np.isfinite(R).all():
            raise IndexRowError(f"image {image_id}: R_world_to_cam_opensfm must be 9 finite numbers (row-major 3×3)")
        if not np.allclose(R.reshape(3, 3) @ R.reshape(3, 3).T, np.eye(3), atol=1e-5):
            raise IndexRowError(f"image {image_id}: R_world_to_cam_opensfm is not a rotation matrix")
        out["R_world_to_cam_opensfm"] = [float(v) for v in R]
    out["captured_at"] = _to_ms_utc(out.get("captured_at"), "captured_at")
    out["image_id"] = valid_image_id(image_id)
    out["city"] = str(city)
    out["zarr_index"] = int(zarr_index)
    out["written_at"] = written_at or _dt.datetime.now(tz=_dt.timezone.utc)
    return out


def row_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    """Rows → table with exactly :data:`INDEX_SCHEMA` (type errors name the column)."""
    cols = {}
    for field in INDEX_SCHEMA:
        values = [r.get(field.name) for r in rows]
        try:
            cols[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise IndexRowError(f"index column {field.name!r} ({field.type}): {e}") from e
    return pa.Table.from_pydict(cols, schema=INDEX_SCHEMA)


def empty_index() -> pa.Table:
    return INDEX_SCHEMA.empty_table()


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table.cast(INDEX_SCHEMA), buf, compression="zstd")
    return buf.getvalue()


def write_index_table(loc: StoreLocation, rel_path: str, table: pa.Table) -> None:
    """Atomically write ``table`` (cast to :data:`INDEX_SCHEMA`) at ``<url>/<rel_path>``."""
    loc.write_bytes_atomic(rel_path, _table_bytes(table))


def _read_table(loc: StoreLocation, rel_path: str) -> pa.Table | None:
    data = loc.read_bytes(rel_path)
    if data is None:
        return None
    t = pq.read_table(io.BytesIO(data))
    for f in INDEX_SCHEMA:  # columns added later (nullable) read as null from older stores
        if f.name not in t.column_names and f.nullable:
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
    return t.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)


def _dedupe_first(table: pa.Table) -> pa.Table:
    ids = table.column("image_id").to_pylist()
    seen: set[str] = set()
    keep = []
    for i, x in enumerate(ids):
        if x not in seen:
            seen.add(x)
            keep.append(i)
    if len(keep) == len(ids):
        return table
    return table.take(pa.array(keep, pa.int64()))


OnError = Callable[[str, Exception], None]


def _read_or_report(loc: StoreLocation, rel_path: str, on_error: OnError | None) -> pa.Table | None:
    if on_error is None:
        return _read_table(loc, rel_path)
    try:
        return _read_table(loc, rel_path)
    except Exception as e:  # noqa: BLE001 - corrupt Parquet, wrong schema, I/O error: reported
        on_error(rel_path, e)
        return None


def read_fragments(loc: StoreLocation, *, on_error: OnError | None = None) -> tuple[pa.Table, list[str]]:
    """The committed fragments ``index.d/*.parquet`` (names starting with '.' are temp files)
    and the names read."""
    names = sorted(n for n in loc.list_dir("index.d") if n.endswith(".parquet") and not n.startswith("."))
    tables, read_names = [], []
    for n in names:
        t = _read_or_report(loc, f"index.d/{n}", on_error)
        if t is not None:  # deleted by a concurrent compaction: it is in index.parquet now
            tables.append(t)
            read_names.append(n)
    if not tables:
        return empty_index(), []
    return pa.concat_tables(tables), read_names


def read_index(loc: StoreLocation, *, dedupe: bool = True, on_error: OnError | None = None) -> pa.Table:
    """All committed rows (compacted + fragments), sorted by ``zarr_index``. ``on_error(rel_path,
    exc)``: called for an unreadable index file, which is then skipped (default: raise)."""
    frags, _ = read_fragments(loc, on_error=on_error)
    compacted = _read_or_report(loc, "index.parquet", on_error)
    if dedupe:
        return _merge(compacted, frags)
    parts = [t for t in (compacted, frags) if t is not None and t.num_rows]
    table = pa.concat_tables(parts) if parts else empty_index()
    return table.sort_by([("zarr_index", "ascending")]) if table.num_rows else table


def _merge(compacted: pa.Table | None, frags: pa.Table) -> pa.Table:
    parts = [t for t in (compacted, frags) if t is not None and t.num_rows]
    table = _dedupe_first(pa.concat_tables(parts)) if parts else empty_index()
    return table.sort_by([("zarr_index", "ascending")]) if table.num_rows else table


_COMPACT_ROUNDS = 64


def _read_compacted_versioned(loc: StoreLocation) -> tuple[pa.Table | None, object]:
    data, version = read_versioned(loc, "index.parquet")
    if data is None:
        return None, None
    t = pq.read_table(io.BytesIO(data))
    return t.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA), version


def compact_index(loc: StoreLocation) -> int:
    """Merge fragments into ``index.parquet``; returns its row count.

    Writers commit while this runs: it merges again until a listing finds no fragment, so that
    ``index.parquet`` alone lists every sample committed before the call. Each rewrite is a
    compare-and-swap on the version it read (a concurrent compaction or split assignment makes it
    re-read and merge again, never overwrite), and fragments are deleted only after a rewrite that
    holds them succeeded. Fragments of ids already in ``index.parquet`` (left by a compaction
    killed before its deletions) are removed too."""
    n_rows = 0
    for _ in range(_COMPACT_ROUNDS):
        compacted, version = _read_compacted_versioned(loc)
        table = _merge(compacted, empty_index())
        frags, names = read_fragments(loc)
        n_rows = table.num_rows
        if not names and compacted is not None:
            break
        merged = _merge(table, frags)
        if not replace_if_version(loc, "index.parquet", _table_bytes(merged), version):
            continue  # another compaction (or split assignment) rewrote it: start from its version
        n_rows = merged.num_rows
        for n in names:  # in index.parquet now: readers never miss a row
            loc.remove(f"index.d/{n}")
    return n_rows


def update_index(loc: StoreLocation, change: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Compact, then rewrite ``index.parquet`` as ``change(compacted table)`` by compare-and-swap
    (retried on a concurrent rewrite, so no compaction is undone); returns the table written.
    Rows committed meanwhile stay in their fragments."""
    while True:
        compact_index(loc)
        compacted, version = _read_compacted_versioned(loc)
        table = change(_merge(compacted, empty_index()))
        if replace_if_version(loc, "index.parquet", _table_bytes(table), version):
            return table
