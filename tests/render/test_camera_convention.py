"""The Blender-side convention (notes §1.2: camera-local d = (sin λ cos φ, sin φ, −cos λ cos φ),
world = matrix_world·d, λ = 2π(c+0.5)/W − π, φ = π(0.5 − (r+0.5)/H)) composed with
s2r_data.poses.matrix_world_blender gives exactly s2r_data.equirect.pixel_to_ray_local. Pure
numpy property test; the renders in test_geometry.py check Blender itself."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.equirect import pixel_to_ray_local
from s2r_data.poses import Pose, matrix_world_blender, rodrigues

W, H = 512, 256


@settings(max_examples=200, deadline=None)
@given(
    rotvec=st.tuples(*[st.floats(-3.0, 3.0)] * 3),
    col=st.integers(0, W - 1),
    row=st.integers(0, H - 1),
)
def test_blender_pixel_ray_equals_equirect_ray(rotvec, col, row):
    pose = Pose("p", [1.0, 2.0, 3.0], rodrigues(rotvec))
    lam = 2 * np.pi * (col + 0.5) / W - np.pi
    phi = np.pi * (0.5 - (row + 0.5) / H)
    d_cam_blender = np.array([np.sin(lam) * np.cos(phi), np.sin(phi), -np.cos(lam) * np.cos(phi)])
    ray_blender = matrix_world_blender(pose)[:3, :3] @ d_cam_blender
    np.testing.assert_allclose(ray_blender, pixel_to_ray_local(col, row, pose, W, H), atol=1e-12)
