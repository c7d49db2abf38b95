"""Fixtures for the flow tests: an isolated Prefect (ephemeral API in a temp PREFECT_HOME, set
before prefect is imported) and the sample city's Mapillary replay server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Prefect reads these when it is first imported (the flow modules import it at collection).
_PREFECT_HOME = tempfile.mkdtemp(prefix="s2r-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)  # never talk to a developer's server from the tests
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONTENT = REPO / "data" / "sample" / "replay"
TEST_TOKEN = "MLY|s2r-test|0123456789abcdef"


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole session (a fresh SQLite DB; ~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def sample_content() -> Path:
    if not (SAMPLE_CONTENT / "images.json").is_file():
        pytest.fail(
            f"{SAMPLE_CONTENT} has no images.json: generate the sample city's replay content with "
            "`python -m s2r_data.mapillary.sample_content --out data/sample/replay`"
        )
    return SAMPLE_CONTENT
