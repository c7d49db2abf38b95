"""Pictures of alignment: render edges drawn over the photo, and a score histogram (pure numpy + PIL).

Edge colours by kind (:class:`.model_edges.EdgeKind`): vertical building edges red, facade–ground
lines yellow, ground-layer outlines magenta, rooflines cyan.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .model_edges import EdgeKind
from .render_edges import render_edges

__all__ = ["KIND_COLOURS", "edge_overlay", "score_histogram", "label_strip"]

KIND_COLOURS: dict[int, tuple[int, int, int]] = {
    EdgeKind.VERTICAL: (255, 40, 40),
    EdgeKind.GROUND_LINE: (255, 230, 0),
    EdgeKind.GROUND_BOUNDARY: (255, 0, 255),
    EdgeKind.ROOFLINE: (0, 230, 255),
}


def _hwc_u8(photo: np.ndarray) -> np.ndarray:
    a = np.asarray(photo)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    return a


def edge_overlay(photo: np.ndarray, label: np.ndarray, depth_m: np.ndarray, normal: np.ndarray, *, width_px: int = 1024,
                 dim: float = 0.75) -> np.ndarray:
    """The photo (dimmed) at ``width_px`` with the render's edges drawn in kind colours: (h, w, 3) uint8."""
    img = Image.fromarray(_hwc_u8(photo))
    if img.width != width_px:
        img = img.resize((width_px, width_px // 2), Image.BILINEAR)
    out = (np.asarray(img, dtype=np.float32) * dim).astype(np.uint8)
    e = render_edges(label, depth_m, normal)
    f = width_px / e.width
    x = np.round(e.px * f + (f - 1) / 2).astype(np.int64) % width_px
    y = np.clip(np.round(e.py * f + (f - 1) / 2).astype(np.int64), 0, width_px // 2 - 1)
    for k, col in KIND_COLOURS.items():
        m = e.kind == k
        out[y[m], x[m]] = col
    return out


def label_strip(text: str, width_px: int, height_px: int = 22) -> np.ndarray:
    """A dark strip with white text (captions of overlay panels)."""
    im = Image.new("RGB", (width_px, height_px), (20, 20, 20))
    ImageDraw.Draw(im).text((6, 4), text, fill=(255, 255, 255))
    return np.asarray(im)


def score_histogram(series: Sequence[tuple[str, Sequence[float], tuple[int, int, int]]], *, bins: int = 20,
                    size: tuple[int, int] = (640, 320), title: str = "alignment score") -> np.ndarray:
    """Overlaid histograms over [0, 1] (one per (name, values, colour)), as an RGB image."""
    W, H = size
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 40, W - 10, 28, H - 30
    edges = np.linspace(0, 1, bins + 1)
    hists = []
    for _, vals, _ in series:
        v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=np.float64)
        hists.append(np.histogram(np.clip(v, 0, 1), edges)[0])
    peak = max(1, max((int(h.max()) for h in hists if len(h)), default=1))
    bw = (right - left) / bins
    n = max(1, len(series))
    for j, ((name, vals, col), h) in enumerate(zip(series, hists)):
        for i, c in enumerate(h):
            x0 = left + i * bw + j * bw / n
            y0 = bottom - (bottom - top) * c / peak
            d.rectangle([x0, y0, x0 + bw / n - 1, bottom], fill=col)
        d.text((left + 6 + j * 170, 8), f"{name} (n={int(h.sum())})", fill=col)
    d.line([left, bottom, right, bottom], fill=(0, 0, 0))
    d.line([left, top, left, bottom], fill=(0, 0, 0))
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + t * (right - left)
        d.text((x - 8, bottom + 6), f"{t:.2f}", fill=(0, 0, 0))
    d.text((4, top - 2), str(peak), fill=(0, 0, 0))
    d.text((right - 120, bottom + 16), title, fill=(80, 80, 80))
    return np.asarray(im)
