"""Where the Mapillary access token comes from: ``$MAPILLARY_TOKEN`` or the Prefect Secret
block ``mapillary-token``.

The token is loaded *inside* the task that talks to Mapillary. It is never a flow parameter
(Prefect would store it in plain text with the run), never a task argument (it would enter
cache keys and task-run records) and never logged.
"""

from __future__ import annotations

import os

__all__ = ["TOKEN_ENV", "SECRET_BLOCK", "MissingTokenError", "load_mapillary_token"]

TOKEN_ENV = "MAPILLARY_TOKEN"
SECRET_BLOCK = "mapillary-token"

_HOW_TO = (
    f"get a client token at https://www.mapillary.com/dashboard/developers, then either export "
    f"{TOKEN_ENV}=MLY|... in the environment of the worker (or the deployment's job_variables.env), "
    f"or store it once in the Prefect server: "
    f"python -c \"from prefect.blocks.system import Secret; Secret(value='MLY|...').save('{SECRET_BLOCK}', overwrite=True)\""
)


class MissingTokenError(RuntimeError):
    """No Mapillary token in the environment nor in the Secret block."""


def _from_secret_block() -> str | None:
    try:
        from prefect.blocks.system import Secret

        block = Secret.load(SECRET_BLOCK)
    except ValueError:  # "Unable to find block document named mapillary-token ..."
        return None
    value = block.get()
    return str(value).strip() or None


def load_mapillary_token(*, use_secret_block: bool = True) -> str:
    """The token from ``$MAPILLARY_TOKEN`` (first) or the Secret block ``mapillary-token``.

    Raises :class:`MissingTokenError` with the two ways to provide one.
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if use_secret_block:
        token = _from_secret_block()
        if token:
            return token
    raise MissingTokenError(
        f"no Mapillary access token: neither ${TOKEN_ENV} is set nor does a Prefect Secret block "
        f"named {SECRET_BLOCK!r} exist; {_HOW_TO}"
    )
