"""build-dataset on a real Dask cluster (distributed.LocalCluster, 2 worker processes) writing one
dataset to a real S3-compatible server on 127.0.0.1 (moto): the dataset verifies and reads with
plain zarr + pyarrow over S3; render batches run on the workers with one Blender process per
worker; a Dask worker SIGKILLed mid-render and two flow runs of one city at once both leave one
consistent dataset; the storage secret appears in no log."""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

from s2r_data.store import open_dataset, verify
from s2r_data.store.slots import read_slot_manifest
from s2r_data.store.urls import location

pytestmark = [pytest.mark.slow, pytest.mark.blender]

SECRET = f"s2r-test-secret-{uuid.uuid4().hex}"
WIDTH = 64


@pytest.fixture(scope="module")
def s3(prefect_api):
    from s2r_data.store.local_s3 import local_s3_server

    with local_s3_server(secret_access_key=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def dask(s3):
    """Two worker processes (started after the S3 server and the Prefect API: they inherit both;
    their task logs go to the API at INFO, so the secret check below sees them)."""
    from distributed import Client, LocalCluster

    level = os.environ.get("PREFECT_LOGGING_LEVEL")
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    try:
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
            yield cluster, client
    finally:
        if level is None:
            os.environ.pop("PREFECT_LOGGING_LEVEL", None)
        else:
            os.environ["PREFECT_LOGGING_LEVEL"] = level


def _handle_stats(client) -> dict:
    def stats():
        from s2r_data.render.handles import handle_stats

        return handle_stats()

    return client.run(stats)


def _blender_children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _wait_dead(pids, timeout_s: float = 60.0) -> list[int]:
    import psutil

    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


def _build(tmp_path, s3, address, key, **kw):
    from flows.build_dataset import build_dataset

    params = dict(city="sample", width=WIDTH, out_dir=str(tmp_path / "out"), store_url=s3.url(key),
                  task_runner=address, preview_count=0, batch_size=2)
    return build_dataset(**{**params, **kw})


def _check_dataset(url: str, n: int) -> list[str]:
    rep = verify(url)  # every sample's content, read over S3
    assert rep.ok and rep.n_samples == n and rep.n_checked == n, rep.summary()
    ds = open_dataset(url)
    ids = ds.image_ids
    slots = ds.index.column("zarr_index").to_pylist()
    assert len(set(ids)) == len(ids) == n and len(set(slots)) == n
    manifest = read_slot_manifest(location(url))
    assert {i: manifest.slots[i] for i in ids} == dict(zip(ids, slots))
    return ids


def test_build_on_a_dask_cluster_into_s3(tmp_path, s3, dask, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from tests.store.test_plain_readers import read_plainly

    cluster, client = dask
    before = _handle_stats(client)
    caplog.set_level(logging.DEBUG)
    s = _build(tmp_path, s3, cluster.scheduler_address, "a/dataset.zarr", limit=6, preview_count=1)
    url = s["store_url"]
    assert url.startswith("s3://") and s["verified"] and s["samples_in_store"] == 6 == s["counts"]["written_now"]
    ids = _check_dataset(url, 6)

    # render batches ran on the Dask workers, each worker started Blender (and loaded the model) once
    after = _handle_stats(client)
    created = sum(after[w]["created"] - before.get(w, {}).get("created", 0) for w in after)
    reused = sum(after[w]["reused"] - before.get(w, {}).get("reused", 0) for w in after)
    assert created + reused == 3 and 1 <= created <= 2  # 3 batches of 2

    # plain zarr + pyarrow over S3 (the reader of docs/dataset.md, no s2r import)
    got = read_plainly(tmp_path, url, env=dict(os.environ))
    assert sorted(got["ids"]) == sorted(ids)
    ds = open_dataset(url)
    for i, image_id in enumerate(got["ids"]):
        k = ds.image_ids.index(str(image_id))
        np.testing.assert_array_equal(got[f"sim_{i}"], ds.read(k, "sim"), err_msg=str(image_id))
        np.testing.assert_array_equal(got[f"real_{i}"], ds.read(k, "real"), err_msg=str(image_id))

    # the storage secret is in no log line (here or sent by the workers), parameter or report
    async def stored() -> str:
        async with get_client() as c:
            runs = await c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=10)
            logs = await c.read_logs()
            return json.dumps([r.parameters for r in runs], default=str) + "\n".join(l.message for l in logs)

    from prefect.utilities.asyncutils import run_coro_as_sync

    server_side = run_coro_as_sync(stored())
    assert "rendering 2 panoramas" in server_side  # the workers' task logs were read
    report = "".join(p.read_text() for p in (tmp_path / "out" / "sample" / "report").glob("*.*") if p.suffix in (".md", ".json"))
    for text in (caplog.text, server_side, json.dumps(s, default=str), report):
        assert SECRET not in text


def test_a_dask_worker_killed_mid_render(tmp_path, s3, dask):
    """SIGKILL one worker process while it renders a batch: Dask re-runs the batch elsewhere, the
    re-run takes over its own write leases, the dead worker's Blender exits with it."""
    cluster, client = dask
    renders = tmp_path / "out" / "sample" / "renders" / f"w{WIDTH}"
    result: dict = {}

    def run():
        try:
            result["summary"] = _build(tmp_path, s3, cluster.scheduler_address, "kill/dataset.zarr", limit=8, batch_size=4)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    deadline = time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        busy = [a for a, keys in client.processing().items() if any(k.startswith("render_and_write") for k in keys)]
        if busy and glob.glob(str(renders / "*.npz")):  # Blender is rendering a batch there
            victim = busy[0]
        time.sleep(0.05)
    assert victim is not None, f"no render batch seen in flight: {result}"
    pid = client.run(os.getpid, workers=[victim])[victim]
    children = _blender_children(pid)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=900)
    assert "error" not in result, result.get("error")
    s = result["summary"]
    assert s["verified"] and s["samples_in_store"] == 8 == s["counts"]["poses"]
    _check_dataset(s["store_url"], 8)
    assert children and not _wait_dead(children)  # its Blender worker died with it

    # Blender workers kept by live Dask workers stop when those workers close
    kept = [c for p in client.run(os.getpid).values() for c in _blender_children(p)]
    assert kept
    client.restart(wait_for_workers=False)  # only the old workers must stop; new ones may start slowly under load
    assert not _wait_dead(kept)


def test_two_flow_runs_of_one_city_at_once(tmp_path, s3, dask):
    cluster, _ = dask
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        try:
            results[i] = _build(tmp_path, s3, cluster.scheduler_address, "twice/dataset.zarr", limit=6)
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    for r in results:
        assert isinstance(r, dict) and r["verified"] and r["samples_in_store"] == 6, r
    url = results[0]["store_url"]
    ids = _check_dataset(url, 6)
    manifest = read_slot_manifest(location(url))
    assert manifest.end == 6 and sorted(manifest.slots) == sorted(ids)  # no image allocated twice, no hole
