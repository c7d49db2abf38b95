"""Where ``build-dataset``'s tasks run: threads in the flow process, or Dask worker processes.

``task_runner`` (a flow parameter, so deployments and ``--param`` choose it per run):

* ``"threads"`` (default): the flow's own bounded ``ThreadPoolTaskRunner`` (``$S2R_TASK_WORKERS``).
* ``"dask"``: a temporary ``distributed.LocalCluster`` of ``dask_workers`` worker processes
  (default: this machine's cores), one task at a time each, closed when the run ends.
* ``"tcp://host:8786"`` (any ``tcp://``/``tls://``/``ws(s)://`` address): an existing Dask scheduler
  with its workers (docs/deployments.md, "A Dask cluster").

Prefect 3 fixes a flow's task runner when the flow is decorated, so the flow cannot switch
runners in its own run. :func:`task_runner_to_delegate` gives the flow the runner to re-run
itself on: ``build_dataset`` calls ``build_dataset.with_options(task_runner=…)`` with its own
parameters as a subflow run, whose tasks (harvest tiles, render batches) then run on the Dask
workers; that subflow sees a Dask runner and does the work. The subflow's result is the run's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "TaskRunnerChoice",
    "TaskRunnerChoiceError",
    "parse_task_runner",
    "task_runner_to_delegate",
    "current_parameters",
    "render_threads_here",
    "flow_run_owner",
]

_ADDRESS_RE = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+$")


class TaskRunnerChoiceError(ValueError):
    """``task_runner`` / ``dask_workers`` parameters that name no usable runner."""


@dataclass(frozen=True)
class TaskRunnerChoice:
    kind: Literal["threads", "dask-local", "dask-address"]
    address: str | None = None
    n_workers: int | None = None

    def describe(self) -> str:
        if self.kind == "threads":
            return "threads in the flow process"
        if self.kind == "dask-local":
            return f"a local Dask cluster of {self.n_workers} worker processes"
        return f"the Dask cluster at {self.address}"


def parse_task_runner(task_runner: str, dask_workers: int | None = None) -> TaskRunnerChoice:
    value = str(task_runner).strip()
    if dask_workers is not None and (not isinstance(dask_workers, int) or dask_workers < 1):
        raise TaskRunnerChoiceError(f"dask_workers={dask_workers!r}: must be an integer >= 1 (or null: one per core)")
    if value == "threads":
        if dask_workers is not None:
            raise TaskRunnerChoiceError("dask_workers is given, but task_runner='threads': use task_runner='dask'")
        return TaskRunnerChoice("threads")
    if value == "dask":
        return TaskRunnerChoice("dask-local", n_workers=dask_workers or max(1, os.cpu_count() or 1))
    if _ADDRESS_RE.match(value):
        if dask_workers is not None:
            raise TaskRunnerChoiceError(
                f"dask_workers={dask_workers} cannot size the existing cluster at {value}: start more workers there"
            )
        return TaskRunnerChoice("dask-address", address=value)
    raise TaskRunnerChoiceError(
        f"task_runner={task_runner!r}: use 'threads' (default), 'dask' (a local cluster of processes) or the address "
        "of a running Dask scheduler, e.g. 'tcp://scheduler:8786'"
    )


def _build_dask_runner(choice: TaskRunnerChoice) -> Any:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:  # pragma: no cover - part of the scaleout extra
        raise TaskRunnerChoiceError(
            f"task_runner={choice.address or 'dask'} needs prefect-dask and distributed: pip install -e '.[scaleout]'"
        ) from e
    if choice.kind == "dask-address":
        return DaskTaskRunner(address=choice.address)
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the local scheduler lives in this process
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": choice.n_workers,
            "processes": True,  # render and write in separate processes: no GIL between batches
            "threads_per_worker": 1,  # one batch (one Blender process) per worker at a time
            "dashboard_address": None,
            "silence_logs": 30,  # WARNING: no per-worker INFO chatter in the flow's log
        },
    )


def task_runner_to_delegate(task_runner: str, dask_workers: int | None) -> Any | None:
    """The runner this flow run must re-run itself on, or None when the current run is on the
    right one (threads asked for, or already on Dask: the delegated subflow). Raises
    :class:`TaskRunnerChoiceError` for bad parameters before anything runs."""
    from prefect.context import FlowRunContext

    choice = parse_task_runner(task_runner, dask_workers)
    if choice.kind == "threads":
        return None
    ctx = FlowRunContext.get()
    current = type(ctx.task_runner).__name__ if ctx is not None and ctx.task_runner is not None else ""
    if current == "DaskTaskRunner":
        return None
    return _build_dask_runner(choice)


def current_parameters() -> dict[str, Any]:
    """This flow run's parameters (defaults filled in), to start the same run on another runner."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return dict(ctx.parameters) if ctx is not None else {}


def flow_run_owner() -> str:
    """Who holds this run's write leases on an object store: the flow run (so a render batch that
    Dask re-runs after its worker died takes over its own leases at once)."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return f"flow-run-{run_id}" if run_id else f"process-{os.getpid()}"


_threads_here: int | None = None


def render_threads_here(default: int) -> int:
    """Blender threads for one render batch here: ``default`` (the flow's share of its machine)
    outside Dask; on a Dask worker, the host's cores divided by the task threads of all Dask
    workers on this host (asked once per process from the scheduler)."""
    global _threads_here
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not in a Dask worker
        return default
    if _threads_here is None:
        host = worker.address.rsplit(":", 1)[0]
        try:
            infos = get_client().scheduler_info().get("workers", {})
            slots = sum(int(w.get("nthreads", 1)) for addr, w in infos.items() if addr.rsplit(":", 1)[0] == host)
        except Exception:  # noqa: BLE001 - no scheduler answer: assume this worker is alone on the host
            slots = worker.state.nthreads
        _threads_here = max(1, (os.cpu_count() or 1) // max(1, slots))
    return _threads_here
