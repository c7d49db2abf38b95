"""Sim item → generator input: depth encoding, sky channel, normals frame, label one-hot.

Pure torch functions on batches. Channel layout of the Dataset's ``sim`` (item contract,
docs/architecture.md): 0-2 DiffCol [0, 1], 3-5 world Normal (``local_m``: x east, y north,
z up) [−1, 1], 6 depth mapped to [0, 1] linearly over ``depth_range_m``, sky 0.

Output layout: DiffCol (3), Normal (3, world or crop camera frame), depth (1, encoded),
[sky mask (1)], [view direction (3)], [one-hot labels (num_classes)].

View direction (``view_direction``): each pixel's unit viewing ray in ``local_m`` (x east, y north,
z up), from the crop's yaw/pitch/FOV and the panorama's pose (:func:`crop_view_rays_world`; whole
panoramas: :func:`pano_view_rays_world`). Sky has no other input, and its brightness depends on
where the ray points (elevation, the sun's side), so this channel is what lets a generator paint
a sky better than its mean colour. Flipped items get the camera's own rays (the mirrored-world
convention of the normals); the sun is not mirrored with them, so recipes that rely on this
channel train without flips.

Crop camera convention (``cam_opensfm``: x right, y down, z forward), matching
``s2r_data.equirect`` and ``s2r_train.crops.crop_rotation``: yaw > 0 turns right, pitch > 0
looks up, relative to the panorama camera. The panorama's own rotation is read from the
batch meta (``R_world_to_cam_opensfm``, 3×3 or 9 values per item) when the Dataset gives
it; otherwise the panorama is taken as upright and facing north.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConditioningConfig

__all__ = [
    "depth_m_from_unit", "unit_from_depth_m", "encode_depth", "R_pano_to_crop_opensfm",
    "R_WORLD_TO_PANO_NORTH_OPENSFM", "normals_world_to_crop", "crop_view_rays_world", "pano_view_rays_world",
    "encode_condition",
    "condition_from_batch", "sim_from_render_passes",
]

# local_m (x E, y N, z up) → an upright panorama camera looking north (x right = E, y down, z fwd = N)
R_WORLD_TO_PANO_NORTH_OPENSFM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def depth_m_from_unit(depth01: torch.Tensor, depth_range_m: tuple[float, float]) -> torch.Tensor:
    lo, hi = depth_range_m
    return lo + depth01.float() * (hi - lo)


def unit_from_depth_m(depth_m: torch.Tensor, depth_range_m: tuple[float, float]) -> torch.Tensor:
    lo, hi = depth_range_m
    return ((depth_m.float() - lo) / (hi - lo)).clamp(0, 1)


def encode_depth(depth01: torch.Tensor, sky: torch.Tensor, *, encoding: str, depth_range_m: tuple[float, float],
                 depth_min_m: float) -> torch.Tensor:
    """(B,1,h,w) depth as the Dataset gives it → ``linear`` (unchanged), ``log`` (log(d/dmin) /
    log(dmax/dmin), sky 1) or ``inverse`` (dmin/d, sky 0); all in [0, 1]."""
    if encoding == "linear":
        return depth01.float() * (1 - sky)
    hi = depth_range_m[1]
    d_m = depth_m_from_unit(depth01, depth_range_m).clamp(depth_min_m, hi)
    if encoding == "log":
        enc = torch.log(d_m / depth_min_m) / math.log(hi / depth_min_m)
        return torch.where(sky > 0.5, torch.ones_like(enc), enc)
    if encoding == "inverse":
        enc = depth_min_m / d_m
        return torch.where(sky > 0.5, torch.zeros_like(enc), enc)
    raise ValueError(f"unknown depth encoding {encoding!r}; use linear, log or inverse")


def R_pano_to_crop_opensfm(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """(B,) angles → (B,3,3) rotation taking panorama-camera vectors to crop-camera vectors."""
    y = torch.deg2rad(yaw_deg.double())
    p = torch.deg2rad(pitch_deg.double())
    fwd = torch.stack([torch.cos(p) * torch.sin(y), -torch.sin(p), torch.cos(p) * torch.cos(y)], -1)
    right = torch.stack([torch.cos(y), torch.zeros_like(y), -torch.sin(y)], -1)
    down = torch.linalg.cross(fwd, right)
    return torch.stack([right, down, fwd], 1).float()  # rows = crop axes in the pano frame


def normals_world_to_crop(normal_world: torch.Tensor, *, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor,
                          R_world_to_pano_opensfm: torch.Tensor | None = None) -> torch.Tensor:
    """(B,3,h,w) world normals → crop camera frame. Without the panorama rotation the
    panorama is taken as upright and facing north (only pitch-relative terms are then right).

    Flipped items need no extra step: the Dataset already reflects their normals across the
    plane ⟂ the crop's right axis (``s2r_train.crops.reflect_normals``, mirrored-world
    convention), so rotating them gives the mirrored camera's normals (x negated)."""
    b = normal_world.shape[0]
    if R_world_to_pano_opensfm is None:
        R_wp = torch.as_tensor(R_WORLD_TO_PANO_NORTH_OPENSFM, dtype=torch.float32).expand(b, 3, 3)
    else:
        R_wp = R_world_to_pano_opensfm.float().reshape(b, 3, 3)
    R = R_pano_to_crop_opensfm(yaw_deg, pitch_deg) @ R_wp.to(yaw_deg.device)
    R = R.to(normal_world.device)
    return torch.einsum("bij,bjhw->bihw", R, normal_world.float())


def _R_world_to_pano(R_world_to_pano_opensfm: torch.Tensor | None, b: int, device) -> torch.Tensor:
    if R_world_to_pano_opensfm is None:
        return torch.as_tensor(R_WORLD_TO_PANO_NORTH_OPENSFM, dtype=torch.float32, device=device).expand(b, 3, 3)
    return R_world_to_pano_opensfm.float().reshape(b, 3, 3).to(device)


def crop_view_rays_world(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, fov_deg: torch.Tensor, out_hw: tuple[int, int],
                         R_world_to_pano_opensfm: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) crop angles (degrees; FOV horizontal, square pixels) → (B,3,h,w) unit viewing rays of
    the crop pixels in ``local_m`` (crop pixel (i, j) looks along ((j − (w−1)/2)/f, (i − (h−1)/2)/f, 1)
    in the crop's ``cam_opensfm``, f = (w/2)/tan(fov/2), as ``s2r_train.crops``)."""
    yaw, pitch, fov = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (yaw_deg, pitch_deg, fov_deg))
    b = max(yaw.numel(), pitch.numel(), fov.numel())
    yaw, pitch, fov = yaw.expand(b), pitch.expand(b), fov.expand(b)
    h, w = out_hw
    dev = yaw.device
    f = (w / 2) / torch.tan(torch.deg2rad(fov.double()) / 2)  # (B,)
    xs = (torch.arange(w, dtype=torch.float64, device=dev) - (w - 1) / 2)[None, None, :] / f[:, None, None]
    ys = (torch.arange(h, dtype=torch.float64, device=dev) - (h - 1) / 2)[None, :, None] / f[:, None, None]
    rays = torch.stack(torch.broadcast_tensors(xs, ys, torch.ones_like(xs)), 1)  # (B,3,h,w) crop frame
    rays = rays / rays.norm(dim=1, keepdim=True)
    R = (R_pano_to_crop_opensfm(yaw, pitch).to(dev) @ _R_world_to_pano(R_world_to_pano_opensfm, b, dev)).double()
    return torch.einsum("bji,bjhw->bihw", R, rays).float()  # Rᵀ: crop → world


def pano_view_rays_world(height: int, width: int, R_world_to_pano_opensfm: torch.Tensor | None = None, *,
                         batch: int = 1) -> torch.Tensor:
    """(B,3,H,W) unit viewing rays of equirect pixels (``s2r_data.equirect``) in ``local_m``."""
    from s2r_data.equirect import pixel_to_bearing

    py, px = np.mgrid[0:height, 0:width]
    b_pano = torch.as_tensor(pixel_to_bearing(px, py, width, height), dtype=torch.float32)  # (H,W,3)
    R = _R_world_to_pano(R_world_to_pano_opensfm, batch, "cpu")
    return torch.einsum("bji,hwj->bihw", R, b_pano)


def encode_condition(sim: torch.Tensor, *, sky: torch.Tensor | None = None, label: torch.Tensor | None = None,
                     yaw_deg: torch.Tensor | None = None, pitch_deg: torch.Tensor | None = None,
                     R_world_to_pano_opensfm: torch.Tensor | None = None,
                     depth_encoding: str = "linear", depth_range_m: tuple[float, float] = (0.0, 200.0),
                     depth_min_m: float = 1.0, sky_channel: bool = False, normals_frame: str = "world",
                     label_onehot: bool = False, num_classes: int = 7,
                     view_dirs_world: torch.Tensor | None = None) -> torch.Tensor:
    """(B,7,h,w) sim batch → (B,C,h,w) generator input (fp32). ``view_dirs_world`` (B,3,h,w):
    appended after the sky channel when given (:func:`crop_view_rays_world`)."""
    sim = sim.float()
    if sky is None:
        sky = torch.zeros_like(sim[:, 6:7])
    sky = sky.float()
    normal = sim[:, 3:6]
    if normals_frame == "camera":
        if yaw_deg is None or pitch_deg is None:
            raise ValueError("normals_frame: camera needs yaw_deg and pitch_deg (the batch meta)")
        normal = normals_world_to_crop(normal, yaw_deg=yaw_deg, pitch_deg=pitch_deg,
                                       R_world_to_pano_opensfm=R_world_to_pano_opensfm) * (1 - sky)
    depth = encode_depth(sim[:, 6:7], sky, encoding=depth_encoding, depth_range_m=depth_range_m,
                         depth_min_m=depth_min_m)
    parts = [sim[:, 0:3], normal, depth]
    if sky_channel:
        parts.append(sky)
    if view_dirs_world is not None:
        parts.append(view_dirs_world.to(sim.device).float())
    if label_onehot:
        if label is None:
            raise ValueError("label_onehot needs the batch's label map")
        parts.append(F.one_hot(label.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float())
    return torch.cat(parts, 1)


def condition_from_batch(batch: Mapping[str, Any], cfg: ConditioningConfig, device: torch.device | str) -> torch.Tensor:
    """Unpack a collated Dataset batch and call ``encode_condition`` with ``cfg``'s fields."""
    meta = batch.get("meta") or {}

    def meta_tensor(*keys):
        for key in keys:
            v = meta.get(key)
            if v is not None:
                if isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor):
                    v = torch.stack(list(v), -1)  # default_collate of a per-item list of floats
                return torch.as_tensor(v).to(device)
        return None

    sim = batch["sim"].to(device, non_blocking=True)
    yaw, pitch = meta_tensor("yaw_deg"), meta_tensor("pitch_deg")
    R = meta_tensor("R_world_to_pano_opensfm", "R_world_to_cam_opensfm")
    rays = None
    if cfg.view_direction:
        fov = meta_tensor("fov_deg")
        if yaw is None or pitch is None or fov is None:
            raise ValueError("network.conditioning.view_direction needs yaw_deg, pitch_deg and fov_deg in the batch meta")
        rays = crop_view_rays_world(yaw, pitch, fov, tuple(sim.shape[-2:]), R)
    return encode_condition(
        sim, sky=batch["sky"].to(device, non_blocking=True) if "sky" in batch else None,
        label=batch["label"].to(device, non_blocking=True) if cfg.label_onehot else None,
        yaw_deg=yaw, pitch_deg=pitch, R_world_to_pano_opensfm=R,
        depth_encoding=cfg.depth_encoding, depth_range_m=cfg.depth_range_m, depth_min_m=cfg.depth_min_m,
        sky_channel=cfg.sky_channel, normals_frame=cfg.normals_frame, label_onehot=cfg.label_onehot,
        num_classes=cfg.num_classes, view_dirs_world=rays)


def sim_from_render_passes(diffcol: np.ndarray, normal: np.ndarray, depth_m: np.ndarray, sky_mask: np.ndarray,
                           *, depth_range_m: tuple[float, float]) -> torch.Tensor:
    """Renderer .npz passes ((3|1,H,W) arrays, docs/architecture.md) → the Dataset's (7,H,W) sim layout."""
    sky = torch.from_numpy(np.asarray(sky_mask, dtype=np.float32).reshape(1, *np.shape(sky_mask)[-2:]))
    depth01 = unit_from_depth_m(torch.from_numpy(np.asarray(depth_m, dtype=np.float32)).reshape_as(sky), depth_range_m)
    depth01 = depth01 * (1 - sky)
    dc = torch.from_numpy(np.asarray(diffcol, dtype=np.float32)).clamp(0, 1)
    nrm = torch.from_numpy(np.asarray(normal, dtype=np.float32)).clamp(-1, 1) * (1 - sky)
    return torch.cat([dc, nrm, depth01], 0)
