"""End-to-end harvests against the replay server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from s2r_data.mapillary import (
    HarvestConfig,
    MapillaryAuthError,
    MapillaryBlockedError,
    harvest_city,
    harvest_tiles,
    merge_harvest_tables,
    read_table,
    resolve_token,
    tile_part_path,
)
from s2r_data.checksums import file_sha256
from s2r_data.mapillary.ratelimit import max_rate_ratio
from s2r_data.mapillary.replay import FaultConfig
from s2r_data.mapillary.sample_content import placeholder_jpeg
from s2r_data.mapillary.table import table_rows
from s2r_data.tiles import tiles_for_polygon

from .conftest import TOKEN, fast_config, good_records


def _rows(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in table_rows(read_table(out / "harvest.parquet"))}


def _ok_downloads(srv) -> Counter:
    return Counter(e["id"] for e in srv.request_log("image") if e["status"] == 200 and e["fault"] is None)


def test_harvest_small_content_clean(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    report = harvest_city(city, out, fast_config(srv), TOKEN)
    rows = _rows(out)
    assert set(rows) == {r["id"] for r in recs}
    for r in recs:
        row = rows[r["id"]]
        assert row["status"] == "harvested" and row["reason"] is None
        assert row["image_path"] == f"images/{r['id']}.jpg" and file_sha256(out / row["image_path"]) == row["image_sha256"]
        assert (row["image_width"], row["image_height"]) == (128, 64)
        assert row["computed_rotation"] == pytest.approx(r["computed_rotation"]) and row["pose_confidence"] == "sfm"
    assert report.status_counts == {"harvested": len(recs)} and report.images_downloaded == len(recs)
    # header auth for every Graph call; the token is only a query parameter on tiles
    assert {e["auth"] for e in srv.request_log("graph")} == {"header"}
    n_tiles = len(tiles_for_polygon(city.polygon))
    assert srv.request_counts() == {"tile": n_tiles, "graph": n_tiles, "image": len(recs)}  # a batch per tile
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_mixed_faults_full_harvest_then_no_work(sample_plus_bad, server_factory, city, tmp_path):
    content, good_ids, bad = sample_plus_bad
    srv = server_factory(content, FaultConfig.mixed(0.10, seed=11))
    out = tmp_path / "h"
    report = harvest_city(city, out, fast_config(srv, max_retries=6), TOKEN)
    rows = _rows(out)
    assert set(rows) == set(good_ids) | {r["id"] for r in bad.values()}
    downloads = _ok_downloads(srv)
    for i in good_ids:  # every good image harvested exactly once
        assert rows[i]["status"] == "harvested", rows[i]
        assert downloads[i] == 1
        assert file_sha256(out / rows[i]["image_path"]) == rows[i]["image_sha256"]
    for key, rec in bad.items():  # every bad one recorded with its reason
        status, reason = key.split(":", 1)
        assert rows[rec["id"]]["status"] == status, (key, rows[rec["id"]])
        assert reason in rows[rec["id"]]["reason"], (key, rows[rec["id"]])
        assert rows[rec["id"]]["image_path"] is None and not (out / "images" / f"{rec['id']}.jpg").exists()
    assert sorted(p.stem for p in (out / "images").glob("*")) == sorted(good_ids)
    faults = Counter(e["fault"] for e in srv.request_log() if e["fault"])
    assert sum(faults.values()) >= 3 and report.retries >= 3  # faults really happened and were retried
    before = (out / "harvest.parquet").read_bytes()

    srv.reset_log()
    again = harvest_city(city, out, fast_config(srv), TOKEN)
    assert srv.request_counts() == {"tile": 0, "graph": 0, "image": 0}
    assert again.tiles_skipped == again.tiles_total >= 1 and again.images_downloaded == 0
    assert read_table(out / "harvest.parquet").equals(read_table_bytes(before, tmp_path))


def read_table_bytes(data: bytes, tmp: Path):
    p = tmp / "before.parquet"
    p.write_bytes(data)
    return read_table(p)


@pytest.fixture
def sample_plus_bad(tmp_path, city):
    """The committed sample content plus one record per permanent problem."""
    from .conftest import SAMPLE_CONTENT, copy_sample_content, make_bad_records
    from s2r_data.mapillary.replay import load_content
    from s2r_data.mapillary.sample_content import write_content

    content = copy_sample_content(tmp_path / "content")
    recs, images = load_content(content)
    bad = make_bad_records(city)
    imgs = {r["id"]: placeholder_jpeg(128, seed=k) for k, r in enumerate(bad.values())}
    imgs[bad["quarantined:not_2to1"]["id"]] = placeholder_jpeg(128)  # (metadata already rejects it)
    write_content(content, recs + list(bad.values()), imgs)
    assert len(recs) >= 20 and len(images) == len(recs), f"incomplete committed content in {SAMPLE_CONTENT}"
    return content, [r["id"] for r in recs], bad


def test_second_run_after_deleted_image_redownloads_only_it(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    (out / "images" / f"{recs[3]['id']}.jpg").unlink()
    srv.reset_log()
    harvest_city(city, out, fast_config(srv), TOKEN)
    assert srv.request_counts() == {"tile": 1, "graph": 1, "image": 1}  # only the tile holding it
    assert [e["ids"] for e in srv.request_log("graph")] == [[recs[3]["id"]]]
    assert _rows(out)[recs[3]["id"]]["status"] == "harvested"


def test_incremental_fetches_only_new_ids(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    new = good_records(city, 11, seed=5)[8:]
    srv.add_images(new, {r["id"]: placeholder_jpeg(128, seed=j) for j, r in enumerate(new)})
    srv.reset_log()
    harvest_city(city, out, fast_config(srv), TOKEN)  # default mode: finished tile, nothing to do
    assert srv.request_counts() == {"tile": 0, "graph": 0, "image": 0}
    report = harvest_city(city, out, fast_config(srv, incremental=True), TOKEN)
    requested = {i for e in srv.request_log("graph") for i in e["ids"]}
    assert requested == {r["id"] for r in new}
    assert srv.request_counts()["tile"] == len(tiles_for_polygon(city.polygon)) and srv.request_counts()["image"] == 3
    assert srv.request_counts()["graph"] == len({e["ids"][0] for e in srv.request_log("graph")})  # a batch per tile with new ids
    assert report.ids_processed == 3
    rows = _rows(out)
    assert len(rows) == 11 and {r["status"] for r in rows.values()} == {"harvested"}


def test_auth_error_stops_everything(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_code_190=1.0))
    with pytest.raises(MapillaryAuthError, match="190") as ei:
        harvest_city(city, tmp_path / "h", fast_config(srv), TOKEN)
    assert TOKEN not in str(ei.value)
    # no retry, no download: at most the first batch of each tile went out before the stop
    assert 1 <= srv.request_counts()["graph"] <= len(tiles_for_polygon(city.polygon)) and srv.request_counts()["image"] == 0
    srv2 = server_factory(content, token="MLY|other|token")
    with pytest.raises(MapillaryAuthError):
        harvest_city(city, tmp_path / "h2", fast_config(srv2), TOKEN)
    assert srv2.request_counts()["tile"] >= 1 and srv2.request_counts()["graph"] == 0


def test_missing_token_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    with pytest.raises(MapillaryAuthError, match="MAPILLARY_TOKEN"):
        resolve_token(None)
    monkeypatch.setenv("MAPILLARY_TOKEN", " MLY|1|x ")
    assert resolve_token(None) == "MLY|1|x" and resolve_token("MLY|2|y") == "MLY|2|y"


def test_blocked_tiles_abort_without_retry(small_content, server_factory, city, tmp_path):
    srv = server_factory(small_content[0], FaultConfig(block_tiles=True))
    with pytest.raises(MapillaryBlockedError, match="blocked"):
        harvest_city(city, tmp_path / "h", fast_config(srv), TOKEN)
    assert srv.request_counts()["tile"] >= 1 and srv.request_counts()["graph"] == 0


def test_stale_urls_refetch_metadata_once(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(url_ttl_s=-1.0))  # every signed URL already expired
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    rows = _rows(out)
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert all(r["reason"].startswith("image_url_stale") for r in rows.values())
    per_id = Counter(e["id"] for e in srv.request_log("image"))
    assert set(per_id.values()) == {2}  # the first URL, then one fresh one
    assert srv.request_counts()["graph"] == 2 + len(recs)  # a batch per tile + one refresh per image
    # failed rows are retried by the next run (here against a healthy server)
    srv2 = server_factory(content)
    report = harvest_city(city, out, fast_config(srv2), TOKEN)
    assert report.images_downloaded == len(recs)
    assert {r["status"] for r in _rows(out).values()} == {"harvested"}


def test_expired_url_fault_recovers(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_expired_url=0.5, seed=2))
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    assert {r["status"] for r in _rows(out).values()} == {"harvested"}
    expired = sum(1 for e in srv.request_log("image") if e["fault"] == "expired")
    assert expired >= 1 and srv.request_counts()["graph"] == 2 + expired


def test_transient_graph_faults_are_retried(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    for kind in ("p_malformed_json", "p_code_4", "p_http_429", "p_http_500"):
        faults = FaultConfig(**{kind: 0.5}, seed=1)
        srv = server_factory(content, faults)
        out = tmp_path / kind
        report = harvest_city(city, out, fast_config(srv, max_retries=10, batch_size=1), TOKEN)
        assert {r["status"] for r in _rows(out).values()} == {"harvested"}, kind
        n_faults = sum(1 for e in srv.request_log("graph") if e["fault"])
        assert n_faults >= 1 and srv.request_counts()["graph"] == len(recs) + n_faults, kind


def test_tile_failing_after_retries_does_not_crash(small_content, server_factory, city, tmp_path):
    srv = server_factory(small_content[0], FaultConfig(p_http_500=1.0))
    report = harvest_city(city, tmp_path / "h", fast_config(srv, max_retries=2), TOKEN)
    n_tiles = len(tiles_for_polygon(city.polygon))
    assert report.tiles_failed == n_tiles and srv.request_counts()["tile"] == 3 * n_tiles
    assert not any(tile_part_path(tmp_path / "h", t).exists() for t in report.failed_tiles)


def test_truncated_images_retried_then_quarantined(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_truncated_image=1.0))
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv, max_retries=2), TOKEN)
    rows = _rows(out)
    assert {r["status"] for r in rows.values()} == {"quarantined"}
    assert all(r["reason"].startswith("image_undecodable") for r in rows.values())
    assert set(Counter(e["id"] for e in srv.request_log("image")).values()) == {3}
    assert list((out / "images").iterdir()) == []


def test_rate_limits_never_exceeded(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(graph_rate_per_s=40.0, graph_burst=3, tiles_rate_per_s=40.0, tiles_burst=2))
    cfg = fast_config(srv, batch_size=1, graph_rate_per_min=40.0 * 60, graph_burst=2, tiles_rate_per_min=40.0 * 60, tiles_burst=1)
    harvest_city(city, tmp_path / "h", cfg, TOKEN)
    log = srv.request_log("graph")
    assert len(log) == len(recs) and all(e["fault"] is None for e in log)  # none refused
    assert max_rate_ratio([e["t"] for e in log], 40.0, 3) <= 1.0
    assert {r["status"] for r in _rows(tmp_path / "h").values()} == {"harvested"}


def test_harvest_tiles_parts_and_merge(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    tiles = tiles_for_polygon(city.polygon)
    assert len(tiles) == 2
    seen = {}
    for tile in tiles:  # one call per tile, as a flow task would
        report = harvest_tiles(city, [tile], out, fast_config(srv), TOKEN)
        part = tile_part_path(out, tile)
        assert part.name == tile.replace("/", "_") + ".parquet"
        assert read_table(part).schema.metadata[b"complete"] == b"true"
        rows = table_rows(read_table(part))
        assert rows and {r["tile"] for r in rows} == {tile} and report.status_counts == {"harvested": len(rows)}
        seen.update({r["image_id"]: tile for r in rows})
    assert set(seen) == {r["id"] for r in recs}
    assert not (out / "harvest.parquet").exists()
    merged = read_table(merge_harvest_tables(out))
    assert merged.num_rows == len(recs)
    with pytest.raises(ValueError, match="zoom 14"):
        harvest_tiles(city, ["13/4150/2819"], out, fast_config(srv), TOKEN)


def test_callable_from_a_running_event_loop(small_content, server_factory, city, tmp_path):
    srv = server_factory(small_content[0])

    async def inside():
        return harvest_city(city, tmp_path / "h", fast_config(srv), TOKEN)

    report = asyncio.run(inside())
    assert report.status_counts == {"harvested": len(small_content[1])}


def test_token_never_written_or_printed(small_content, server_factory, city, tmp_path, caplog, capsys):
    """Grep every output file, the logs, stdout/stderr and exception text for the token."""
    content, recs = small_content
    srv = server_factory(content, FaultConfig.mixed(0.3, seed=5))
    out = tmp_path / "h"
    texts = []
    with caplog.at_level(logging.DEBUG):
        harvest_city(city, out, fast_config(srv, progress=True, max_retries=8), TOKEN)
        srv_block = server_factory(content, FaultConfig(block_tiles=True))
        srv_auth = server_factory(content, FaultConfig(p_code_190=1.0))
        for s, exc in ((srv_block, MapillaryBlockedError), (srv_auth, MapillaryAuthError)):
            with pytest.raises(exc) as ei:
                harvest_city(city, tmp_path / "other", fast_config(s, progress=True), TOKEN)
            texts += [str(ei.value), repr(ei.value), str(ei.value.__cause__), str(ei.value.__context__)]
        srv_dead = server_factory(content)
        url = srv_dead.graph_url
        srv_dead.stop()  # connection refused → network errors after retries
        report = harvest_city(city, tmp_path / "dead", fast_config(srv_dead, graph_url=url, tiles_url=url, max_retries=1), TOKEN)
        assert report.tiles_failed == len(tiles_for_polygon(city.polygon))
    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err] + [r.getMessage() for r in caplog.records]
    assert any("retry" in r.getMessage() for r in caplog.records)  # the logs did see the faults
    from urllib.parse import quote

    needles = [TOKEN, quote(TOKEN, safe=""), TOKEN.split("|")[-1]]
    for t in texts:
        for n in needles:
            assert n not in t
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "content" not in p.parts]
    assert len(files) >= len(recs) + 2
    for p in files:
        data = p.read_bytes()
        for n in needles:
            assert n.encode() not in data, p


def test_unknown_field_is_a_failure_not_missing_images(small_content, server_factory, city, tmp_path, monkeypatch):
    import s2r_data.mapillary.replay as replay

    monkeypatch.setattr(replay, "KNOWN_IMAGE_FIELDS", replay.KNOWN_IMAGE_FIELDS - {"quality_score"})
    content, recs = small_content
    srv = server_factory(content)
    harvest_city(city, tmp_path / "h", fast_config(srv), TOKEN)
    rows = _rows(tmp_path / "h")
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert all("nonexisting field (quality_score)" in r["reason"] for r in rows.values())
    assert srv.request_counts()["graph"] == 2  # a batch per tile: no per-id fallback, no retries


def test_full_resolution_mode(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    harvest_city(city, tmp_path / "h", fast_config(srv, image_size="original"), TOKEN)
    assert {r["image_size"] for r in _rows(tmp_path / "h").values()} == {"original"}
    assert {e["size"] for e in srv.request_log("image")} == {"original"}


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="batch_size"):
        HarvestConfig(batch_size=500)
    with pytest.raises(ValueError, match="layer"):
        HarvestConfig(layer="mly_map_feature_point")
    with pytest.raises(ValueError, match="unknown HarvestConfig keys"):
        HarvestConfig.from_dict({"max_concurency": 3})
    assert HarvestConfig(graph_url="http://x/").graph_url == "http://x"


def test_cli_harvest(small_content, server_factory, tmp_path, monkeypatch, capsys):
    from s2r_data.mapillary.__main__ import main

    content, recs = small_content
    srv = server_factory(content)
    monkeypatch.setenv("MAPILLARY_TOKEN", TOKEN)
    args = ["--city", "sample", "--out", str(tmp_path / "h"), "--graph-url", srv.graph_url, "--tiles-url", srv.tiles_url, "--no-progress"]
    assert main(args) == 0
    assert f"harvested {len(recs)}" in capsys.readouterr().out
    monkeypatch.setenv("MAPILLARY_TOKEN", "MLY|wrong|token")
    assert main(args[:3] + [str(tmp_path / "h2")] + args[4:]) == 2
    err = capsys.readouterr().err
    assert "190" in err and "MLY|wrong|token" not in err
