import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.frames import LocalFrame

PARIS = LocalFrame(2.2945, 48.8584)


def test_reference_point_is_origin():
    x, y = PARIS.lonlat_to_local(2.2945, 48.8584)
    assert abs(x) < 1e-6 and abs(y) < 1e-6


def test_axes_east_north():
    x, y = PARIS.lonlat_to_local(2.2945 + 0.01, 48.8584)
    assert x > 700 and abs(y) < 10  # 0.01° of longitude ≈ 733 m at 48.86°N
    x, y = PARIS.lonlat_to_local(2.2945, 48.8584 + 0.01)
    assert abs(x) < 1e-6 and 1110 < y < 1113  # 0.01° of latitude ≈ 1111.7 m


def test_known_distance_eiffel_to_notre_dame():
    # geodesic distance Eiffel Tower → Notre-Dame ≈ 4.17 km (WGS84); tmerc with k=1 distorts < 1e-6 here
    from pyproj import Geod

    lon2, lat2 = 2.3499, 48.8530
    x, y = PARIS.lonlat_to_local(lon2, lat2)
    d = Geod(ellps="WGS84").inv(2.2945, 48.8584, lon2, lat2)[2]
    assert abs(np.hypot(x, y) - d) < 0.01


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-180, 180),
    st.floats(-80, 80),
    st.floats(0, 2 * np.pi),
    st.floats(0, 20_000),
)
def test_round_trip_within_20km_is_below_1mm(lon0, lat0, bearing, dist_m):
    f = LocalFrame(lon0, lat0)
    x, y = dist_m * np.sin(bearing), dist_m * np.cos(bearing)
    lon, lat = f.local_to_lonlat(x, y)
    x2, y2 = f.lonlat_to_local(lon, lat)
    assert np.hypot(x2 - x, y2 - y) < 1e-3


def test_grid_convergence_sign_and_size():
    # east of the central meridian in the northern hemisphere, true north leans west of grid north
    th = float(PARIS.grid_convergence_rad(2.2945 + 0.1, 48.8584))
    assert th < 0
    # γ ≈ Δλ·sin φ
    assert abs(th - (-np.radians(0.1) * np.sin(np.radians(48.8584)))) < 1e-5
    assert abs(float(PARIS.grid_convergence_rad(2.2945, 48.9))) < 1e-9


def test_R_enu_true_to_local_maps_true_north_onto_projected_meridian():
    lon, lat = 2.40, 48.85
    R = PARIS.R_enu_true_to_local(lon, lat)
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
    x0, y0 = PARIS.lonlat_to_local(lon, lat)
    x1, y1 = PARIS.lonlat_to_local(lon, lat + 1e-4)
    north_grid = np.array([x1 - x0, y1 - y0, 0.0])
    north_grid /= np.linalg.norm(north_grid)
    assert np.allclose(R @ [0, 1, 0], north_grid, atol=1e-8)


def test_bad_reference_point():
    with pytest.raises(ValueError, match="lon, lat"):
        LocalFrame(48.85, 200.0)
