"""The build-dataset flow in ephemeral mode on the sample city (replay server, Blender):
full build → verified store, a rerun that does nothing, an incremental run that adds only the
new panoramas; and bad input → failed flow runs whose message names the problem."""

from __future__ import annotations

import socket

import pytest

from s2r_data.mapillary.replay import ReplayServer, load_content
from s2r_data.mapillary.table import read_table, table_rows

from .conftest import TEST_TOKEN

pytestmark = pytest.mark.slow


def _harvested_ids(summary) -> list[str]:
    return sorted(r["image_id"] for r in table_rows(read_table(summary["harvest_table"])) if r["status"] == "harvested")


def _failure_message(state) -> str:
    assert state.is_failed(), f"expected a failed flow run, got {state}"
    exc = state.result(raise_on_failure=False)
    return f"{state.message}\n{exc}"


@pytest.mark.blender
def test_build_rerun_and_incremental(prefect_api, sample_content, tmp_path, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.build_dataset import build_dataset
    from s2r_data.store import open_dataset, verify

    records, images = load_content(sample_content)
    records = sorted(records, key=lambda r: str(r["id"]))
    first, later = records[:-5], records[-5:]
    monkeypatch.setenv("MAPILLARY_TOKEN", TEST_TOKEN)
    with ReplayServer(None, TEST_TOKEN) as srv:
        srv.add_images(first, {k: v for k, v in images.items() if k in {str(r["id"]) for r in first}})
        params = dict(
            city="sample", width=128, out_dir=str(tmp_path), graph_url=srv.graph_url, tiles_url=srv.tiles_url,
            batch_size=6, preview_count=2,
        )
        s1 = build_dataset(**params)
        ids1 = _harvested_ids(s1)
        assert len(ids1) >= 5, "the sample content should hold usable panoramas"
        ds = open_dataset(s1["store_url"])
        assert sorted(ds.image_ids) == ids1 == sorted(set(ds.image_ids))
        assert verify(s1["store_url"]).ok
        assert s1["verified"] and s1["counts"]["written_now"] == len(ids1) == s1["samples_in_store"]
        assert s1["counts"]["rendered_now"] == len(ids1)
        for key in ("report_md", "report_json", "preview_png"):
            assert (tmp_path / "sample" / "report").joinpath(s1[key].rsplit("/", 1)[-1]).is_file()
        art = Artifact.get("build-dataset-sample")
        assert art is not None and "samples in store: **%d**" % len(ids1) in art.data
        renders = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sample" / "renders" / "w128").glob("*.npz")}
        assert len(renders) == len(ids1)

        # the same run again: finished tile skipped without a request, nothing rendered or written,
        # no old sample re-read by the verify step
        import importlib

        verify_mod = importlib.import_module("s2r_data.store.verify")
        checked: list[str] = []
        real_check = verify_mod._check_sample
        monkeypatch.setattr(verify_mod, "_check_sample", lambda url, i, *a: checked.append(i) or real_check(url, i, *a))
        srv.reset_log()
        s2 = build_dataset(**params)
        assert checked == []
        assert srv.request_counts() == {"tile": 0, "graph": 0, "image": 0}
        assert s2["counts"]["tiles_already_done"] == len(s2["tiles"]) == s2["counts"]["tiles"]
        assert s2["counts"]["rendered_now"] == 0 and s2["counts"]["written_now"] == 0
        assert s2["counts"]["already_in_store"] == len(ids1) == s2["samples_in_store"]

        # new images appear upstream; an incremental run fetches and renders only those
        srv.add_images(later, {k: v for k, v in images.items() if k in {str(r["id"]) for r in later}})
        srv.reset_log()
        s3 = build_dataset(**params, incremental=True)
        ids3 = _harvested_ids(s3)
        new = sorted(set(ids3) - set(ids1))
        assert new and set(ids1) <= set(ids3)
        assert srv.request_counts()["image"] == len([r for r in later if str(r["id"]) in images])
        assert s3["counts"]["rendered_now"] == len(new) == s3["counts"]["written_now"]
        ds3 = open_dataset(s3["store_url"])
        assert sorted(ds3.image_ids) == ids3 and len(set(ds3.image_ids)) == len(ds3.image_ids)
        assert verify(s3["store_url"]).ok
        # the sample city's 3 sequences: one is held out, whatever the greedy fill did (training evaluates on it)
        assert s3["splits"].get("val", 0) > 0 and s3["splits"].get("train", 0) > 0
        after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sample" / "renders" / "w128").glob("*.npz")}
        assert {k: after[k] for k in renders} == renders  # earlier renders untouched


@pytest.mark.blender
def test_sample_city_serves_itself_and_a_bbox_builds_apart(prefect_api, tmp_path, monkeypatch):
    """``city=sample`` with no URLs and no token: the flow serves the registry's replay content
    itself; a bbox builds that part of the city, in its frame, in a directory of its own."""
    from shapely.geometry import Point, box

    from flows.build_dataset import build_dataset

    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    bbox = [2.36265, 48.81922, 2.36755, 48.82084]  # the south half of the sample city
    s = build_dataset(city="sample", bbox=bbox, width=64, limit=2, out_dir=str(tmp_path), batch_size=2, preview_count=0)
    assert s["samples_in_store"] == 2 and s["verified"]
    city_dir = tmp_path / s["city"]
    assert s["city"].startswith("sample-area-") and s["store_url"] == str(city_dir / "dataset.zarr")
    rows = table_rows(read_table(s["harvest_table"]))
    assert rows and all(box(*bbox).buffer(1e-6).covers(Point(r["lon"], r["lat"])) for r in rows)
    assert not (tmp_path / "sample").exists()  # the whole city's outputs are not touched


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def replay(sample_content):
    with ReplayServer(sample_content, TEST_TOKEN) as srv:
        yield srv


def _params(tmp_path, srv, **kw):
    base = dict(city="sample", width=64, out_dir=str(tmp_path), graph_url=srv.graph_url, tiles_url=srv.tiles_url,
                network_retries=0, harvest_overrides={"max_retries": 0}, preview_count=0)
    return {**base, **kw}


def test_unknown_city_fails_naming_known_cities(prefect_api, tmp_path, replay):
    from flows.build_dataset import build_dataset

    msg = _failure_message(build_dataset(**_params(tmp_path, replay, city="atlantis"), return_state=True))
    assert "unknown city 'atlantis'" in msg and "sample" in msg and "paris" in msg


def test_missing_token_fails_with_both_ways_to_provide_it(prefect_api, tmp_path, replay, monkeypatch):
    from flows.build_dataset import build_dataset

    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    msg = _failure_message(build_dataset(**_params(tmp_path, replay), return_state=True))
    assert "no Mapillary access token" in msg and "MAPILLARY_TOKEN" in msg and "mapillary-token" in msg


def test_bad_token_fails_without_leaking_it(prefect_api, tmp_path, replay, monkeypatch):
    from flows.build_dataset import build_dataset

    monkeypatch.setenv("MAPILLARY_TOKEN", "MLY|wrong|token")
    msg = _failure_message(build_dataset(**_params(tmp_path, replay), return_state=True))
    assert "rejected the access token" in msg and "MLY|wrong|token" not in msg


def test_unreachable_api_fails_naming_the_url(prefect_api, tmp_path, monkeypatch):
    from flows.build_dataset import build_dataset

    monkeypatch.setenv("MAPILLARY_TOKEN", TEST_TOKEN)
    url = f"http://127.0.0.1:{_closed_port()}"
    state = build_dataset(city="sample", width=64, out_dir=str(tmp_path), graph_url=url, tiles_url=url,
                          network_retries=0, harvest_overrides={"max_retries": 0}, preview_count=0, return_state=True)
    msg = _failure_message(state)
    assert url in msg and "is the Mapillary API reachable" in msg


def test_empty_region_fails_saying_there_is_no_coverage(prefect_api, tmp_path, monkeypatch):
    from flows.build_dataset import build_dataset

    monkeypatch.setenv("MAPILLARY_TOKEN", TEST_TOKEN)
    with ReplayServer(None, TEST_TOKEN) as empty:
        msg = _failure_message(build_dataset(**_params(tmp_path, empty), return_state=True))
    assert "no usable panoramas in city 'sample'" in msg


def test_tiles_outside_the_city_are_rejected(prefect_api, tmp_path, replay):
    from flows.build_dataset import build_dataset

    msg = _failure_message(build_dataset(**_params(tmp_path, replay, tiles=["14/0/0"]), return_state=True))
    assert "do not intersect city 'sample'" in msg and "14/8299/5639" in msg


@pytest.mark.slow
def test_raycast_renderer_builds_the_dataset_and_unknown_renderers_are_refused(prefect_api, tmp_path, replay, monkeypatch):
    from flows.build_dataset import build_dataset
    from s2r_data.render import load_sim_passes
    from s2r_data.store import open_dataset, verify

    monkeypatch.setenv("MAPILLARY_TOKEN", TEST_TOKEN)
    s = build_dataset(**_params(tmp_path, replay, renderer="raycast", limit=4))
    assert s["verified"] and verify(s["store_url"]).ok and len(open_dataset(s["store_url"]).image_ids) == 4
    renders = sorted((tmp_path / "sample" / "renders" / "w64").glob("*.npz"))
    assert len(renders) == 4 and {load_sim_passes(p).meta["backend"] for p in renders} == {"raycast"}
    msg = _failure_message(build_dataset(**_params(tmp_path, replay, renderer="cycles"), return_state=True))
    assert "renderer='cycles'" in msg and "raycast" in msg
