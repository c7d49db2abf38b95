"""Environment defaults for running the flows without a Prefect server (ephemeral mode).

Prefect reads its settings from the environment when it first needs them, so call
:func:`use_local_prefect` *before* the first flow run (the demo and the tests do). It only
fills in variables the user has not set, so an exported ``PREFECT_API_URL`` (a real server)
always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["use_local_prefect", "EPHEMERAL_STARTUP_TIMEOUT_S"]

# The first ephemeral start on a fresh PREFECT_HOME creates and migrates the SQLite database:
# ~18 s on a quiet 2-core machine against Prefect's default timeout of 20 s. Be generous.
EPHEMERAL_STARTUP_TIMEOUT_S = 180


def use_local_prefect(prefect_home: str | os.PathLike | None = None) -> dict[str, str]:
    """Set (only if unset) the variables for a quiet, offline, ephemeral Prefect.

    ``prefect_home`` (if given) becomes ``PREFECT_HOME`` unless one is already exported, so
    the demo keeps its Prefect database and results inside ``outputs/``. Returns what was set.
    """
    wanted = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no phoning home; the demo runs offline
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(EPHEMERAL_STARTUP_TIMEOUT_S),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # no API URL → start a temporary server
        "PREFECT_UI_ENABLED": "false",
    }
    if prefect_home is not None:
        home = Path(prefect_home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        wanted["PREFECT_HOME"] = str(home)
    applied = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied
