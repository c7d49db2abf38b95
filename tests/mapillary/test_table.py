import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2r_data.mapillary.records import make_row
from s2r_data.mapillary.table import (
    HARVEST_TABLE,
    SCHEMA,
    merge_harvest_tables,
    merge_rows,
    read_table,
    rows_to_table,
    table_rows,
    tile_part_path,
    write_table,
)


def _row(i, status="harvested", tile="14/8300/5639", **kw):
    rec = {"computed_rotation": [0.1 * i, 0.2, 0.3], "captured_at": 1718445600000 + i, "camera_type": "spherical"}
    return make_row(image_id=str(10**15 + i), tile=tile, status=status, reason=None if status == "harvested" else "r",
                    harvested_at_ms=1700000000000 + i, record=rec if status != "missing" else None, **kw)


def test_schema_round_trip_with_null_rotation(tmp_path):
    rows = [_row(2), _row(1, "missing"), _row(3, "quarantined")]
    t = rows_to_table(rows, {"layer": "mly1_computed_public"})
    assert t.schema.equals(SCHEMA)
    p = write_table(t, tmp_path / "x.parquet")
    back = read_table(p)
    assert back.schema.equals(SCHEMA)  # fixed_size_list<double>[3], dictionary status, ms UTC timestamps
    assert back.schema.field("computed_rotation").type == pa.list_(pa.float64(), 3)
    assert back.schema.field("captured_at").type == pa.timestamp("ms", tz="UTC")
    assert back.schema.metadata[b"schema_version"] == b"1" and back.schema.metadata[b"layer"] == b"mly1_computed_public"
    assert sorted(table_rows(back), key=lambda r: r["image_id"]) == sorted(rows, key=lambda r: r["image_id"])
    assert pq.read_table(p).num_rows == 3  # plain pyarrow can read it too
    assert not list(tmp_path.glob(".*partial*"))


def test_merge_rows_failed_never_overwrites_done():
    old = [_row(1), _row(2, "failed")]
    new = [_row(1, "failed"), _row(2), _row(3, "no_pose")]
    merged = {r["image_id"]: r["status"] for r in merge_rows(old, new)}
    assert merged == {str(10**15 + 1): "harvested", str(10**15 + 2): "harvested", str(10**15 + 3): "no_pose"}


def test_merge_harvest_tables_idempotent(tmp_path):
    write_table(rows_to_table([_row(1), _row(2)], {"complete": "true"}), tile_part_path(tmp_path, "14/8300/5639"))
    write_table(rows_to_table([_row(3, tile="14/8301/5639")]), tile_part_path(tmp_path, "14/8301/5639"))
    p = merge_harvest_tables(tmp_path)
    assert p == tmp_path / HARVEST_TABLE
    first = read_table(p)
    assert first.num_rows == 3 and b"complete" not in first.schema.metadata
    merge_harvest_tables(tmp_path)
    assert read_table(p).equals(first)


def test_unreadable_table_names_the_fix(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="delete it and rerun"):
        read_table(tmp_path / "bad.parquet")
