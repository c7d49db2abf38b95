"""A small synthetic street for the alignment tests: OSM-like extruded buildings along a road, a
ray caster over it, and stand-in "photos" shaded from ray-cast passes (class colours, sun shading
per face, a sky gradient, noise)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import shapely

from s2r_data.citymodel import CLASS_BY_NAME, CityModel, Mesh
from s2r_data.osm.mesh import clean_polygons, extrude_polygons, flat_polygons
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll
from s2r_data.render.raycast import RaycastScene

# (x0, y0, x1, y1, height) footprints on both sides of a road along y (x in [-6, 6])
BUILDINGS = [
    (-30, -40, -9, -20, 12), (-28, -14, -10, 4, 18), (-34, 10, -12, 26, 9), (-25, 32, -9, 55, 24),
    (9, -45, 27, -28, 15), (10, -22, 30, -3, 10), (9, 5, 22, 20, 21), (12, 26, 35, 48, 13), (40, 60, 60, 90, 60),
]
GROUND_HALF_M = 200.0


def street_model(buildings=BUILDINGS, *, offset_m: tuple[float, float] = (0.0, 0.0)) -> CityModel:
    dx, dy = offset_m
    polys = np.array([shapely.box(x0 + dx, y0 + dy, x1 + dx, y1 + dy) for x0, y0, x1, y1, _ in buildings], dtype=object)
    polys, src = clean_polygons(polys)
    tops = np.array([b[4] for b in buildings], dtype=np.float64)[src]
    ext = extrude_polygons(polys, np.zeros(len(polys)), tops)
    road, _ = flat_polygons(clean_polygons(np.array([shapely.box(-6, -150, 6, 150), shapely.box(-150, -72, 150, -64)], dtype=object))[0], 0.02)
    green, _ = flat_polygons(clean_polygons(np.array([shapely.box(-8.5, -4, -7, 30)], dtype=object))[0], 0.015)
    h = GROUND_HALF_M
    ground = Mesh(np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], float), np.array([[0, 1, 2], [0, 2, 3]]))
    return CityModel({"wall": ext.walls, "roof": ext.roofs, "road": road, "green": green, "ground": ground},
                     shapely.to_wkb(shapely.union_all(polys)), {"city": "align-test"})


@lru_cache(maxsize=4)
def street_scene(offset_m: tuple[float, float] = (0.0, 0.0), *, buildings: bool = True) -> tuple[CityModel, RaycastScene]:
    """The street (its buildings moved by ``offset_m``), or only its road and ground."""
    model = street_model(BUILDINGS if buildings else [], offset_m=offset_m)
    return model, RaycastScene(model, threads=2)


def camera(x: float, y: float, heading_deg: float = 0.0, *, pitch_deg: float = 0.0, roll_deg: float = 0.0, z: float = 2.5,
           image_id: str = "pano") -> Pose:
    return Pose(image_id, [x, y, z], rotation_from_heading_pitch_roll(heading_deg, pitch_deg, roll_deg))


_COLOURS = {
    CLASS_BY_NAME["ground"].index: (0.55, 0.53, 0.50),
    CLASS_BY_NAME["road"].index: (0.16, 0.16, 0.18),
    CLASS_BY_NAME["green"].index: (0.20, 0.45, 0.12),
    CLASS_BY_NAME["wall"].index: (0.78, 0.70, 0.58),
    CLASS_BY_NAME["roof"].index: (0.45, 0.20, 0.15),
}
SUN = np.array([0.5, -0.3, 0.81]) / np.linalg.norm([0.5, -0.3, 0.81])


def pseudo_photo(scene: RaycastScene, pose: Pose, width: int, *, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """(H, W, 3) uint8 stand-in photo of ``pose``: class colours × Lambert sun shading, a sky gradient."""
    p = scene.render(pose, width)
    lab = p.label[0]
    n = p.normal.astype(np.float32)
    H = lab.shape[0]
    # sun + a sky term that differs by facade orientation (as real facades do), so corners show
    shade = 0.45 + 0.45 * np.clip(np.einsum("chw,c->hw", n, SUN), 0, 1) + 0.12 * n[0] - 0.07 * n[1]
    img = np.zeros((H, width, 3), np.float32)
    for k, col in _COLOURS.items():
        m = lab == k
        img[m] = np.asarray(col, np.float32) * shade[m, None]
    rows = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    sky = np.stack([0.45 + 0.35 * rows, 0.6 + 0.3 * rows, 0.9 + 0.05 * rows], -1) * np.ones((1, width, 1), np.float32)
    img = np.where((lab == 0)[..., None], sky, img)
    img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
