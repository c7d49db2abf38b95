"""Mapillary harvester (coverage tiles → Graph → images) and its local replay server.

Public surface::

    from s2r_data.mapillary import HarvestConfig, harvest_city, harvest_tiles, merge_harvest_tables
    from s2r_data.mapillary.replay import ReplayServer, FaultConfig   # tests, demo, benchmark

``harvest_city(city, out_dir, config, token)`` writes ``out_dir/images/<id>.jpg`` and
``out_dir/harvest.parquet`` (one row per panorama id, ``status`` + ``reason``).
"""

from .config import GRAPH_FIELDS, HarvestConfig
from .errors import MapillaryAuthError, MapillaryBlockedError, MapillaryError, MapillaryRequestError
from .harvest import TOKEN_ENV, HarvestReport, harvest_city, harvest_tiles, resolve_token, tile_part_complete
from .redact import Redactor, redact_url
from .table import SCHEMA, merge_harvest_tables, read_table, tile_part_path

__all__ = [
    "GRAPH_FIELDS",
    "HarvestConfig",
    "HarvestReport",
    "MapillaryAuthError",
    "MapillaryBlockedError",
    "MapillaryError",
    "MapillaryRequestError",
    "Redactor",
    "SCHEMA",
    "TOKEN_ENV",
    "harvest_city",
    "harvest_tiles",
    "merge_harvest_tables",
    "read_table",
    "redact_url",
    "resolve_token",
    "tile_part_complete",
    "tile_part_path",
]
