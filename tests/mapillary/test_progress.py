import json

from s2r_data.atomic import atomic_path, is_temp_name
from s2r_data.mapillary.progress import TileJournal, journal_path, read_journal
from s2r_data.mapillary.table import merge_harvest_tables, read_table, table_rows, tile_part_path, tile_part_paths

from .test_table import _row


def test_journal_appends_survive_a_cut_last_line(tmp_path):
    part = tile_part_path(tmp_path, "14/8299/5639")
    jpath = journal_path(part)
    assert jpath.name == "14_8299_5639.progress.jsonl"
    with TileJournal(jpath) as j:
        j.append(_row(1))
        j.append(_row(2, "quarantined"))
    with open(jpath, "ab") as fh:  # a kill in the middle of a line
        fh.write(json.dumps(_row(3)).encode()[:40])
    assert [r["image_id"] for r in read_journal(jpath)] == [_row(1)["image_id"], _row(2)["image_id"]]
    with TileJournal(jpath) as j:  # the next run goes on after the cut line
        j.append(_row(4))
    assert [r["status"] for r in read_journal(jpath)] == ["harvested", "quarantined", "harvested"]
    assert read_journal(tmp_path / "absent.jsonl") == []


def test_listings_skip_temp_names_and_merge_folds_journals(tmp_path):
    with TileJournal(journal_path(tile_part_path(tmp_path, "14/1/2"))) as j:
        j.append(_row(7, tile="14/1/2"))
    stale = tile_part_path(tmp_path, "14/1/3").with_name(".14_1_3.parquet.0123456789abcdef0123456789abcdef.partial.parquet")
    stale.write_bytes(b"PAR1 cut by a kill")
    assert is_temp_name(stale.name) and tile_part_paths(tmp_path) == []
    merged = table_rows(read_table(merge_harvest_tables(tmp_path)))
    assert [r["image_id"] for r in merged] == [_row(7)["image_id"]]


def test_is_temp_name_matches_what_atomic_path_makes(tmp_path):
    with atomic_path(tmp_path / "14_1_2.parquet", suffix=".parquet") as tmp:
        assert is_temp_name(tmp.name)
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "123.jpg") as tmp:
        assert is_temp_name(tmp.name)
        tmp.write_bytes(b"x")
    for name in ("14_1_2.parquet", "123.jpg", ".hidden", "a.partial", ".harvest.lock", "14_1_2.progress.jsonl"):
        assert not is_temp_name(name), name
