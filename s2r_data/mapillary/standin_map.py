"""``truth_map.png``: the realistic stand-in world from above, truth against what is reported.

Stand-in data generation only. Drawn with PIL (no extra dependency), around the captured area:
OSM footprints (grey outlines) over the true footprints (filled), occluders (trees green, vehicles
dark blue, poles black, people orange), per sequence the true camera track (blue line, dots) and
each reported position (red dot, a red line from its true position; a ring for gross errors, a
square for images without ``computed_rotation``). Scale bar and grid north arrow.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import shapely
from PIL import Image, ImageDraw

from ..preview import _font, _nice_length

__all__ = ["truth_map_png"]

_OCCLUDER_RGB = {"tree": (60, 150, 60), "vehicle": (40, 50, 110), "van": (40, 50, 110), "pole": (20, 20, 20), "person": (230, 130, 30)}


def truth_map_png(
    truth: dict[str, Any],
    osm_footprints: shapely.Geometry,
    true_footprints: shapely.Geometry,
    *,
    max_px: int = 1400,
    margin_m: float = 40.0,
) -> bytes:
    """PNG bytes of the map of a truth document (:mod:`.standin_truth` format)."""
    images = truth["images"]
    xy_true = np.array([v["true_pose"]["center_local_m"][:2] for v in images.values()]).reshape(-1, 2)
    xy_rep = np.array([v["reported_pose"]["center_local_m"][:2] for v in images.values()]).reshape(-1, 2)
    pts = np.concatenate([xy_true, xy_rep]) if len(xy_true) else np.zeros((1, 2))
    x0, y0 = pts.min(0) - margin_m
    x1, y1 = pts.max(0) + margin_m
    scale = max_px / max(x1 - x0, y1 - y0)  # px per metre
    W, H = int(math.ceil((x1 - x0) * scale)), int(math.ceil((y1 - y0) * scale))
    img = Image.new("RGB", (W, H), (236, 234, 228))
    d = ImageDraw.Draw(img)

    def px(x: float, y: float) -> tuple[float, float]:
        return (x - x0) * scale, (y1 - y) * scale

    def rings(g: shapely.Geometry) -> list[list[tuple[float, float]]]:
        box = shapely.box(x0, y0, x1, y1)
        out = []
        for poly in shapely.get_parts(shapely.intersection(g, box)):
            if poly.geom_type == "Polygon":
                out.append([px(*c) for c in poly.exterior.coords])
        return out

    for ring in rings(true_footprints):
        d.polygon(ring, fill=(200, 185, 160))
    for ring in rings(osm_footprints):
        d.line(ring, fill=(90, 90, 90), width=2)
    r_occ = max(1.5, 0.4 * scale)
    for o in truth["occluders"]:
        x, y = px(*o["xy_m"])
        if 0 <= x < W and 0 <= y < H:
            r = o["size"].get("crown_radius_m", 0.0) * scale if o["kind"] == "tree" else r_occ
            d.ellipse([x - r, y - r, x + r, y + r], outline=_OCCLUDER_RGB.get(o["kind"], (0, 0, 0)), width=1)
    for seq in truth["sequences"].values():
        track = [px(*images[i]["true_pose"]["center_local_m"][:2]) for i in seq["image_ids"]]
        if len(track) > 1:
            d.line(track, fill=(40, 90, 220), width=2)
    r = max(2.0, 0.35 * scale)
    for v in images.values():
        tx, ty = px(*v["true_pose"]["center_local_m"][:2])
        rx, ry = px(*v["reported_pose"]["center_local_m"][:2])
        d.line([(tx, ty), (rx, ry)], fill=(220, 40, 40), width=1)
        d.ellipse([tx - r, ty - r, tx + r, ty + r], fill=(40, 90, 220))
        if v["has_rotation"]:
            d.ellipse([rx - r, ry - r, rx + r, ry + r], fill=(220, 40, 40))
        else:
            d.rectangle([rx - r, ry - r, rx + r, ry + r], fill=(220, 40, 40))
        if v["gross"]:
            d.ellipse([rx - 2.5 * r, ry - 2.5 * r, rx + 2.5 * r, ry + 2.5 * r], outline=(220, 40, 40), width=2)
    font = _font(14)
    bar_m = _nice_length((x1 - x0) / 5)
    d.line([(12, H - 16), (12 + bar_m * scale, H - 16)], fill=(0, 0, 0), width=3)
    d.text((12, H - 36), f"{bar_m:g} m", fill=(0, 0, 0), font=font)
    d.line([(W - 20, 74), (W - 20, 44)], fill=(0, 0, 0), width=2)
    d.polygon([(W - 26, 52), (W - 20, 40), (W - 14, 52)], fill=(0, 0, 0))
    d.text((W - 26, 78), "N", fill=(0, 0, 0), font=font)
    lines = (f"{truth['city']}: {len(images)} panoramas, {len(truth['sequences'])} sequences, {len(truth['occluders'])} occluders. "
             "Blue: true camera track; red: reported position (ring: gross error, square: no computed_rotation).",
             "Grey outline: OSM footprint; fill: true building. Circles: tree crowns (green), vehicles (blue), poles, people (orange).")
    d.rectangle([0, 0, W, 36], fill=(255, 255, 255))
    for k, text in enumerate(lines):
        d.text((6, 3 + 16 * k), text, fill=(0, 0, 0), font=_font(12))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()

