"""The deployments' pull step (flows.worker_steps): a worker without $S2R_PROJECT_DIR fails the
flow run with a message that names the variable, before any flow code is imported."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from flows.worker_steps import ProjectDirError, project_directory, set_project_directory

from .conftest import REPO


@pytest.mark.parametrize(
    "value, match",
    [
        (None, r"\$S2R_PROJECT_DIR is not set"),
        ("  ", r"\$S2R_PROJECT_DIR is not set"),
        ("outputs", "relative path"),
        ("/no/such/s2r/checkout", "not a directory"),
    ],
)
def test_bad_project_dir_names_the_variable_and_the_fix(value, match):
    env = {} if value is None else {"S2R_PROJECT_DIR": value}
    with pytest.raises(ProjectDirError, match=match) as e:
        project_directory(env)
    assert "S2R_PROJECT_DIR=$PWD prefect worker start" in str(e.value)


def test_a_directory_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(ProjectDirError, match="not an s2r checkout .no flows/build_dataset.py"):
        project_directory({"S2R_PROJECT_DIR": str(tmp_path)})


def test_set_project_directory_enters_the_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S2R_PROJECT_DIR", str(REPO))
    assert set_project_directory() == {"directory": str(REPO.resolve())}
    assert Path.cwd() == REPO.resolve()


def _pull_steps() -> list[dict]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]


def test_prefect_yaml_pull_steps_fail_early_without_the_variable(prefect_api, monkeypatch, tmp_path):
    """Prefect's own step runner on the pull steps of prefect.yaml, as a worker runs them; the
    flow-run log shows the cause's message (prefect.flows.load_flow_from_flow_run)."""
    from prefect.deployments.steps.core import StepExecutionError, run_steps

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("S2R_PROJECT_DIR", raising=False)
    with pytest.raises(StepExecutionError) as e:
        asyncio.run(run_steps(_pull_steps()))
    assert isinstance(e.value.__cause__, ProjectDirError)
    assert "$S2R_PROJECT_DIR is not set" in str(e.value.__cause__)
    assert Path.cwd() == tmp_path.resolve()  # nothing was entered

    monkeypatch.setenv("S2R_PROJECT_DIR", str(REPO))
    out = asyncio.run(run_steps(_pull_steps()))
    assert out["directory"] == str(REPO.resolve()) and os.getcwd() == str(REPO.resolve())


def test_the_reason_reaches_the_flow_run_log(prefect_api, monkeypatch, tmp_path):
    """A worker prints a failed pull step only to its terminal: the step logs its message to the
    flow run being prepared (the worker sets $PREFECT__FLOW_RUN_ID)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    @flow
    def placeholder() -> None:
        pass

    async def logs_of_new_run() -> list[str]:
        async with get_client() as client:
            run = await client.create_flow_run(placeholder)
            monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(run.id))
            with pytest.raises(ProjectDirError):
                set_project_directory()
            await APILogHandler.aflush()
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            return [x.message for x in logs if x.level >= 40]

    monkeypatch.delenv("S2R_PROJECT_DIR", raising=False)
    (message,) = asyncio.run(logs_of_new_run())
    assert message.startswith("$S2R_PROJECT_DIR is not set in this worker's environment")
