"""Inference: rendered sim passes → photo-like PNGs with a trained generator.

Inputs: a render output directory (one ``<image_id>.npz`` per pose with ``diffcol``,
``normal``, ``depth_m``, ``label``, ``sky_mask``; docs/architecture.md) or a dataset URL
(``synthetic://N`` or a store URL read through ``s2r_train.data``). Outputs:

- ``panorama`` mode: the whole equirectangular panorama (:mod:`s2r_train.panorama`): ``tiled``
  (overlapping perspective views, translated and blended back; the default) or ``direct`` (the
  equirect image through the fully convolutional generator, padded to its multiple, wrapping
  left/right; optionally in overlapping windows to bound memory);
- ``views`` mode: perspective views (yaw list, pitch, fov, size) sampled from the panorama;
- dataset inputs are translated crop by crop.

The generator and its conditioning come from the checkpoint (G_ema unless ``use_ema=False``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2r_data.atomic import atomic_path
from s2r_data.equirect import bearing_to_pixel

from .checkpoint import load_checkpoint
from .conditioning import (R_pano_to_crop_opensfm, condition_from_batch, crop_view_rays_world, encode_condition,
                           sim_from_render_passes)
from .config import Config, ConditioningConfig
from .data import decode_batch
from .models import build_networks
from .panorama import DEFAULT_PANO_METHOD, PanoMethod, PanoPasses, translate_panorama

__all__ = [
    "load_generator", "translate", "translate_tiled", "perspective_grid", "sample_perspective",
    "load_render_npz", "load_pano_passes", "infer_render_dir", "infer_dataset", "write_png", "training_pano_width",
]


def load_generator(checkpoint: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, Config]:
    """(sim→real generator in eval mode, the run's config) from a training checkpoint."""
    from .trainer import config_from_checkpoint

    state = load_checkpoint(checkpoint)
    config = config_from_checkpoint(state)
    G, _ = build_networks(config.network.generator, config.network.discriminator,
                          cond_channels=config.network.conditioning.in_channels, mode=config.train.mode)
    key = "G_ema" if use_ema and state.get("G_ema") is not None else "G"
    G.load_state_dict(state[key])
    if config.train.mode == "cycle":
        G = G.ab
    return G.to(device).eval().requires_grad_(False), config


def _pad_to_multiple(x: torch.Tensor, factor: int, *, wrap: bool) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if pw and wrap:
        x = F.pad(x, (pads[0], pads[1], 0, 0), mode="circular")
        x = F.pad(x, (0, 0, pads[2], pads[3]), mode="replicate") if ph else x
    elif pw or ph:
        x = F.pad(x, pads, mode="replicate")
    return x, pads


@torch.no_grad()
def translate(G: nn.Module, cond: torch.Tensor, *, wrap: bool = False) -> torch.Tensor:
    """(B,C,H,W) condition → (B,3,H,W) image in [−1, 1], any H, W (padded to the generator's
    multiple; ``wrap`` pads left/right circularly, for panoramas)."""
    factor = getattr(G, "downsample_factor", 1)
    x, (l, r, t, b) = _pad_to_multiple(cond.float(), factor, wrap=wrap)
    out = G(x)[0].float()
    h, w = out.shape[-2:]
    return out[..., t:h - b, l:w - r]


@torch.no_grad()
def translate_tiled(G: nn.Module, cond: torch.Tensor, *, tile: int, overlap: int = 32, wrap: bool = True) -> torch.Tensor:
    """Translate in ``tile``² windows with ``overlap`` px blended linearly (bounded memory for
    big panoramas). ``wrap`` continues the left/right border circularly."""
    if overlap * 2 >= tile:
        raise ValueError(f"overlap {overlap} must be below half the tile size {tile}")
    b, _, h, w = cond.shape
    src = F.pad(cond.float(), (overlap, overlap, 0, 0), mode="circular") if wrap else cond.float()
    H, W = src.shape[-2:]
    step = tile - overlap
    ys = list(range(0, max(H - tile, 0) + 1, step)) or [0]
    xs = list(range(0, max(W - tile, 0) + 1, step)) or [0]
    if ys[-1] + tile < H:
        ys.append(H - tile)
    if xs[-1] + tile < W:
        xs.append(W - tile)
    ramp = torch.ones(tile)
    if overlap:
        ramp[:overlap] = torch.linspace(1.0 / (overlap + 1), 1.0, overlap)
        ramp[-overlap:] = torch.linspace(1.0, 1.0 / (overlap + 1), overlap)
    weight2d = (ramp[:, None] * ramp[None, :]).to(cond.device)
    out = torch.zeros(b, 3, H, W, device=cond.device)
    acc = torch.zeros(1, 1, H, W, device=cond.device)
    for y in ys:
        for x in xs:
            patch = src[..., y:y + tile, x:x + tile]
            pred = translate(G, patch, wrap=False)
            hh, ww = pred.shape[-2:]
            wgt = weight2d[:hh, :ww]
            out[..., y:y + hh, x:x + ww] += pred * wgt
            acc[..., y:y + hh, x:x + ww] += wgt
    out = out / acc.clamp_min(1e-8)
    if wrap:
        out = out[..., overlap:overlap + w]
    return out


def perspective_grid(*, pano_hw: tuple[int, int], size: int, fov_deg: float, yaw_deg: float, pitch_deg: float
                     ) -> torch.Tensor:
    """(1,size,size,2) ``grid_sample`` grid (fp32, align_corners=True) into a panorama padded by one
    column on each side (circularly). Uses ``s2r_data.equirect`` for the projection."""
    H, W = pano_hw
    f = (size / 2) / math.tan(math.radians(fov_deg) / 2)
    c = (size - 1) / 2
    v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    b_crop = np.stack([(u - c) / f, (v - c) / f, np.ones_like(u, dtype=np.float64)], -1)
    R = R_pano_to_crop_opensfm(torch.tensor([yaw_deg]), torch.tensor([pitch_deg]))[0].double().numpy()
    b_pano = b_crop @ R  # R^T applied to row vectors: crop → pano
    px_py = bearing_to_pixel(b_pano, W, H)
    px = np.mod(px_py[..., 0] + 0.5, W) - 0.5 + 1  # +1: the circular pad column
    py = np.clip(px_py[..., 1], 0, H - 1)
    gx = px / (W + 1) * 2 - 1
    gy = py / (H - 1) * 2 - 1
    return torch.from_numpy(np.stack([gx, gy], -1)).float()[None]


def sample_perspective(pano: torch.Tensor, grid: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """(B,C,H,W) panorama → (B,C,s,s) view, fp32 grid sampling with left/right wrap."""
    padded = F.pad(pano.float(), (1, 1, 0, 0), mode="circular")
    with torch.autocast(device_type=pano.device.type, enabled=False):
        return F.grid_sample(padded, grid.to(pano.device).expand(pano.shape[0], -1, -1, -1), mode=mode,
                             padding_mode="border", align_corners=True)


def load_render_npz(path: str | Path, *, depth_range_m: tuple[float, float]) -> dict[str, torch.Tensor]:
    """One renderer ``.npz`` → Dataset-layout tensors: sim (7,H,W), sky (1,H,W), label (H,W)."""
    with np.load(path) as z:
        missing = [k for k in ("diffcol", "normal", "depth_m", "sky_mask") if k not in z.files]
        if missing:
            raise KeyError(f"{path}: missing render passes {missing} (expected diffcol, normal, depth_m, label, sky_mask)")
        sim = sim_from_render_passes(z["diffcol"], z["normal"], z["depth_m"], z["sky_mask"], depth_range_m=depth_range_m)
        sky = torch.from_numpy(np.asarray(z["sky_mask"], dtype=np.float32).reshape(1, *sim.shape[-2:]))
        label = torch.from_numpy(np.asarray(z["label"], dtype=np.int64).reshape(sim.shape[-2:])) if "label" in z.files \
            else torch.zeros(sim.shape[-2:], dtype=torch.int64)
    return {"sim": sim, "sky": sky, "label": label}


def _condition(passes: dict[str, torch.Tensor], cfg: ConditioningConfig, *, yaw_deg: float, pitch_deg: float,
               fov_deg: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Generator input of one perspective view (pose unknown: upright, facing north)."""
    rays = None
    if cfg.view_direction:
        rays = crop_view_rays_world(torch.tensor([yaw_deg]), torch.tensor([pitch_deg]), torch.tensor([fov_deg]),
                                    tuple(passes["sim"].shape[-2:]))
    return encode_condition(
        passes["sim"][None].to(device), sky=passes["sky"][None].to(device), label=passes["label"][None].to(device),
        yaw_deg=torch.tensor([yaw_deg]), pitch_deg=torch.tensor([pitch_deg]),
        depth_encoding=cfg.depth_encoding, depth_range_m=cfg.depth_range_m, depth_min_m=cfg.depth_min_m,
        sky_channel=cfg.sky_channel, normals_frame=cfg.normals_frame, label_onehot=cfg.label_onehot,
        num_classes=cfg.num_classes, view_dirs_world=rays)


def write_png(path: str | Path, image_chw: torch.Tensor) -> Path:
    """(3,H,W) in [−1, 1] → 8-bit PNG, atomically."""
    from PIL import Image

    arr = ((image_chw.detach().float().clamp(-1, 1).cpu() + 1) * 127.5).round().to(torch.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return Path(path)


def training_pano_width(config: Config) -> int:
    """Panorama width (px) whose angular resolution equals that of the training crops:
    ``crop_size`` pixels over the mean horizontal FOV of the random crops, rounded to 16 px."""
    lo, hi = config.data.fov_deg
    width = 360.0 * config.data.crop_size / ((lo + hi) / 2)
    return max(16, int(round(width / 16)) * 16)


def load_pano_passes(path: str | Path) -> PanoPasses:
    """One renderer ``.npz`` → :class:`PanoPasses` (depth in metres; without a ``label`` pass
    every non-sky pixel counts as ground)."""
    with np.load(path) as z:
        missing = [k for k in ("diffcol", "normal", "depth_m", "sky_mask") if k not in z.files]
        if missing:
            raise KeyError(f"{path}: missing render passes {missing} (expected diffcol, normal, depth_m, label, sky_mask)")
        sky = np.asarray(z["sky_mask"], bool).reshape(np.shape(z["depth_m"])[-2:])
        label = np.asarray(z["label"]).reshape(sky.shape) if "label" in z.files else np.where(sky, 0, 1)
        return PanoPasses.from_arrays(z["diffcol"], z["normal"], z["depth_m"], np.where(sky, 0, label))


def infer_render_dir(G: nn.Module, config: Config, input_dir: str | Path, out_dir: str | Path, *,
                     mode: str = "panorama", pano_method: PanoMethod = DEFAULT_PANO_METHOD,
                     tile: int | None = None, overlap: int = 32, pano_width: int | None = None,
                     yaws_deg: Iterable[float] = (0.0, 90.0, 180.0, 270.0), pitch_deg: float = 0.0,
                     fov_deg: float = 90.0, size: int = 256, device: str | torch.device = "cpu",
                     progress: bool = True) -> list[Path]:
    """Translate every ``*.npz`` in ``input_dir``; returns the PNGs written.

    Panorama mode translates with ``pano_method`` (:func:`s2r_train.panorama.translate_panorama`;
    ``tile``/``overlap``: memory-bounded windows of the direct method) at ``pano_width`` (default:
    :func:`training_pano_width`, the angular resolution the generator was trained at; a generator
    trained on 64-px crops sees 1024-px panoramas at 4× its scale and paints streaks) and writes
    the result resized back to the render's size, pixel-aligned with it.
    """
    files = sorted(Path(input_dir).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{input_dir}: no .npz render outputs found")
    cfg = config.network.conditioning
    out_dir = Path(out_dir)
    written = []
    it: Iterable[Path] = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="infer", unit="pano")
    for f in it:
        if mode == "panorama":
            pano = load_pano_passes(f)
            H, W = pano.hw
            img = translate_panorama(G, pano, config, method=pano_method, pano_width=pano_width, tile=tile,
                                     overlap_px=overlap)[None]
            if img.shape[-1] != W:
                img = F.interpolate(img.float(), size=(H, W), mode="bilinear", align_corners=False)
            written.append(write_png(out_dir / f"{f.stem}.png", img[0]))
            continue
        passes = load_render_npz(f, depth_range_m=cfg.depth_range_m)
        if mode == "views":
            H, W = passes["sim"].shape[-2:]
            for yaw in yaws_deg:
                grid = perspective_grid(pano_hw=(H, W), size=size, fov_deg=fov_deg, yaw_deg=yaw, pitch_deg=pitch_deg)
                view = {"sim": sample_perspective(passes["sim"][None], grid)[0],
                        "sky": (sample_perspective(passes["sky"][None], grid)[0] > 0.5).float(),
                        "label": sample_perspective(passes["label"][None, None].float(), grid, mode="nearest")[0, 0].long()}
                cond = _condition(view, cfg, yaw_deg=yaw, pitch_deg=pitch_deg, fov_deg=fov_deg, device=device)
                img = translate(G, cond)
                written.append(write_png(out_dir / f"{f.stem}_yaw{yaw:+06.1f}_pitch{pitch_deg:+05.1f}.png", img[0]))
        else:
            raise ValueError(f"mode must be panorama or views, got {mode!r}")
    return written


def infer_dataset(G: nn.Module, config: Config, url: str, out_dir: str | Path, *, split: str = "val",
                  batch_size: int = 8, limit: int | None = None, device: str | torch.device = "cpu",
                  progress: bool = True) -> list[Path]:
    """Translate the crops of a dataset split; one PNG per item named by ``image_id``."""
    from torch.utils.data import DataLoader

    from .trainer import build_dataset

    ds = build_dataset(url, split=split, data_cfg=config.data, seed=config.train.seed, deterministic=True)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    out_dir = Path(out_dir)
    written: list[Path] = []
    it: Iterator = iter(loader)
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="infer", unit="batch")
    for batch in it:
        batch = decode_batch(batch, device)
        cond = condition_from_batch(batch, config.network.conditioning, device)
        imgs = translate(G, cond)
        for img, image_id in zip(imgs, batch["meta"]["image_id"]):
            written.append(write_png(out_dir / f"{image_id}-{len(written):06d}.png", img))
            if limit is not None and len(written) >= limit:
                return written
    return written
