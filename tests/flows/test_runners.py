"""Task-runner choice of build-dataset (threads, a local Dask cluster, a scheduler address): the
parameter is checked by name, a flow re-runs itself on the chosen runner (Prefect fixes a flow's
runner at decoration); store credentials from a Prefect Secret block reach fsspec, never a log."""

from __future__ import annotations

import os

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows import runners
from flows.storage_credentials import StorageCredentialsError, use_storage_block


@pytest.mark.parametrize(
    "value, workers, kind",
    [("threads", None, "threads"), ("dask", 3, "dask-local"), ("tcp://10.0.0.5:8786", None, "dask-address"),
     (" tls://sched.example:8786 ", None, "dask-address")],
)
def test_parse_task_runner(value, workers, kind):
    choice = runners.parse_task_runner(value, workers)
    assert choice.kind == kind
    assert choice.n_workers == (workers if kind == "dask-local" else None)


@pytest.mark.parametrize(
    "value, workers, match",
    [("ray", None, "use 'threads'.*'dask'.*tcp://scheduler:8786"), ("dask", 0, "dask_workers=0"),
     ("threads", 2, "task_runner='dask'"), ("tcp://h:8786", 2, "start more workers there"),
     ("http://h:8786", None, "task_runner='http://h:8786'")],
)
def test_bad_task_runner_parameters_are_refused_by_name(value, workers, match):
    with pytest.raises(runners.TaskRunnerChoiceError, match=match):
        runners.parse_task_runner(value, workers)


def test_a_local_dask_cluster_runs_one_task_per_worker_process():
    runner = runners._build_dask_runner(runners.parse_task_runner("dask", 2))
    assert type(runner).__name__ == "DaskTaskRunner"
    kw = runner.cluster_kwargs
    assert kw["n_workers"] == 2 and kw["processes"] is True and kw["threads_per_worker"] == 1


@task
def _pid(i: int) -> int:
    return os.getpid()


@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def _toy(n: int = 3, task_runner: str = "threads", dask_workers: int | None = None) -> dict:
    runner = runners.task_runner_to_delegate(task_runner, dask_workers)
    if runner is not None:
        return _toy.with_options(task_runner=runner)(**runners.current_parameters())
    return {"pids": sorted({f.result() for f in _pid.map(range(n))}), "owner": runners.flow_run_owner()}


@pytest.mark.slow
def test_the_flow_re_runs_itself_on_the_chosen_runner(prefect_api):
    here = _toy()
    assert here["pids"] == [os.getpid()] and here["owner"].startswith("flow-run-")
    on_dask = _toy(task_runner="dask", dask_workers=1)
    assert len(on_dask["pids"]) == 1 and on_dask["pids"] != [os.getpid()]  # a worker process
    assert on_dask["owner"] != here["owner"]


def test_storage_block_reaches_fsspec_and_errors_never_show_its_content(prefect_api):
    import fsspec.config
    from prefect.blocks.system import Secret

    secret = "s2r-block-secret-31a9"
    Secret(value={"key": "k", "secret": secret, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}).save(
        "s2r-test-store", overwrite=True)
    saved = dict(fsspec.config.conf.get("s3", {}))
    try:
        assert not use_storage_block("/local/path/ds.zarr", "s2r-test-store")  # local: nothing to do
        assert use_storage_block("s3://bucket/ds.zarr", "s2r-test-store")
        assert fsspec.config.conf["s3"]["secret"] == secret
        Secret(value=f"not json {secret}").save("s2r-test-bad", overwrite=True)
        with pytest.raises(StorageCredentialsError, match="must be a JSON object") as e:
            use_storage_block("s3://bucket/ds.zarr", "s2r-test-bad")
        assert secret not in str(e.value)
        with pytest.raises(StorageCredentialsError, match="storage_block='s2r-missing': no Prefect Secret block"):
            use_storage_block("s3://bucket/ds.zarr", "s2r-missing")
    finally:
        fsspec.config.conf["s3"] = saved
