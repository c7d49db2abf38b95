"""flows.stages' harvest step against the local replay server (real HTTP on 127.0.0.1, no Prefect):
where a city's harvest comes from, and the messages a flow run fails with."""

from __future__ import annotations

import pytest

from flows import stages
from s2r_data.cities import load_city
from s2r_data.mapillary.errors import TILES_BLOCK_WAIT_H, tiles_block_advice
from s2r_data.mapillary.replay import FaultConfig, ReplayServer
from s2r_data.tiles import tiles_for_polygon

from .conftest import TEST_TOKEN


def test_the_sample_city_serves_its_own_replay_content_unless_urls_are_given():
    sample = load_city("sample")
    with stages.mapillary_endpoints(sample, None, None) as api:
        assert api.replay and api.graph_url.startswith("http://127.0.0.1:") and api.tiles_url == api.graph_url
    with stages.mapillary_endpoints(sample, "http://127.0.0.1:9/", None) as api:  # explicit URLs win
        assert not api.replay and api.graph_url == "http://127.0.0.1:9/" and api.tiles_url == "https://tiles.mapillary.com"
    with stages.mapillary_endpoints(load_city("paris"), None, None) as api:  # no replay content: Mapillary
        assert (api.graph_url, api.tiles_url, api.replay) == ("https://graph.mapillary.com", "https://tiles.mapillary.com", False)


def test_harvest_from_the_city_replay_needs_no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    monkeypatch.setattr(stages, "load_mapillary_token", lambda: pytest.fail("the replay route must not look for a token"))
    sample = load_city("sample")
    with stages.mapillary_endpoints(sample, None, None) as api:
        got = [stages.harvest_tile(sample, tile, tmp_path, graph_url=api.graph_url, tiles_url=api.tiles_url,
                                   incremental=False, overrides={}, replay=api.replay)
               for tile in tiles_for_polygon(sample.polygon)]  # fmt: skip
    assert sum(g["statuses"].get("harvested", 0) for g in got) >= 20 and all(not g["skipped"] for g in got)


def test_a_blocked_tiles_host_fails_with_the_library_advice(tmp_path, monkeypatch, sample_content):
    monkeypatch.setenv("MAPILLARY_TOKEN", TEST_TOKEN)
    sample = load_city("sample")
    with ReplayServer(sample_content, TEST_TOKEN, FaultConfig(block_tiles=True)) as srv:
        with pytest.raises(stages.PermanentHarvestError) as ei:
            stages.harvest_tile(sample, tiles_for_polygon(sample.polygon)[0], tmp_path, graph_url=srv.graph_url,
                                tiles_url=srv.tiles_url, incremental=False, overrides={})
    msg = str(ei.value)
    assert "is blocking this machine" in msg and msg.count(tiles_block_advice()) == 1
    assert f"~{TILES_BLOCK_WAIT_H} h" in msg and "hour" not in msg  # one wait time, the library's
