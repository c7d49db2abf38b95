"""Credentials for a store on object storage: the environment, or a Prefect block — never a
parameter, never a log line.

By default s3fs/botocore find credentials and the endpoint themselves: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3`` (MinIO, any S3-compatible
server), instance roles; fsspec's ``FSSPEC_S3_*`` variables too. Set them in the worker's
environment (the work pool's ``job_variables.env`` or the Dask workers' environment).

Alternatively, save the fsspec storage options as a JSON object in a Prefect ``Secret`` block
(encrypted at rest on the server) and pass its **name** as the ``storage_block`` parameter::

    Secret(value={"key": "…", "secret": "…", "client_kwargs": {"endpoint_url": "https://minio:9000"}}
           ).save("s2r-store", overwrite=True)

Every task that opens the store loads the block itself, in its own process (the flow process
and each Dask worker), and hands the options to fsspec's configuration for that protocol
(``fsspec.config.conf``), so no value ever travels as a task argument or a parameter, and none
is logged. Errors name the block, never its content.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["StorageCredentialsError", "use_storage_block"]


class StorageCredentialsError(RuntimeError):
    pass


def _options_from_block(name: str) -> dict[str, Any]:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as e:  # Prefect: "Unable to find block document named …"
        raise StorageCredentialsError(
            f"storage_block={name!r}: no Prefect Secret block of that name on this server; save the fsspec storage "
            "options as one (docs/deployments.md, 'Store credentials'), or drop storage_block to use the environment"
        ) from e
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise StorageCredentialsError(
            f"storage_block={name!r}: its value must be a JSON object of fsspec storage options "
            '(e.g. {"key": …, "secret": …, "client_kwargs": {"endpoint_url": …}}); it is not (content not shown)'
        )
    return value


def use_storage_block(store_url: str, block_name: str | None) -> bool:
    """Apply the storage options saved in the Secret block ``block_name`` to fsspec in this
    process for ``store_url``'s protocol; no-op (False) for local stores or no block."""
    if not block_name or "://" not in store_url or store_url.startswith("file://"):
        return False
    import fsspec.config

    protocol = store_url.split("://", 1)[0]
    options = _options_from_block(block_name)
    fsspec.config.conf.setdefault(protocol, {}).update(options)
    return True
