"""Deployment pull step: enter this machine's s2r checkout, named by ``$S2R_PROJECT_DIR``.

``prefect.yaml`` runs :func:`set_project_directory` on the worker at the start of every flow run
(``pull:``). Prefect's own ``set_working_directory`` with ``"{{ $S2R_PROJECT_DIR }}"`` turns an
unset variable into ``""`` and fails with ``FileNotFoundError: ''``; this step says which
variable is missing and how to set it, before any flow code is imported, in the flow run's log
(the worker prints a failed pull step's traceback only to its own terminal).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["PROJECT_DIR_VAR", "ProjectDirError", "project_directory", "set_project_directory"]

PROJECT_DIR_VAR = "S2R_PROJECT_DIR"
_MARKER = Path("flows") / "build_dataset.py"  # the deployments' entrypoints live in the checkout


class ProjectDirError(RuntimeError):
    """``$S2R_PROJECT_DIR`` is unset or does not point at an s2r checkout on this worker."""


def project_directory(environ: Mapping[str, str], variable: str = PROJECT_DIR_VAR) -> Path:
    """The checkout named by ``environ[variable]`` (absolute, resolved); raises :class:`ProjectDirError`
    naming the variable and the fix."""
    fix = (
        f"start the worker with {variable} set to the absolute path of this machine's s2r checkout "
        f"(the folder holding prefect.yaml), e.g. from the checkout: "
        f"`{variable}=$PWD prefect worker start --pool cpu-pool` (or gpu-pool)"
    )
    raw = environ.get(variable, "").strip()
    if not raw:
        raise ProjectDirError(f"${variable} is not set in this worker's environment, so the flow run cannot find the s2r code; {fix}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ProjectDirError(f"${variable}={raw!r} is a relative path (the flow run's directory is not the worker's); {fix}")
    if not path.is_dir():
        raise ProjectDirError(f"${variable}={raw!r} is not a directory on this machine; {fix}")
    if not (path / _MARKER).is_file():
        raise ProjectDirError(f"${variable}={raw!r} is not an s2r checkout (no {_MARKER.as_posix()} in it); {fix}")
    return path.resolve()


def set_project_directory(variable: str = PROJECT_DIR_VAR) -> dict[str, str]:
    """Pull step: ``chdir`` into the checkout; returns ``{"directory": ...}`` like Prefect's
    ``set_working_directory`` (relative parameters such as ``out_dir: outputs`` land inside it)."""
    try:
        path = project_directory(os.environ, variable)
    except ProjectDirError as e:
        _log_to_flow_run(str(e))
        raise
    os.chdir(path)
    return {"directory": str(path)}


def _log_to_flow_run(message: str) -> None:
    """Error line in the log of the flow run this process prepares (``$PREFECT__FLOW_RUN_ID``,
    set by the worker), so the UI shows why the run crashed."""
    from uuid import UUID

    from prefect.logging.loggers import flow_run_logger

    try:
        run_id = UUID(os.environ.get("PREFECT__FLOW_RUN_ID", ""))
    except ValueError:
        return
    flow_run_logger(flow_run_id=run_id).error(message)
