"""PyTorch dataset of paired perspective crops from an s2r dataset store.

Each item is one random (or seeded) perspective view of one panorama, sampled from the sim
render, the photo, the label and the masks with ONE sampling map, so pairs stay pixel-aligned
through every augmentation:

* ``sim``   float32 (7, h, w): DiffCol [0, 1] (3), world normal in ``local_m`` [−1, 1] (3, unit
  length, 0 on sky), depth mapped to [0, 1] by the FIXED range ``depth_range_m`` (clipped; sky 0);
* ``real``  float32 (3, h, w) in [−1, 1];
* ``label`` int64 (h, w) class index (nearest neighbour); ``sky`` float32 (1, h, w) = label 0;
  ``valid`` float32 (1, h, w) photo-valid mask (nearest);
* ``meta``  dict: image_id, index, yaw_deg, pitch_deg, fov_deg, flip, R_world_to_cam_opensfm, level (pyramid level
  sampled), redraws (non-finite re-draws for this item).

Sampling (``s2r_train.crops``): the pyramid level matching the crop's pixel size; only the inner
chunks under the map are read (direct shard reads); bilinear for continuous channels; normals and
depth are interpolated over non-sky taps only (normalised weights: no half-depth halo at
skylines); nearest for label and masks.

Horizontal flip: drawn ONCE per item and applied to every channel by mirroring the sampling map
(the thesis drew it separately for photo and render). Normals follow the mirrored-world
convention documented in :func:`s2r_train.crops.reflect_normals`: they are reflected across the
plane ⟂ the crop camera's right axis (in ``local_m``, from the sample's pose), so a flipped item is
exactly what a camera would see in the mirrored world.

Compact items (``compact=True``, what the trainer uses): the same values in smaller dtypes so
worker → main-process transfer (collation into shared memory) costs half: ``sim`` float16,
``real`` uint8 [0, 255], ``label``/``sky``/``valid`` uint8. :func:`decode_batch` turns a batch
into the float layout above, on the training device (one cheap pass on the GPU).

Workers: the dataset pickles without open handles (the store is opened lazily per process), so
``num_workers > 0`` works with ``spawn``/``forkserver`` (:func:`make_dataloader` uses forkserver).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.utils.data

from s2r_data.store import open_dataset
from s2r_data.store.reader import DatasetReader

from . import crops
from .crops import CropConfig

__all__ = ["CropConfig", "CropView", "PanoCropDataset", "NonFiniteCropError", "decode_batch", "make_dataloader", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "vis")


@dataclass(frozen=True)
class CropView:
    yaw_deg: float
    pitch_deg: float
    fov_deg: float
    flip: bool


class NonFiniteCropError(RuntimeError):
    pass


def _torch():
    import torch

    return torch


class PanoCropDataset(torch.utils.data.Dataset):
    """Paired perspective crops of the samples of one split (``None`` = every committed sample;
    ``"vis"`` = the visualisation samples in ``vis_index`` order).

    ``deterministic``: the view of item ``i`` depends only on (``seed``, ``i``) — for validation and
    visualisation. Otherwise views are drawn from (``seed``, ``i``, the worker's torch seed, a call
    counter), i.e. new ones every epoch.
    """

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        split: str | None,
        crop: CropConfig = CropConfig(),
        seed: int = 0,
        deterministic: bool = False,
        depth_range_m: tuple[float, float] = (0.0, 200.0),
        compact: bool = False,
    ):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS} or None")
        d0, d1 = (float(v) for v in depth_range_m)
        if not (math.isfinite(d0) and math.isfinite(d1) and 0.0 <= d0 < d1):
            raise ValueError(f"depth_range_m={depth_range_m}: need 0 ≤ near < far (metres)")
        self.url = os.fspath(url)
        self.crop = crop
        self.seed = int(seed)
        self.deterministic = bool(deterministic)
        self.depth_range_m = (d0, d1)
        self.compact = bool(compact)
        self.split = split
        reader = open_dataset(self.url)
        table = reader.index
        splits = table.column("split").to_pylist()
        vis = table.column("vis_index").to_pylist()
        if split is None:
            rows = list(range(table.num_rows))
        elif split == "vis":
            rows = sorted((v, i) for i, v in enumerate(vis) if v is not None)
            rows = [i for _, i in rows]
        else:
            rows = [i for i, s in enumerate(splits) if s == split]
        if not rows:
            have = sorted({s for s in splits if s is not None})
            raise ValueError(
                f"{self.url}: no samples in split {split!r} (splits present: {have or 'none: run s2r_train.splits.assign_splits'})"
            )
        self._rows = np.asarray(rows, dtype=np.int64)
        ids = table.column("image_id").to_pylist()
        self.image_ids = [ids[i] for i in rows]
        R = table.column("R_world_to_cam_opensfm").to_pylist()
        self._R = np.asarray([R[i] for i in rows], dtype=np.float64).reshape(-1, 3, 3)
        attrs = reader.attrs
        self.pano_hw = (int(attrs["height"]), int(attrs["width"]))
        self.levels = int(attrs.get("pyramid_levels", 0)) if crop.use_pyramid else 0
        self._index_table = table
        self._reader: DatasetReader | None = None
        self._calls = 0
        self.nonfinite_redraws = 0  # per process; items also report theirs in meta["redraws"]

    # -- pickling / lazy open ----------------------------------------------------------------
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_reader"] = None
        return d

    def _open(self) -> DatasetReader:
        if self._reader is None:
            try:
                import cv2

                cv2.setNumThreads(1)
            except ImportError:  # pragma: no cover - cv2 is a train dependency
                pass
            from numcodecs import blosc

            blosc.set_nthreads(1)
            self._reader = DatasetReader(self.url, index=self._index_table)
        return self._reader

    def __len__(self) -> int:
        return len(self._rows)

    # -- views -------------------------------------------------------------------------------
    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng([self.seed, int(index), int(attempt)])
        self._calls += 1
        return np.random.default_rng([self.seed, int(index), int(attempt), _torch().initial_seed() % (2**63), self._calls])

    def draw_view(self, index: int, attempt: int = 0) -> CropView:
        c = self.crop
        rng = self._rng(index, attempt)
        yaw = float(rng.uniform(*c.yaw_deg)) % 360.0
        pitch = float(rng.uniform(*c.pitch_deg))
        fov = float(rng.uniform(*c.fov_deg))
        flip = bool(rng.random() < c.flip_p)
        return CropView(yaw, pitch, fov, flip)

    # -- items -------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        for attempt in range(self.crop.max_redraws + 1):
            view = self.draw_view(index, attempt)
            item = self.crop_view(index, view)
            if item is not None:
                item["meta"]["redraws"] = attempt
                return item
            self.nonfinite_redraws += 1
            log.warning("non-finite crop of %s at %s; re-drawing (%d so far)", self.image_ids[index], view, self.nonfinite_redraws)
        raise NonFiniteCropError(
            f"{self.image_ids[index]}: {self.crop.max_redraws + 1} draws gave non-finite crops; run "
            f"`python -m s2r_data.store verify {self.url}`"
        )

    def crop_view(self, index: int, view: CropView) -> dict[str, Any] | None:
        """The item for an explicit view, or None if the sampled values are not all finite."""
        import cv2

        torch = _torch()
        reader = self._open()
        c = self.crop
        H0, W0 = self.pano_hw
        level = crops.pyramid_level(view.fov_deg, c.out_size, W0, self.levels) if self.levels else 0
        H, W = H0 >> level, W0 >> level
        px, py = crops.perspective_map_cpu(view.yaw_deg, view.pitch_deg, view.fov_deg, (c.out_size, c.out_size), (H, W))
        if view.flip:  # mirror the map: every channel flips together
            px, py = px[:, ::-1], py[:, ::-1]
        row = int(self._rows[index])
        plan = crops.plan_region(px, py, (H, W), reader.chunk_shape("sim", level))
        x, y = plan.local(px, py, W)
        y0, y1, x0, x1 = plan.bbox  # the taps' box inside the chunk region
        x -= x0
        y -= y0

        def planes(array: str) -> np.ndarray:  # only the inner chunks under the map, cut to the taps
            return reader.read_box(row, array, level, plan.chunk_rows, plan.chunk_cols, plan.bbox)

        sim16, label_r, real_r, mask_r = planes("sim"), planes("label"), planes("real"), planes("mask")
        # planar float16 → float32 (the only dtype conversion; contiguous, vectorised), then ONE
        # interleaved 8-channel HWC image: DiffCol (3), normal (3), depth, non-sky weight (normal
        # and depth are 0 on sky, i.e. already pre-multiplied by the weight) — one remap call
        # (OpenCV's generic n-channel path: ~60 % of the time of two 4-channel calls)
        f = torch.from_numpy(sim16).to(torch.float32).numpy()
        nonsky = np.not_equal(label_r[0], 0).astype(np.float32)
        src = cv2.merge([f[0], f[1], f[2], f[3], f[4], f[5], f[6], nonsky])  # (h, w, 8)
        # the map in fixed point once for both bilinear remaps (bit-identical: OpenCV converts
        # float maps to exactly this, 1/32 px, on every call)
        m1, m2 = crops.fixed_point_maps(x, y)
        out8 = crops.remap_bilinear(src, m1, m2)  # (oh, ow, 8)
        out_real = crops.remap_bilinear(cv2.merge([real_r[0], real_r[1], real_r[2]]), m1, m2)  # (oh, ow, 3) u8
        # nearest neighbour for the label and the photo-valid mask (float maps: OpenCV rounds to
        # the closest tap)
        lv = cv2.remap(cv2.merge([label_r[0], mask_r[1]]), x, y, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        label, valid = lv[:, :, 0], lv[:, :, 1]
        if not np.isfinite(out8).all():
            return None

        n = c.out_size
        o = torch.from_numpy(out8).permute(2, 0, 1)  # (8, oh, ow) view: DiffCol, normal, depth, weight
        keep = torch.from_numpy(label != 0).to(torch.float32)  # 0 on sky (nearest label)
        sim = torch.empty((7, n, n), dtype=torch.float32)
        torch.clamp(o[0:3], 0.0, 1.0, out=sim[0:3])
        # normals: renormalise (undoes the sky taps' dilution and blends between faces); sky 0
        nrm = o[3:6].contiguous()
        inv_len = torch.rsqrt((nrm * nrm).sum(0).clamp_min_(1e-12)).mul_(keep)
        torch.mul(nrm, inv_len, out=sim[3:6])
        if view.flip:  # mirrored-world convention (crops.reflect_normals)
            ax = crops.crop_right_axis_local(self._R[index], view.yaw_deg, view.pitch_deg)
            dot = sim[3] * float(ax[0]) + sim[4] * float(ax[1]) + sim[5] * float(ax[2])
            for ch in range(3):
                sim[3 + ch].sub_(dot, alpha=2.0 * float(ax[ch]))
        # depth: non-sky-weighted mean, mapped by the fixed range; sky 0
        d0, d1 = self.depth_range_m
        torch.div(o[6], o[7].clamp_min(1e-3), out=sim[6])
        sim[6].sub_(d0).mul_(1.0 / (d1 - d0)).clamp_(0.0, 1.0).mul_(keep)
        if self.compact:
            tensors = {
                "sim": sim.to(torch.float16),
                "real": torch.from_numpy(out_real).permute(2, 0, 1).contiguous(),
                "label": torch.from_numpy(np.ascontiguousarray(label)),
                "sky": torch.from_numpy(np.equal(label, 0).astype(np.uint8))[None],
                "valid": torch.from_numpy(np.ascontiguousarray(valid))[None],
            }
        else:
            tensors = {
                "sim": sim,
                "real": torch.from_numpy(out_real).permute(2, 0, 1).to(torch.float32).mul_(1.0 / 127.5).sub_(1.0).contiguous(),
                "label": torch.from_numpy(label.astype(np.int64)),
                "sky": (1.0 - keep)[None],
                "valid": torch.from_numpy(valid).to(torch.float32)[None],
            }
        return {
            **tensors,
            "meta": {
                "image_id": self.image_ids[index],
                "index": int(index),
                "yaw_deg": view.yaw_deg,
                "pitch_deg": view.pitch_deg,
                "fov_deg": view.fov_deg,
                "flip": view.flip,
                "level": level,
                # the panorama's world→camera rotation (local_m → cam_opensfm), for conditioning
                # that rotates normals into the crop camera's frame
                "R_world_to_cam_opensfm": torch.as_tensor(np.asarray(self._R[index], dtype=np.float32)),
            },
        }


def decode_batch(batch: dict[str, Any], device: Any = None) -> dict[str, Any]:
    """A (collated) batch in the float layout of the module docstring, on ``device`` if given.

    Compact batches (uint8 ``real``) are converted — after the move, so the conversion runs on
    the training device; float batches are only moved. ``meta`` and other keys pass through.
    """
    torch = _torch()
    out = dict(batch)
    for key in ("sim", "real", "label", "sky", "valid"):
        if key in out and device is not None:
            out[key] = out[key].to(device, non_blocking=True)
    if "real" in out and out["real"].dtype == torch.uint8:
        out["real"] = out["real"].float().mul_(1.0 / 127.5).sub_(1.0)
        out["sim"] = out["sim"].float()
        out["label"] = out["label"].long()
        for key in ("sky", "valid"):
            if key in out:
                out[key] = out[key].float()
    return out


def _worker_init(_worker_id: int) -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def make_dataloader(dataset: PanoCropDataset, *, batch_size: int, num_workers: int, shuffle: bool = True, drop_last: bool = True, multiprocessing_context: str = "forkserver", **kwargs):
    """A DataLoader with fork-safe defaults (forkserver workers, persistent, pinned if CUDA)."""
    torch = _torch()
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"multiprocessing_context": multiprocessing_context, "persistent_workers": True, "worker_init_fn": _worker_init, "prefetch_factor": 4}
    extra.update(kwargs)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(), **extra,
    )
