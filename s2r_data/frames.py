"""Geodetic ↔ local metric frame (one per city).

Frames used throughout s2r (documented once, here):

``lonlat_deg``
    WGS84 longitude/latitude in degrees (OSM, Mapillary ``geometry``/``computed_geometry``).
``local_m`` (a.k.a. ``xyz_local_m``)
    The city's single metric frame: ellipsoidal transverse Mercator (WGS84, k = 1) centred on the
    city's reference point; x = east (grid), y = north (grid), z = up, metres, z = 0 at the ground
    plane. The city mesh *and* the camera centres live here.
``enu_true``
    Local topocentric East-North-Up at a given point (true north). Mapillary's
    ``computed_rotation`` is world→camera with world = this frame. It differs from ``local_m`` by a
    rotation about the vertical: the meridian convergence γ at that point (≈0.1° at 10 km from the
    reference in Paris, which alone would use the 0.5 px alignment budget of a 2048-px pano).
``cam_opensfm``
    OpenSfM/Mapillary camera axes: x right, y down, z forward (see :mod:`s2r_data.poses`).
``cam_blender``
    Blender camera axes: x right, y up, −z forward (see :mod:`s2r_data.poses`).

All functions here are pure; angles are radians unless the name ends in ``_deg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyproj import Transformer

__all__ = ["LocalFrame"]


@dataclass(frozen=True)
class LocalFrame:
    """Transverse Mercator frame centred on (``ref_lon_deg``, ``ref_lat_deg``)."""

    ref_lon_deg: float
    ref_lat_deg: float
    _fwd: Transformer = field(init=False, repr=False, compare=False)
    _inv: Transformer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (-180.0 <= self.ref_lon_deg <= 180.0 and -85.0 <= self.ref_lat_deg <= 85.0):
            raise ValueError(
                f"reference point ({self.ref_lon_deg}, {self.ref_lat_deg}) is not a valid lon/lat in "
                "degrees (lon in [-180, 180], lat in [-85, 85]); check the order (lon, lat)"
            )
        crs = (
            f"+proj=tmerc +lat_0={self.ref_lat_deg!r} +lon_0={self.ref_lon_deg!r} +k=1 "
            "+x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
        )
        object.__setattr__(self, "_fwd", Transformer.from_crs("EPSG:4326", crs, always_xy=True))
        object.__setattr__(self, "_inv", Transformer.from_crs(crs, "EPSG:4326", always_xy=True))

    @property
    def proj_string(self) -> str:
        return self._fwd.target_crs.to_proj4()

    def lonlat_to_local(self, lon_deg, lat_deg):
        """WGS84 degrees → local grid (x east, y north) in metres. Vectorised."""
        x, y = self._fwd.transform(np.asarray(lon_deg, dtype=np.float64), np.asarray(lat_deg, dtype=np.float64))
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def local_to_lonlat(self, x_m, y_m):
        """Local grid metres → WGS84 degrees (lon, lat). Vectorised."""
        lon, lat = self._inv.transform(np.asarray(x_m, dtype=np.float64), np.asarray(y_m, dtype=np.float64))
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def grid_convergence_rad(self, lon_deg, lat_deg):
        """Angle θ (radians, clockwise from grid north) at which *true* north points in the grid.

        Computed numerically from the projection itself (a 1e-5° step north), so there is no
        sign convention to get wrong. θ = 0 on the central meridian.
        """
        lon = np.asarray(lon_deg, dtype=np.float64)
        lat = np.asarray(lat_deg, dtype=np.float64)
        d = 1e-5
        x0, y0 = self.lonlat_to_local(lon, lat - d)
        x1, y1 = self.lonlat_to_local(lon, lat + d)
        return np.arctan2(x1 - x0, y1 - y0)

    def R_enu_true_to_local(self, lon_deg: float, lat_deg: float) -> np.ndarray:
        """3×3 rotation taking vectors in true-north ENU at (lon, lat) into ``local_m`` axes."""
        th = float(self.grid_convergence_rad(lon_deg, lat_deg))
        c, s = np.cos(th), np.sin(th)
        # columns: images of true east, true north, up
        return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
