"""s2r data-side library: cities, frames, tiles, poses, equirect projection, OSM city model,
Mapillary client and replay server, render supervision, Zarr/Parquet dataset store.

Nothing in this package imports prefect or bpy at import time.
"""

__version__ = "0.1.0"
