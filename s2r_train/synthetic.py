"""A synthetic stand-in for ``s2r_train.data.PanoCropDataset``: same item contract, no I/O.

Each item is a procedural street-like scene (sky above a horizon, ground below, a few
box "buildings") rendered as the 7 sim channels, and a "photo" that is a fixed,
learnable function of them (Lambert shading of DiffCol under a sun, a sky gradient, mild
texture). Items are a pure function of (seed, index), so runs are reproducible and
workers need no shared state. URL form: ``synthetic://N`` (N items; ``?size=S`` optional).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlparse

import torch
from torch.utils.data import Dataset

__all__ = ["SyntheticPairDataset", "parse_synthetic_url", "CLASS_COLOURS"]

# class index → DiffCol (s2r_data.citymodel.CLASSES order: sky, ground, road, water, green, wall, roof)
CLASS_COLOURS = torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.42, 0.38], [0.25, 0.25, 0.27], [0.2, 0.3, 0.5],
                              [0.25, 0.5, 0.2], [0.7, 0.6, 0.5], [0.5, 0.25, 0.2]])
_SUN = torch.tensor([0.5, -0.4, 0.77])


def parse_synthetic_url(url: str) -> tuple[int, int | None]:
    """``synthetic://N[?size=S]`` → (N, S or None)."""
    u = urlparse(url)
    if u.scheme != "synthetic" or not u.netloc.isdigit():
        raise ValueError(f"{url!r}: a synthetic dataset URL looks like synthetic://64 (number of items)")
    size = parse_qs(u.query).get("size")
    return int(u.netloc), (int(size[0]) if size else None)


class SyntheticPairDataset(Dataset):
    def __init__(self, num_items: int = 64, *, crop_size: int = 64, seed: int = 0, split: str = "train"):
        if num_items < 1:
            raise ValueError("num_items must be >= 1")
        self.num_items = num_items
        self.crop_size = crop_size
        # splits draw disjoint scenes
        self.seed = seed * 1_000_003 + {"train": 0, "val": 1, "test": 2}.get(split, 3) * 7_919

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        s = self.crop_size
        g = torch.Generator().manual_seed(self.seed + index)
        rnd = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
        rows = torch.arange(s, dtype=torch.float32)[:, None].expand(s, s)
        cols = torch.arange(s, dtype=torch.float32)[None, :].expand(s, s)
        horizon = int(s * (0.3 + 0.3 * float(rnd(1))))
        label = torch.ones(s, s, dtype=torch.int64)  # ground
        label[rows < horizon] = 0  # sky
        road = (rows >= horizon) & ((cols - s / 2).abs() < (rows - horizon + 1) * (0.3 + 0.5 * float(rnd(1))))
        label[road] = 2
        normal = torch.zeros(3, s, s)
        normal[2] = 1.0
        depth_m = 2.0 * 40.0 / (rows - horizon + 1).clamp_min(1)  # ground: far near the horizon
        for _ in range(int(rnd(1) * 3) + 1):  # buildings
            x0 = int(rnd(1) * s * 0.8)
            w = int(s * (0.1 + 0.3 * float(rnd(1))))
            top = int(horizon * float(rnd(1)) * 0.8)
            bottom = horizon + int((s - horizon) * 0.3 * float(rnd(1)))
            m = (cols >= x0) & (cols < x0 + w) & (rows >= top) & (rows < bottom)
            label[m] = 5
            side = 1.0 if rnd(1) < 0.5 else -1.0
            nx = side * (0.3 + 0.7 * float(rnd(1)))
            n = torch.tensor([nx, -math.sqrt(max(0.0, 1 - nx * nx)), 0.0])
            normal[:, m] = n[:, None]
            depth_m[m] = 5.0 + 60.0 * float(rnd(1))
        sky = (label == 0).float()[None]
        diffcol = CLASS_COLOURS[label].permute(2, 0, 1).clone()
        diffcol = (diffcol + 0.05 * (rnd(1, s, s) - 0.5) * (1 - sky)).clamp(0, 1)
        normal = normal * (1 - sky)
        depth01 = (depth_m / 200.0).clamp(0, 1)[None] * (1 - sky)
        sim = torch.cat([diffcol, normal, depth01], 0)
        # "photo": sun shading, distance haze, sky gradient
        lambert = (normal * _SUN[:, None, None]).sum(0, keepdim=True).clamp_min(0)
        haze = depth01.clamp(0, 1)
        lit = diffcol * (0.35 + 0.9 * lambert)
        lit = lit * (1 - 0.5 * haze) + 0.5 * haze * torch.tensor([0.7, 0.75, 0.8])[:, None, None]
        grad = (rows / max(horizon, 1)).clamp(0, 1)[None]
        sky_rgb = torch.stack([0.45 + 0.4 * grad[0], 0.6 + 0.3 * grad[0], 0.95 + 0.0 * grad[0]])
        real = torch.where(sky > 0.5, sky_rgb, lit).clamp(0, 1) * 2 - 1
        meta = {"image_id": f"synthetic-{index:06d}", "yaw_deg": float(rnd(1) * 360 - 180),
                "pitch_deg": float(rnd(1) * 20 - 5), "fov_deg": 90.0, "flip": False}
        return {"sim": sim.float(), "real": real.float(), "label": label, "sky": sky, "meta": meta}
