"""OpenStreetMap extract → :class:`~s2r_data.citymodel.CityModel` (meshes per class in ``local_m``).

Public API::

    build_city_model(city, *, margin_m=200.0, level_height_m=3.0, max_height_m=500.0, osm_path=None,
                     registry=None) -> CityModel
    build_or_load_city_model(city, out_dir, *, force=False, margin_m=200.0, ...) -> Path

CLI: ``python -m s2r_data.osm build --city sample --out outputs/city/sample``.

Modules: :mod:`.reader` (pyosmium I/O, sorting of unsorted input), :mod:`.classify` (tags →
class, road/waterway width tables), :mod:`.heights` (height tags, units, untagged defaults),
:mod:`.buildings` (outline/part resolution), :mod:`.mesh` (cleaning, extrusion, earcut),
:mod:`.repair` (invalid closed ways, dropped-feature reasons), :mod:`.layer_areas` (flat-layer
area bookkeeping and checks), :mod:`.builder` (pipeline, cache), :mod:`.errors`. Output is OSM-derived: © OpenStreetMap
contributors, ODbL 1.0.
"""

from .builder import (
    ATTRIBUTION,
    BUILDER_VERSION,
    MODEL_FILENAME,
    BuildConfig,
    build_city_model,
    build_or_load_city_model,
)
from .errors import (
    FlatLayerAreaError,
    NoBuildingsError,
    OSMError,
    OSMFileCorruptError,
    OSMFileMissingError,
    OSMPathIsFolderError,
    OutsideExtentError,
)

__all__ = [
    "ATTRIBUTION",
    "BUILDER_VERSION",
    "MODEL_FILENAME",
    "BuildConfig",
    "build_city_model",
    "build_or_load_city_model",
    "OSMError",
    "OSMFileMissingError",
    "OSMFileCorruptError",
    "NoBuildingsError",
    "OutsideExtentError",
    "OSMPathIsFolderError",
    "FlatLayerAreaError",
]
