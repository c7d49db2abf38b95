"""flows.mapillary_token: env first, then the Secret block, else a clear error."""

import pytest

from flows import mapillary_token as mt


def test_env_token_wins(monkeypatch):
    monkeypatch.setenv("MAPILLARY_TOKEN", "  MLY|env|1 ")
    monkeypatch.setattr(mt, "_from_secret_block", lambda: pytest.fail("Secret block consulted although the env var is set"))
    assert mt.load_mapillary_token() == "MLY|env|1"


def test_secret_block_used_when_env_empty(monkeypatch):
    monkeypatch.setenv("MAPILLARY_TOKEN", "")
    monkeypatch.setattr(mt, "_from_secret_block", lambda: "MLY|block|2")
    assert mt.load_mapillary_token() == "MLY|block|2"


def test_missing_token_message_names_both_sources(monkeypatch):
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    monkeypatch.setattr(mt, "_from_secret_block", lambda: None)
    with pytest.raises(mt.MissingTokenError) as ei:
        mt.load_mapillary_token()
    msg = str(ei.value)
    assert "MAPILLARY_TOKEN" in msg and "'mapillary-token'" in msg and "Secret" in msg
