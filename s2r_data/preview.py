"""Top-down preview PNG of a :class:`~s2r_data.citymodel.CityModel` (PIL only; no bpy).

Layers are drawn in their DiffCol class colours (linear → sRGB), in height order: ground,
water, green, roads, then building shadows (an oblique projection of the walls, light from the
north-west) and roofs shaded by height (darker = lower). The city polygon (without the build
margin) is a dashed line. Overlays: title, a layer legend with the area of roads, water and green
(hectares, and the share of the clip polygon: a city without its streets shows at a glance),
height legend, scale bar, north arrow (grid north of ``local_m``) and the ODbL attribution
"© OpenStreetMap contributors, ODbL". Drawn at 2× and downsampled for anti-aliasing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_path
from .citymodel import CLASS_BY_NAME, CityModel, Mesh

__all__ = ["linear_to_srgb", "render_topdown_png", "layer_legend", "ATTRIBUTION_TEXT"]

ATTRIBUTION_TEXT = "© OpenStreetMap contributors, ODbL"
_SUPERSAMPLE = 2
_SHADOW_DIR = np.array([0.35, -0.35])  # map-metres of shadow offset per metre of height (light from NW)
_SHADOW_ALPHA = 0.38


def linear_to_srgb(c) -> np.ndarray:
    """Linear RGB in [0, 1] → sRGB-encoded [0, 1] (IEC 61966-2-1 transfer function)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def _rgb8(c) -> tuple[int, int, int]:
    v = np.round(np.clip(np.asarray(c, dtype=np.float64), 0, 1) * 255).astype(int)
    return int(v[0]), int(v[1]), int(v[2])


def _class_rgb(name: str) -> np.ndarray:
    return linear_to_srgb(CLASS_BY_NAME[name].colour_linear)


def _font(size_px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _nice_length(target_m: float) -> float:
    k = 10 ** math.floor(math.log10(max(target_m, 1e-9)))
    for f in (5, 2, 1):
        if f * k <= target_m:
            return f * k
    return k


def _fmt_m(v: float) -> str:
    return f"{v / 1000:g} km" if v >= 1000 else f"{v:g} m"


def _fmt_area(m2: float) -> str:
    """Hectares (the default font has no superscript ²)."""
    ha = m2 / 10_000.0
    return f"{ha:,.2f} ha" if ha < 10 else f"{ha:,.1f} ha" if ha < 1000 else f"{ha:,.0f} ha"


def layer_legend(model: CityModel) -> list[tuple[str, str]]:
    """``(class name, text)`` rows of the layer legend: the area of each flat layer's mesh and its
    share of the clip polygon (``meta["clip_area_m2"]``; the ground quad for older models)."""
    clip_m2 = float(model.meta.get("clip_area_m2") or model.meshes["ground"].area_xy_m2())
    rows = []
    for name in ("road", "water", "green"):
        area = model.meshes[name].area_xy_m2()
        share = f" · {100 * area / clip_m2:.1f} %" if clip_m2 > 0 else ""
        rows.append((name, f"{name} {_fmt_area(area)}{share}"))
    return rows


class _Canvas:
    def __init__(self, bounds_m: tuple[float, float, float, float], px_per_m: float, ss: int) -> None:
        self.x0, self.y0, self.x1, self.y1 = bounds_m
        self.s = px_per_m * ss
        self.W = max(1, int(math.ceil((self.x1 - self.x0) * self.s)))
        self.H = max(1, int(math.ceil((self.y1 - self.y0) * self.s)))

    def px(self, xy_m: np.ndarray) -> np.ndarray:
        xy_m = np.asarray(xy_m, dtype=np.float64)
        return np.column_stack([(xy_m[:, 0] - self.x0) * self.s, (self.y1 - xy_m[:, 1]) * self.s])


def _draw_triangles(draw: ImageDraw.ImageDraw, canvas: _Canvas, mesh: Mesh, fill) -> None:
    if len(mesh.triangles) == 0:
        return
    p = canvas.px(mesh.vertices_local_m[:, :2])[mesh.triangles]  # (M, 3, 2)
    for tri in p.reshape(-1, 6).tolist():
        draw.polygon(tri, fill=fill)


def _wall_quads(walls: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """(bottom a, bottom b, top b, top a) xy and height per side-wall quad (pairs of triangles)."""
    v, t = walls.vertices_local_m.astype(np.float64), walls.triangles
    n = walls.face_normals()
    side = np.flatnonzero(np.abs(n[:, 2]) < 0.5)
    first = side[(t[side, 0] == t[np.minimum(side + 1, len(t) - 1), 0])]  # (k, nxt, P+nxt),(k, P+nxt, P+k)
    first = first[first + 1 < len(t)]
    a, b, btop = t[first, 0], t[first, 1], t[first, 2]
    atop = t[first + 1, 2]
    quads = np.stack([v[a], v[b], v[btop], v[atop]], axis=1)
    return quads, quads[:, 2, 2]


def render_topdown_png(
    model: CityModel, path: str | Path, px_per_m: float | None = None, *, max_size_px: int = 2048
) -> Path:
    """Write a top-down preview of ``model`` to ``path`` (PNG, atomically) and return the path.

    ``px_per_m`` defaults to 2 px/m, lowered so the longer side fits ``max_size_px``.
    """
    path = Path(path)
    ground = model.meshes["ground"]
    if len(ground.vertices_local_m):
        lo, hi = ground.vertices_local_m.min(0), ground.vertices_local_m.max(0)
    else:
        lo, hi = (np.asarray(b) for b in model.bbox_local_m())
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
    scale = min(px_per_m if px_per_m is not None else 2.0, max_size_px / extent)
    canvas = _Canvas((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), scale, _SUPERSAMPLE)
    img = Image.new("RGB", (canvas.W, canvas.H), _rgb8(_class_rgb("ground")))
    draw = ImageDraw.Draw(img)
    for name in ("water", "green", "road"):  # increasing z
        _draw_triangles(draw, canvas, model.meshes[name], _rgb8(_class_rgb(name)))

    walls, roofs = model.meshes["wall"], model.meshes["roof"]
    # shadows: oblique projection of each wall quad (top edge shifted by height × direction)
    if len(walls.triangles):
        quads, _ = _wall_quads(walls)
        xy = quads[:, :, :2] + quads[:, :, 2:3] * _SHADOW_DIR
        pq = canvas.px(xy.reshape(-1, 2)).reshape(-1, 8)
        mask = Image.new("L", img.size, 0)
        mdraw = ImageDraw.Draw(mask)
        for q in pq.tolist():
            mdraw.polygon(q, fill=255)
        shadow = Image.new("RGB", img.size, (20, 20, 30))
        img = Image.composite(shadow, img, mask.point(lambda a: int(a * _SHADOW_ALPHA)))
        draw = ImageDraw.Draw(img)

    h_ref = 30.0
    if len(roofs.triangles):
        v, t = roofs.vertices_local_m, roofs.triangles
        z = v[t[:, 0], 2].astype(np.float64)
        h_ref = max(15.0, float(np.percentile(z, 99)))
        shade = np.clip(z / h_ref, 0, 1)
        base = _class_rgb("roof")
        low, high = base * 0.55, base + (1 - base) * 0.55
        cols = low[None, :] + (high - low)[None, :] * shade[:, None]
        cols8 = np.round(np.clip(cols, 0, 1) * 255).astype(int).tolist()
        p = canvas.px(v[:, :2])[t].reshape(-1, 6).tolist()
        for i in np.argsort(z, kind="stable").tolist():
            draw.polygon(p[i], fill=tuple(cols8[i]))
        fp = model.footprints()
        if not fp.is_empty and scale >= 0.5:  # outlines would swamp small buildings when zoomed out
            edge = _rgb8(base * 0.35)
            for ring in shapely.get_rings(shapely.get_parts(fp)).tolist():
                coords = canvas.px(shapely.get_coordinates(ring)).ravel().tolist()
                draw.line(coords, fill=edge, width=max(1, _SUPERSAMPLE))

    _draw_city_boundary(draw, canvas, model)
    img = img.resize((max(1, canvas.W // _SUPERSAMPLE), max(1, canvas.H // _SUPERSAMPLE)), Image.LANCZOS)
    _overlays(img, model, scale, h_ref)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return path


def _draw_city_boundary(draw: ImageDraw.ImageDraw, canvas: _Canvas, model: CityModel) -> None:
    """The city polygon (before the margin) as a dashed line, from ``meta`` (skipped if absent)."""
    boundary, ref = model.meta.get("boundary_lonlat"), model.meta.get("reference_lonlat")
    if not boundary or not ref:
        return
    from .frames import LocalFrame

    ring = shapely.segmentize(shapely.LinearRing(boundary), 0.0005)
    lonlat = shapely.get_coordinates(ring)
    x, y = LocalFrame(*ref).lonlat_to_local(lonlat[:, 0], lonlat[:, 1])
    pts = canvas.px(np.column_stack([x, y]))
    seg = np.diff(pts, axis=0)
    dist = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    dash = 8.0 * _SUPERSAMPLE
    t = np.arange(0.0, dist[-1], dash)
    xs, ys = np.interp(t, dist, pts[:, 0]), np.interp(t, dist, pts[:, 1])
    for i in range(0, len(t) - 1, 2):
        draw.line([(xs[i], ys[i]), (xs[i + 1], ys[i + 1])], fill=(40, 40, 48), width=2 * _SUPERSAMPLE)


def _panel(draw: ImageDraw.ImageDraw, box, radius: int) -> None:
    draw.rounded_rectangle(box, radius=radius, fill=(255, 255, 255, 200), outline=(60, 60, 60, 220), width=1)


def _overlays(img: Image.Image, model: CityModel, px_per_m: float, h_ref: float) -> None:
    W, H = img.size
    u = max(10, min(W, H) // 60)  # layout unit (px)
    f_small, f_big = _font(u), _font(int(u * 1.35))
    over = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    ink = (25, 25, 25, 255)

    # title
    counts = model.meta.get("counts", {})
    title = f"{model.meta.get('city', 'city')}"
    sub = f"{counts.get('buildings', 0)} buildings · {counts.get('roads', 0)} roads · {counts.get('water', 0)} water · {counts.get('green', 0)} green"
    tw = max(d.textlength(title, font=f_big), d.textlength(sub, font=f_small))
    _panel(d, (u, u, u * 2 + tw, u * 2 + int(u * 1.35) + u + u // 2), u // 2)
    d.text((u * 1.5, u * 1.2), title, font=f_big, fill=ink)
    d.text((u * 1.5, u * 1.2 + u * 1.6), sub, font=f_small, fill=ink)

    # layer legend (below the title): swatch, area, share of the clip polygon
    rows = layer_legend(model)
    top = u * 2 + int(u * 1.35) + u + u // 2 + u // 2
    row_h = int(u * 1.5)
    lw_text = max(d.textlength(t, font=f_small) for _, t in rows)
    head = "area · share of the clip"
    lw_text = max(lw_text + u * 0.4, d.textlength(head, font=f_small) - u)
    _panel(d, (u, top, u * 3.5 + lw_text, top + row_h * (len(rows) + 1) + u), u // 2)
    d.text((u * 1.5, top + u * 1.15), head, font=f_small, fill=ink, anchor="lm")
    for i, (name, text) in enumerate(rows):
        y = top + u // 2 + (i + 1) * row_h
        d.rectangle((u * 1.5, y + u * 0.2, u * 2.5, y + u * 1.1), fill=_rgb8(_class_rgb(name)) + (255,), outline=ink)
        d.text((u * 2.9, y + u * 0.65), text, font=f_small, fill=ink, anchor="lm")

    # north arrow (top right): grid north of local_m is image up
    cx, top = W - 3 * u, u
    _panel(d, (cx - 2 * u, top, cx + 2 * u, top + 5 * u), u // 2)
    d.polygon([(cx, top + u * 0.6), (cx + u, top + u * 3.2), (cx, top + u * 2.6), (cx - u, top + u * 3.2)], fill=ink)
    d.text((cx, top + u * 4.1), "N", font=f_small, fill=ink, anchor="mm")

    # scale bar (bottom left), about a fifth of the width, in 4 alternating segments
    length_m = _nice_length(W / px_per_m / 5)
    bar_px = length_m * px_per_m
    x0, y0 = 2 * u, H - 3 * u
    _panel(d, (u, y0 - 2.2 * u, x0 + bar_px + 2.5 * u + d.textlength(_fmt_m(length_m), font=f_small), H - u), u // 2)
    for i in range(4):
        d.rectangle((x0 + i * bar_px / 4, y0, x0 + (i + 1) * bar_px / 4, y0 + u * 0.6),
                    fill=ink if i % 2 == 0 else (255, 255, 255, 255), outline=ink)
    d.text((x0, y0 - 0.3 * u), "0", font=f_small, fill=ink, anchor="mb")
    d.text((x0 + bar_px + 0.5 * u, y0 + 0.3 * u), _fmt_m(length_m), font=f_small, fill=ink, anchor="lm")

    # roof height legend (above the scale bar)
    lw, lh = 8 * u, int(u * 0.8)
    ly = y0 - 7.2 * u
    _panel(d, (u, ly - 1.8 * u, u * 3 + lw + d.textlength(f"{h_ref:.0f} m", font=f_small), ly + lh + 2.2 * u), u // 2)
    d.text((2 * u, ly - 0.4 * u), "roof height", font=f_small, fill=ink, anchor="lb")
    d.text((2 * u, ly + lh + 0.3 * u), "0 m", font=f_small, fill=ink, anchor="lt")
    base = _class_rgb("roof")
    low, high = base * 0.55, base + (1 - base) * 0.55
    for i in range(lw):
        c = low + (high - low) * (i / max(lw - 1, 1))
        d.line([(2 * u + i, ly), (2 * u + i, ly + lh)], fill=_rgb8(c) + (255,))
    d.text((2 * u + lw + 0.4 * u, ly + lh / 2), f"{h_ref:.0f} m", font=f_small, fill=ink, anchor="lm")

    # attribution (bottom right)
    aw = d.textlength(ATTRIBUTION_TEXT, font=f_small)
    _panel(d, (W - aw - 2 * u, H - 2.6 * u, W - u, H - u), u // 2)
    d.text((W - aw - 1.5 * u, H - 1.8 * u), ATTRIBUTION_TEXT, font=f_small, fill=ink, anchor="lm")

    img.paste(Image.alpha_composite(img.convert("RGBA"), over).convert("RGB"))
