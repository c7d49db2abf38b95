"""Errors raised while turning an OSM extract into a :class:`~s2r_data.citymodel.CityModel`.

Every bad input gets exactly one of these, with a message that names the file or city and says
what to do about it. All derive from :class:`OSMError`, itself a
:class:`~s2r_data.citymodel.CityModelError`, so callers that only know the city-model contract
can catch those.
"""

from __future__ import annotations

from ..citymodel import CityModelError

__all__ = [
    "OSMError",
    "OSMFileMissingError",
    "OSMFileCorruptError",
    "NoBuildingsError",
    "OutsideExtentError",
    "OSMPathIsFolderError",
    "FlatLayerAreaError",
]


class OSMError(CityModelError):
    """Base class of the OSM builder's errors."""


class OSMFileMissingError(OSMError, FileNotFoundError):
    """The city's OSM file does not exist (or its URL source was not downloaded)."""


class OSMFileCorruptError(OSMError):
    """The OSM file cannot be parsed, or holds no OSM objects at all."""


class NoBuildingsError(OSMError):
    """The extract covers the city polygon but no building intersects it."""


class OutsideExtentError(OSMError):
    """The city polygon does not overlap the extract's extent (wrong file or wrong city)."""


class OSMPathIsFolderError(OSMError, IsADirectoryError):
    """The OSM path names a folder, not an OSM file."""


class FlatLayerAreaError(OSMError):
    """A flat layer's mesh lost area against the union it was built from (a builder bug)."""
