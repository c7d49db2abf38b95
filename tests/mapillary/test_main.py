"""``s2r harvest`` (s2r_data.mapillary.__main__): exit statuses, causes without -v, custom areas,
registry and rate options, against the replay server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from s2r_data.cities import DEFAULT_REGISTRY
from s2r_data.mapillary import read_table
from s2r_data.mapillary.__main__ import EXIT_FATAL, EXIT_NO_PANORAMAS, EXIT_OK, EXIT_TILES_FAILED, _parser, config_from_args, main
from s2r_data.mapillary.replay import FaultConfig
from s2r_data.mapillary.table import table_rows

from .conftest import TOKEN, build_content, good_records


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("MAPILLARY_TOKEN", TOKEN)


def _args(srv_url: str, out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), "--graph-url", srv_url, "--tiles-url", srv_url, "--no-progress",
            "--tiles-rate-per-min", "60000", "--tiles-burst", "5", *extra]  # fmt: skip


def _ids(out: Path) -> set[str]:
    return {r["image_id"] for r in table_rows(read_table(out / "harvest.parquet"))}


def test_failed_tiles_exit_3_with_the_cause_without_verbose(small_content, server_factory, tmp_path, capsys):
    srv = server_factory(small_content[0], FaultConfig(p_html_502=1.0))
    assert main(["--city", "sample", *_args(srv.graph_url, tmp_path / "h", "--max-retries", "1")]) == EXIT_TILES_FAILED
    err = capsys.readouterr().err
    assert "error: 2 of 2 coverage tile(s) failed after the retries; rerun to retry them" in err
    assert "14/8299/5638: coverage tile 14/8299/5638: gave up after 2 attempts; last answer: HTTP 502" in err

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert main(["--city", "sample", *_args(dead, tmp_path / "h2", "--max-retries", "0")]) == EXIT_TILES_FAILED
    err = capsys.readouterr().err
    assert "Cannot connect to host 127.0.0.1" in err and TOKEN not in err


def test_a_region_without_panoramas_exits_4_and_says_so(server_factory, city, tmp_path, capsys):
    empty = server_factory(None)
    assert main(["--city", "sample", *_args(empty.graph_url, tmp_path / "h")]) == EXIT_NO_PANORAMAS
    out = capsys.readouterr().out
    assert "no panoramas in this region: the 2 coverage tile(s) of sample hold no 360° images" in out
    assert read_table(tmp_path / "h" / "harvest.parquet").num_rows == 0

    recs = good_records(city, 2)
    for r in recs:
        r["camera_type"] = "perspective"
    srv = server_factory(build_content(tmp_path / "content", recs))
    assert main(["--city", "sample", *_args(srv.graph_url, tmp_path / "h2")]) == EXIT_NO_PANORAMAS
    assert "no usable panoramas in this region: 2 quarantined" in capsys.readouterr().out


def test_bbox_in_a_city_then_the_whole_city_in_the_same_directory(server_factory, city, tmp_path, capsys):
    recs = good_records(city, 16)  # even i: south tile at y = -60 m, x = -80 ... -17 m
    srv = server_factory(build_content(tmp_path / "content", recs))
    (w, s), (e, n) = city.boundary_lonlat[0], city.frame.local_to_lonlat(-50.0, -20.0)
    out = tmp_path / "h"
    assert main(["--city", "sample", "--bbox", f"{w},{s},{e},{n}", *_args(srv.graph_url, out)]) == EXIT_OK
    inside = {r["id"] for i, r in enumerate(recs) if i % 2 == 0 and -80.0 + 9.0 * ((i // 2) % 9) < -50.0}
    assert len(inside) == 4 and _ids(out) == inside
    assert "local frame reference point (2.3651029, 48.8208447)" in capsys.readouterr().err  # the city's frame

    # the south tile's part is complete for the box only: the whole city re-reads it
    assert main(["--city", "sample", *_args(srv.graph_url, out)]) == EXIT_OK
    assert _ids(out) == {r["id"] for r in recs}


def test_polygon_without_a_city_and_a_registry_file(small_content, server_factory, city, tmp_path, capsys):
    content, recs = small_content
    srv = server_factory(content)
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Feature", "properties": {},
                                "geometry": {"type": "Polygon", "coordinates": [[list(v) for v in city.boundary_lonlat]]}}))
    assert main(["--polygon", str(area), *_args(srv.graph_url, tmp_path / "h")]) == EXIT_OK
    assert _ids(tmp_path / "h") == {r["id"] for r in recs}
    assert "local frame reference point (2.3651000, 48.8208400)" in capsys.readouterr().err  # the area's centroid

    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    entry = dict(doc["cities"]["sample"], osm_source=str((DEFAULT_REGISTRY.parent / doc["cities"]["sample"]["osm_source"]).resolve()))
    entry.pop("replay")
    registry = tmp_path / "my-cities.yaml"
    registry.write_text(yaml.safe_dump({"cities": {"mini": entry}}))
    assert main(["--city", "mini", "--registry", str(registry), *_args(srv.graph_url, tmp_path / "h2")]) == EXIT_OK
    assert capsys.readouterr().out.startswith("mini: 2 tiles")
    assert main(["--city", "mini", *_args(srv.graph_url, tmp_path / "h3")]) == EXIT_FATAL  # not in data/cities.yaml
    assert "unknown city 'mini'" in capsys.readouterr().err


def test_rate_and_retry_options_reach_the_config(capsys):
    args = _parser().parse_args(["--city", "sample", "--out", "x", "--graph-rate-per-min", "600", "--graph-burst", "3",
                                 "--tiles-rate-per-min", "20", "--tiles-burst", "2", "--max-retries", "1", "--retry-quarantined"])
    cfg = config_from_args(args)
    assert (cfg.graph_rate_per_min, cfg.graph_burst, cfg.tiles_rate_per_min, cfg.tiles_burst) == (600, 3, 20, 2)
    assert cfg.max_retries == 1 and cfg.retry_quarantined
    assert not config_from_args(_parser().parse_args(["--out", "x"])).retry_quarantined
    assert main(["--city", "sample", "--out", "x", "--tiles-rate-per-min", "0"]) == EXIT_FATAL
    assert "tiles_rate_per_min" in capsys.readouterr().err
    assert main(["--city", "sample", "--out", "x", "--bbox", "1,2,3"]) == EXIT_FATAL
    assert "W,S,E,N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "x"])  # neither a city nor an area
