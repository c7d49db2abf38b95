"""Whole-panorama translation: the generator applied to an equirectangular render, two ways.

* ``direct``: the equirectangular condition is fed to the fully convolutional generator as one
  image (padded circularly left/right). Cheap, but the generator learned on perspective crops and
  here sees the equirect distortion it never saw (stretched ground and sky towards the poles).
* ``tiled``: the panorama is covered by overlapping perspective views (:func:`tile_views`: rings
  of views at a few pitches plus one view at each pole), each view is cut from the render exactly
  as the training loader cuts crops (:func:`s2r_train.crops.crop_batch_torch`), translated, and
  projected back onto the equirect grid (:func:`views_to_equirect`), where overlapping views are
  blended with weights that fall to 0 at each view's border (no seams). The generator sees what
  it was trained on; each view costs one generator pass.

Both work at one angular resolution: ``pano_width`` equirect pixels for 360°; the default
(:func:`s2r_train.infer.training_pano_width`) is the angular resolution of the training crops.
Inputs are :class:`PanoPasses` (the stored layout: depth in metres, sky 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2r_data.equirect import pixel_to_bearing

from .conditioning import crop_view_rays_world, encode_condition, pano_view_rays_world, unit_from_depth_m
from .config import Config, ConditioningConfig
from .crops import crop_batch_torch, crop_rotation

__all__ = ["PanoMethod", "PANO_METHODS", "DEFAULT_PANO_METHOD", "PanoPasses", "tile_views", "views_to_equirect",
           "translate_panorama", "translate_panorama_direct", "translate_panorama_tiled", "TileSpec"]

PanoMethod = Literal["tiled", "direct"]
PANO_METHODS: tuple[str, ...] = ("tiled", "direct")
# chosen by measurement on whole val panoramas of the sample city (docs/benchmarks-train.md)
DEFAULT_PANO_METHOD: PanoMethod = "tiled"


@dataclass(frozen=True)
class PanoPasses:
    """One panorama's render passes as stored: ``sim_m`` (7, H, W) float32 = DiffCol [0, 1] (3),
    world normal in ``local_m`` (3), depth in metres (1), all 0 on sky; ``label`` (H, W) int64
    (0 = sky); ``R_world_to_cam_opensfm`` (3, 3) of its pose, or None (then upright, facing north)."""

    sim_m: torch.Tensor
    label: torch.Tensor
    R_world_to_cam_opensfm: torch.Tensor | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.sim_m.shape[-2]), int(self.sim_m.shape[-1])

    @classmethod
    def from_arrays(cls, diffcol: np.ndarray, normal: np.ndarray, depth_m: np.ndarray, label: np.ndarray,
                    R_world_to_cam_opensfm: np.ndarray | None = None) -> "PanoPasses":
        """From renderer passes ((3|1, H, W) arrays; sky = label 0, its depth may be huge)."""
        lab = torch.as_tensor(np.asarray(label, dtype=np.int64)).reshape(np.shape(depth_m)[-2:])
        sky = (lab == 0).float()[None]
        sim = torch.cat([torch.as_tensor(np.asarray(diffcol, np.float32)).clamp(0, 1),
                         torch.as_tensor(np.asarray(normal, np.float32)).clamp(-1, 1),
                         torch.nan_to_num(torch.as_tensor(np.asarray(depth_m, np.float32)).reshape(1, *lab.shape),
                                          posinf=0.0)], 0) * (1 - sky)
        R = None if R_world_to_cam_opensfm is None else torch.as_tensor(
            np.asarray(R_world_to_cam_opensfm, np.float32).reshape(3, 3))
        return cls(sim, lab, R)

    def resized(self, width: int) -> "PanoPasses":
        """At another 2:1 size: DiffCol area-averaged, normals and depth averaged over non-sky
        pixels only (as the store's pyramid), label nearest."""
        H, W = self.hw
        if W == width:
            return self
        size = (width // 2, width)
        nonsky = (self.label != 0).float()[None, None]
        if width < W and W % width == 0:
            pool = lambda t: F.avg_pool2d(t, W // width)  # noqa: E731
        else:
            pool = lambda t: F.interpolate(t, size=size, mode="area" if width < W else "bilinear")  # noqa: E731
        sim = self.sim_m[None].float()
        diffcol = pool(sim[:, 0:3])
        w = pool(nonsky)
        geo = pool(sim[:, 3:7] * nonsky) / w.clamp_min(1e-6)
        label = F.interpolate(self.label[None, None].float(), size=size, mode="nearest")[0, 0].long()
        keep = (label != 0).float()[None, None]
        return PanoPasses(torch.cat([diffcol, geo], 1)[0] * keep[0], label, self.R_world_to_cam_opensfm)


def _condition(sim_unit: torch.Tensor, label: torch.Tensor, cfg: ConditioningConfig, *, yaw_deg: torch.Tensor,
               pitch_deg: torch.Tensor, R: torch.Tensor | None, fov_deg: float | None) -> torch.Tensor:
    """Generator input of crops (``fov_deg`` given) or of a whole equirect panorama (None)."""
    b = sim_unit.shape[0]
    rays = None
    if cfg.view_direction:
        h, w = sim_unit.shape[-2:]
        rays = (pano_view_rays_world(h, w, R, batch=b) if fov_deg is None else
                crop_view_rays_world(yaw_deg.cpu(), pitch_deg.cpu(), torch.full((b,), float(fov_deg)), (h, w),
                                     None if R is None else R.cpu().reshape(1, 3, 3).expand(b, 3, 3)))
    return encode_condition(
        sim_unit, sky=(label == 0).float()[:, None], label=label, yaw_deg=yaw_deg, pitch_deg=pitch_deg,
        R_world_to_pano_opensfm=None if R is None else R.reshape(1, 3, 3).expand(b, 3, 3),
        depth_encoding=cfg.depth_encoding, depth_range_m=cfg.depth_range_m, depth_min_m=cfg.depth_min_m,
        sky_channel=cfg.sky_channel, normals_frame=cfg.normals_frame, label_onehot=cfg.label_onehot,
        num_classes=cfg.num_classes, view_dirs_world=rays)


@dataclass(frozen=True)
class TileSpec:
    """Perspective views for tiled translation: ``size`` px square, ``fov_deg`` horizontal FOV,
    neighbouring view centres at most ``fov_deg − overlap_deg`` apart."""

    size: int
    fov_deg: float
    overlap_deg: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"TileSpec.fov_deg={self.fov_deg}: must be in (0, 180)")
        if not 0 <= self.overlap_deg < self.fov_deg:
            raise ValueError(f"TileSpec.overlap_deg={self.overlap_deg}: must be in [0, fov_deg)")

    @classmethod
    def for_config(cls, config: Config, *, overlap_deg: float = 30.0) -> "TileSpec":
        """Views like the training crops: ``crop_size`` px at the mean training FOV."""
        lo, hi = config.data.fov_deg
        return cls(size=config.data.crop_size, fov_deg=max((lo + hi) / 2, overlap_deg + 30.0), overlap_deg=overlap_deg)


def tile_views(spec: TileSpec) -> list[tuple[float, float]]:
    """(yaw_deg, pitch_deg) of views covering the sphere: rings at pitch 0, ±step, ±2·step, …
    below the poles (step = fov − overlap) and one view at each pole. A ring has enough views
    that neighbours overlap by ``overlap_deg`` along its equator-most edge (its longest circle);
    alternate rings are offset by half a view."""
    step = spec.fov_deg - spec.overlap_deg
    half = spec.fov_deg / 2
    rings = [0.0]
    k = 1
    while k * step < 90.0:
        rings += [k * step, -k * step]
        k += 1
    views = []
    for pitch in rings:
        n = max(1, math.ceil(360.0 * math.cos(math.radians(max(abs(pitch) - half, 0.0))) / step))
        offset = 180.0 / n if round(abs(pitch) / step) % 2 else 0.0
        views += [((offset + 360.0 * j / n) % 360.0, pitch) for j in range(n)]
    return views + [(0.0, 90.0), (0.0, -90.0)]


@lru_cache(maxsize=4)
def _backprojection(views: tuple[tuple[float, float], ...], fov_deg: float, pano_hw: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """For every view: the ``grid_sample`` grid (V, H, W, 2) taking each equirect pixel's ray to
    the view's normalised coordinates, and the blending weight (V, 1, H, W)."""
    H, W = pano_hw
    py, px = np.mgrid[0:H, 0:W]
    rays = torch.as_tensor(pixel_to_bearing(px, py, W, H), dtype=torch.float64)  # (H, W, 3) pano frame
    tan_half = math.tan(math.radians(fov_deg) / 2)
    grids, weights = [], []
    for yaw, pitch in views:
        d = rays @ torch.as_tensor(crop_rotation(yaw, pitch), dtype=torch.float64)  # crop frame: Rᵀ d_pano
        z = d[..., 2]
        front = z > 1e-6
        zs = torch.where(front, z, torch.ones_like(z))
        a = (d[..., 0] / zs / tan_half).float()  # −1 … 1 across the view's width (pixel edges)
        b = (d[..., 1] / zs / tan_half).float()
        weights.append(((1 - a.abs()).clamp_min(0) * (1 - b.abs()).clamp_min(0) * front.float())[None])
        grids.append(torch.stack([a, b], -1))
    return torch.stack(grids), torch.stack(weights)


def views_to_equirect(images: torch.Tensor, views: list[tuple[float, float]], fov_deg: float,
                      pano_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend perspective views (V, C, s, s) (of ``views``' (yaw, pitch) at ``fov_deg``, flip off)
    back onto an equirect grid → ((C, H, W) image, (1, H, W) total weight).

    Each equirect pixel's ray is projected into every view; a view contributes its bilinear
    sample with weight (1 − |a|)(1 − |b|) ≥ 0, where (a, b) ∈ [−1, 1]² are the pixel's
    normalised coordinates in the view (0 at its centre, ±1 at its borders): views fade out
    towards their borders, so overlaps blend without seams. Pixels no view covers keep weight 0."""
    grids, weights = _backprojection(tuple((float(y), float(p)) for y, p in views), float(fov_deg), tuple(pano_hw))
    dev = images.device
    # pixel-edge coordinates ±1 → pixel-centre sampling: align_corners=False
    samples = F.grid_sample(images.float(), grids.to(dev), mode="bilinear", padding_mode="border", align_corners=False)
    w = weights.to(dev)
    acc = w.sum(0)
    return (samples * w).sum(0) / acc.clamp_min(1e-12), acc


def _to_unit_sim(sim_m: torch.Tensor, cfg: ConditioningConfig) -> torch.Tensor:
    """Stored layout (depth metres) → Dataset layout (depth mapped to [0, 1] by the config's range)."""
    return torch.cat([sim_m[:, 0:6], unit_from_depth_m(sim_m[:, 6:7], cfg.depth_range_m)], 1)


@torch.no_grad()
def translate_panorama_direct(G: nn.Module, passes: PanoPasses, cfg: ConditioningConfig, *, pano_width: int,
                              tile: int | None = None, overlap_px: int = 32) -> torch.Tensor:
    """The equirect condition at ``pano_width`` straight through G → (3, H, W) in [−1, 1]
    (``tile``: in overlapping ``tile``² windows, :func:`s2r_train.infer.translate_tiled`)."""
    from .infer import translate, translate_tiled

    p = passes.resized(pano_width)
    dev = next(G.parameters()).device if any(True for _ in G.parameters()) else torch.device("cpu")
    sim = _to_unit_sim(p.sim_m[None].to(dev), cfg) * (p.label != 0).float().to(dev)[None, None]
    zero = torch.zeros(1, device=dev)
    cond = _condition(sim, p.label[None].to(dev), cfg, yaw_deg=zero, pitch_deg=zero,
                      R=None if p.R_world_to_cam_opensfm is None else p.R_world_to_cam_opensfm.to(dev), fov_deg=None)
    if tile:
        return translate_tiled(G, cond, tile=tile, overlap=overlap_px)[0]
    return translate(G, cond, wrap=True)[0]


@torch.no_grad()
def translate_panorama_tiled(G: nn.Module, passes: PanoPasses, cfg: ConditioningConfig, *, pano_width: int,
                             tiles: TileSpec, batch_size: int = 8) -> torch.Tensor:
    """Overlapping perspective views → G → blended back to the equirect grid, (3, H, W) in [−1, 1].

    Views are cut from the render resized to ``pano_width`` (their pixels then match the
    panorama's, so nothing aliases) with the training loader's sampling rules."""
    from .infer import translate

    p = passes.resized(pano_width)
    dev = next(G.parameters()).device if any(True for _ in G.parameters()) else torch.device("cpu")
    views = tile_views(tiles)
    sim = p.sim_m[None].to(dev)
    label = p.label[None, None].to(dev)
    R = p.R_world_to_cam_opensfm if p.R_world_to_cam_opensfm is not None else torch.eye(3)
    outs = []
    for i in range(0, len(views), batch_size):
        chunk = views[i:i + batch_size]
        b = len(chunk)
        yaw = torch.tensor([v[0] for v in chunk], dtype=torch.float32)
        pitch = torch.tensor([v[1] for v in chunk], dtype=torch.float32)
        crop = crop_batch_torch(sim.expand(b, -1, -1, -1), torch.zeros((b, 3) + p.hw, dtype=torch.uint8, device=dev),
                                label.expand(b, -1, -1, -1), R.reshape(1, 3, 3).expand(b, 3, 3).to(dev), yaw, pitch,
                                torch.full((b,), tiles.fov_deg), torch.zeros(b, dtype=torch.bool), tiles.size,
                                depth_range_m=cfg.depth_range_m)
        cond = _condition(crop["sim"], crop["label"], cfg, yaw_deg=yaw.to(dev), pitch_deg=pitch.to(dev),
                          R=None if p.R_world_to_cam_opensfm is None else p.R_world_to_cam_opensfm.to(dev),
                          fov_deg=tiles.fov_deg)
        outs.append(translate(G, cond))
    image, _ = views_to_equirect(torch.cat(outs), views, tiles.fov_deg, p.hw)
    return image


def translate_panorama(G: nn.Module, passes: PanoPasses, config: Config, *, method: PanoMethod = DEFAULT_PANO_METHOD,
                       pano_width: int | None = None, overlap_deg: float = 30.0, tile: int | None = None,
                       overlap_px: int = 32) -> torch.Tensor:
    """:func:`translate_panorama_tiled` (views overlapping by ``overlap_deg``) or
    :func:`translate_panorama_direct` (``tile``/``overlap_px``: memory-bounded windows) at
    ``pano_width`` (default: the training crops' angular resolution) → (3, H, W) in [−1, 1]."""
    from .infer import training_pano_width

    width = pano_width or training_pano_width(config)
    cfg = config.network.conditioning
    if method == "direct":
        return translate_panorama_direct(G, passes, cfg, pano_width=width, tile=tile, overlap_px=overlap_px)
    if method == "tiled":
        return translate_panorama_tiled(G, passes, cfg, pano_width=width,
                                        tiles=TileSpec.for_config(config, overlap_deg=overlap_deg))
    raise ValueError(f"panorama method must be one of {PANO_METHODS}, got {method!r}")

