"""Misbehaving servers and killed runs (issues 15, 17): real HTTP against the replay server, and
crashes injected at an exact step of a harvest running in a child process (SIGKILL, no timing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from s2r_data.atomic import is_temp_name
from s2r_data.checksums import file_sha256
from s2r_data.mapillary import MapillaryBlockedError, harvest_city, merge_harvest_tables, read_table, tile_part_complete
from s2r_data.mapillary.errors import TILES_BLOCK_WAIT_H, tiles_block_advice
from s2r_data.mapillary.replay import FaultConfig
from s2r_data.mapillary.sample_content import placeholder_jpeg
from s2r_data.mapillary.table import TILES_DIR, table_rows
from s2r_data.mapillary.tempfiles import harvest_session
from s2r_data.tiles import tiles_for_polygon

from .conftest import REPO, TOKEN, build_content, fast_config, good_records


def _rows(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in table_rows(read_table(out / "harvest.parquet"))}


# ---- 5xx HTML from the tiles host ------------------------------------------------------------


def test_html_502_from_the_tiles_host_is_retried_not_a_block(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_html_502=0.5, seed=4))
    out = tmp_path / "h"
    report = harvest_city(city, out, fast_config(srv, max_retries=8), TOKEN)
    tile_log = srv.request_log("tile")
    assert any(e["status"] == 502 and e["fault"] == "html502" for e in tile_log)  # the fault happened
    assert report.tiles_failed == 0 and report.retries >= 1
    assert {r["status"] for r in _rows(out).values()} == {"harvested"} and len(_rows(out)) == len(recs)


def test_tiles_host_502_after_retries_is_a_failed_tile_with_its_cause(small_content, server_factory, city, tmp_path):
    srv = server_factory(small_content[0], FaultConfig(p_html_502=1.0))
    report = harvest_city(city, tmp_path / "h", fast_config(srv, max_retries=1), TOKEN)
    n_tiles = len(tiles_for_polygon(city.polygon))
    assert report.tiles_failed == n_tiles == len(report.tile_errors)
    assert srv.request_counts()["tile"] == 2 * n_tiles  # retried, not aborted
    assert all("HTTP 502" in cause and "gave up after 2 attempts" in cause for cause in report.tile_errors.values())
    assert report.empty_region_message() is None  # failed tiles are not "an empty region"


def test_the_block_keeps_its_verdict_and_states_one_wait_time(small_content, server_factory, city, tmp_path):
    srv = server_factory(small_content[0], FaultConfig(block_tiles=True))
    with pytest.raises(MapillaryBlockedError) as ei:
        harvest_city(city, tmp_path / "h", fast_config(srv), TOKEN)
    assert tiles_block_advice() in str(ei.value) and f"~{TILES_BLOCK_WAIT_H} h" in str(ei.value)
    assert srv.request_counts()["tile"] <= len(tiles_for_polygon(city.polygon))  # a refusal is never retried


# ---- image bodies: HTML, truncated, single-use URLs, changed files ----------------------------


def test_html_image_body_is_quarantined_tile_complete_retried_on_request(server_factory, city, tmp_path):
    recs = good_records(city, 6)
    bad = dict(recs[2], _replay_html_image=True)
    content = build_content(tmp_path / "content", recs[:2] + [bad] + recs[3:])
    srv = server_factory(content, FaultConfig(single_use_urls=True))
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    rows = _rows(out)
    row = rows[bad["id"]]
    assert row["status"] == "quarantined" and row["reason"].startswith("image_not_jpeg: HTML page (text/html")
    assert row["image_path"] is None and not (out / "images" / f"{bad['id']}.jpg").exists()
    assert {r["status"] for i, r in rows.items() if i != bad["id"]} == {"harvested"}
    assert tile_part_complete(out, row["tile"])  # a quarantined image does not hold its tile open
    image_log = [e for e in srv.request_log("image") if e["id"] == bad["id"]]
    assert [e["status"] for e in image_log] == [200, 200]  # the URL of the batch, then one fresh URL
    assert not [e for e in srv.request_log("image") if e["status"] == 403]  # no spent URL sent again

    srv.reset_log()
    harvest_city(city, out, fast_config(srv), TOKEN)  # quarantine is final by default
    assert srv.request_counts() == {"tile": 0, "graph": 0, "image": 0}

    srv.add_images([recs[2]], {})  # upstream fixed; retried only on request
    srv.reset_log()
    report = harvest_city(city, out, fast_config(srv, retry_quarantined=True), TOKEN)
    assert [e["id"] for e in srv.request_log("image")] == [bad["id"]]
    assert [e["ids"] for e in srv.request_log("graph")] == [[bad["id"]]]
    assert _rows(out)[bad["id"]]["status"] == "harvested" and report.images_downloaded == 1


def test_a_truncated_download_is_retried_with_a_fresh_single_use_url(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_truncated_image=0.5, single_use_urls=True, seed=7))
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv, max_retries=8), TOKEN)
    assert {r["status"] for r in _rows(out).values()} == {"harvested"}
    image_log = srv.request_log("image")
    n_truncated = sum(1 for e in image_log if e["fault"] == "truncated")
    assert n_truncated >= 2
    assert not [e for e in image_log if e["status"] == 403]  # a spent URL is never sent again
    n_tiles = len(tiles_for_polygon(city.polygon))
    assert srv.request_counts()["graph"] == n_tiles + n_truncated  # one fresh URL per bad body
    assert len(image_log) == len(recs) + n_truncated


def test_an_image_whose_checksum_changed_is_downloaded_again(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    harvest_city(city, out, fast_config(srv), TOKEN)
    victim = recs[5]["id"]
    recorded = _rows(out)[victim]["image_sha256"]
    path = out / "images" / f"{victim}.jpg"
    path.write_bytes(placeholder_jpeg(128, seed=1234))  # a different picture that decodes fine
    assert file_sha256(path) != recorded
    srv.reset_log()
    harvest_city(city, out, fast_config(srv), TOKEN)
    assert [e["id"] for e in srv.request_log("image")] == [victim]
    assert file_sha256(path) == recorded and _rows(out)[victim]["image_sha256"] == recorded


# ---- killed runs: crash injected at an exact step in a child process ---------------------------

_CHILD = r"""
import os, signal, sys
from pathlib import Path

sys.path.insert(0, {repo!r})
from s2r_data.cities import load_city
from s2r_data.mapillary import HarvestConfig, harvest_city

def die():
    os.kill(os.getpid(), signal.SIGKILL)

{inject}

cfg = HarvestConfig(graph_url={url!r}, tiles_url={url!r}, backoff_base_s=0.005, backoff_max_s=0.02,
                    tiles_rate_per_min=60000.0, tiles_burst=5, progress=False, seed=0, **{config!r})
harvest_city(load_city("sample"), Path({out!r}), cfg, {token!r})
print("finished without the injected crash")
"""

_KILL_WHILE_WRITING_TILE_TABLE = r"""
import pyarrow.parquet as pq
real_write = pq.write_table
def write_then_die(table, where, *args, **kwargs):
    real_write(table, where, *args, **kwargs)
    p = Path(str(where))
    if p.parent.name == "tiles" and p.name.endswith(".partial.parquet"):
        with open(p, "r+b") as fh:  # the bytes not yet on disk when the kill came
            fh.truncate(os.path.getsize(p) // 2)
        die()
pq.write_table = write_then_die
"""

_KILL_AFTER_N_FINISHED_IMAGES = r"""
from s2r_data.mapillary import progress
real_append = progress.TileJournal.append
n = [0]
def append_then_maybe_die(self, row):
    real_append(self, row)
    n[0] += 1
    if n[0] == {n}:
        die()
progress.TileJournal.append = append_then_maybe_die
"""


def _run_child(srv, out: Path, inject: str, **config) -> subprocess.CompletedProcess:
    code = _CHILD.format(repo=str(REPO), inject=inject, url=srv.graph_url, out=str(out), token=TOKEN, config=config)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_killed_while_writing_a_tile_table_then_rerun_succeeds(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    child = _run_child(srv, out, _KILL_WHILE_WRITING_TILE_TABLE)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    temps = [p for p in (out / TILES_DIR).iterdir() if is_temp_name(p.name)]
    assert temps and all(p.name.startswith(".14_") and p.name.endswith(".partial.parquet") for p in temps)
    cut = []  # the temp cut in the middle of its write (another tile's may be complete, not yet renamed)
    for t in temps:
        try:
            read_table(t)
        except ValueError as e:
            assert "unreadable" in str(e)
            cut.append(t)
    assert cut, temps
    merge_harvest_tables(out)  # listings skip the temp (it used to fail with "unreadable ... delete it")

    report = harvest_city(city, out, fast_config(srv), TOKEN)
    assert report.status_counts == {"harvested": len(recs)}
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]  # the stale temp was removed
    assert {r["status"] for r in _rows(out).values()} == {"harvested"} and len(_rows(out)) == len(recs)


def test_killed_mid_tile_keeps_the_finished_images(server_factory, city, tmp_path):
    recs = good_records(city, 16)
    srv = server_factory(build_content(tmp_path / "content", recs))
    out = tmp_path / "h"
    child = _run_child(srv, out, _KILL_AFTER_N_FINISHED_IMAGES.replace("{n}", "5"), batch_size=4, max_concurrency=2)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    journals = sorted((out / TILES_DIR).glob("*.progress.jsonl"))
    finished = [json.loads(line) for j in journals for line in j.read_text().splitlines() if line.strip()]
    assert len(finished) == 5 and {r["status"] for r in finished} == {"harvested"}
    done_ids = {r["image_id"] for r in finished}
    on_disk = {p.stem for p in (out / "images").glob("*.jpg")}
    assert done_ids <= on_disk

    srv.reset_log()
    report = harvest_city(city, out, fast_config(srv, batch_size=4), TOKEN)
    asked = {i for e in srv.request_log("graph") for i in e["ids"]}
    assert asked and not asked & done_ids  # no metadata for the finished images of the killed tile
    downloaded = Counter(e["id"] for e in srv.request_log("image"))
    assert not set(downloaded) & on_disk and set(downloaded.values()) == {1}  # only the unfinished ones, once
    assert set(downloaded) | on_disk == {r["id"] for r in recs}
    assert report.status_counts == {"harvested": len(recs)}
    assert not list((out / TILES_DIR).glob("*.progress.jsonl"))  # folded into the tile parts


def test_only_own_stale_temps_are_removed_and_only_when_alone(small_content, server_factory, city, tmp_path):
    content, recs = small_content
    srv = server_factory(content)
    out = tmp_path / "h"
    hexid = uuid.uuid4().hex
    own = [out / "images" / f".{recs[0]['id']}.jpg.{hexid}.partial", out / TILES_DIR / f".14_1_2.parquet.{hexid}.partial.parquet",
           out / f".harvest.parquet.{hexid}.partial.parquet"]
    foreign = [out / "images" / ".notes.txt.partial", out / TILES_DIR / "README.partial", out / f".render.npz.{hexid}.partial.npz"]
    with harvest_session(out):  # another harvest is running in this directory: its temps are live
        for p in own + foreign:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"being written by the other harvest")
        harvest_city(city, out, fast_config(srv), TOKEN)
        assert all(p.exists() for p in own + foreign)
    harvest_city(city, out, fast_config(srv), TOKEN)  # alone: its own stale temps go
    assert not any(p.exists() for p in own) and all(p.exists() for p in foreign)
    assert os.listdir(out / "images").count(f"{recs[0]['id']}.jpg") == 1
