"""PyTorch dataset of paired perspective crops from an s2r dataset store.

Each item is one random (or seeded) perspective view of one panorama, sampled from the sim
render, the photo, the label and the masks with ONE sampling map, so pairs stay pixel-aligned
through every augmentation:

* ``sim``   float32 (7, h, w): DiffCol [0, 1] (3), world normal in ``local_m`` [−1, 1] (3, unit
  length, 0 on sky), depth mapped to [0, 1] by the FIXED range ``depth_range_m`` (clipped; sky 0);
* ``real``  float32 (3, h, w) in [−1, 1] (bilinear samples rounded to the photo's 8-bit grid);
* ``label`` int64 (h, w) class index (nearest neighbour); ``sky`` float32 (1, h, w) = label 0;
  ``valid`` float32 (1, h, w) photo-valid mask (nearest);
* ``meta``  dict: image_id, index, yaw_deg, pitch_deg, fov_deg, flip, R_world_to_cam_opensfm,
  level (pyramid level sampled), quarantined (space-separated ids of the damaged samples this
  item stands in for, "" if none; see below), alignment (the pair's ``alignment_score``, 1.0 if
  unscored: the per-pair L1 weight).

Damaged samples: a crop that samples a NaN/Inf means the sample's stored passes hold non-finite
values (disk corruption, a write that predates validation). That sample is **quarantined** for
the rest of the run in this process (never read again) and the item is replaced by a crop of the
next healthy sample, so batches keep their size and epochs their length; the item's
``meta["quarantined"]`` names the damaged samples, which is how a consumer in another process (the
trainer, behind DataLoader workers) learns of it. Pass known ids as ``quarantined=`` (a resumed
run's list); :class:`NonFiniteCropError` only when every sample of the split is damaged.

Sampling: the pyramid level matching the crop's pixel size; only the inner chunks under the map
are read (direct shard reads, cut to the taps' box); one map for every channel
(:func:`s2r_train.crops.crop_grid`), sampled by one fused kernel
(:func:`s2r_train.crop_kernel.sample_crop`): bilinear for the continuous channels, nearest for
label and mask; normals and depth are interpolated over non-sky taps only (normalised weights:
no half-depth halo at skylines).

Horizontal flip: drawn ONCE per item and applied to every channel by mirroring the sampling map
(the thesis drew it separately for photo and render). Normals follow the mirrored-world
convention documented in :func:`s2r_train.crops.reflect_normals`: they are reflected across the
plane ⟂ the crop camera's right axis (in ``local_m``, from the sample's pose), so a flipped item is
exactly what a camera would see in the mirrored world.

Compact items (``compact=True``, what the trainer uses): the same values in smaller dtypes so
worker → main-process transfer (shared memory) costs a third: ``sim`` float16,
``real`` uint8 [0, 255], ``label``/``valid`` uint8, no ``sky`` (it is ``label == 0``).
:func:`decode_batch` turns a batch into the float layout above, on the training device (one
cheap pass on the GPU).

Workers: the dataset pickles without open handles (the store is opened lazily per process), so
``num_workers > 0`` works with ``spawn``/``forkserver`` (:func:`make_dataloader` uses forkserver).
``dataset[list_of_indices]`` returns a whole collated batch built in place
(:meth:`PanoCropDataset.get_batch`, shared memory in a worker); :func:`make_dataloader` feeds the
workers such index lists, which saves the per-item tensors and the collation copy.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch.utils.data

from s2r_data.store import open_dataset
from s2r_data.store.reader import DatasetReader

from . import crops
from .crop_kernel import sample_crop
from .crops import CropConfig
from .splits import splits_present_hint

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
        quarantined: Iterable[str] = (),
        min_alignment_score: float | None = None,
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
            raise ValueError(f"{self.url}: no samples in split {split!r} ({splits_present_hint(self.url, have)})")
        scores = (table.column("alignment_score").to_pylist() if "alignment_score" in table.column_names
                  else [None] * table.num_rows)
        if min_alignment_score is not None:  # pairs scored below (or not scored) are not trusted
            kept = [i for i in rows if scores[i] is not None and scores[i] >= min_alignment_score]
            if not kept:
                raise ValueError(f"{self.url}: none of the {len(rows)} samples of split {split!r} has alignment_score >= "
                                 f"{min_alignment_score}; lower data.min_alignment_score (`s2r store info {self.url}` "
                                 "counts the train pairs each threshold keeps) or align the dataset (s2r align)")
            rows = kept
        # per-pair L1 weight (train.l1_alignment_weighting): the score, 1 where the pair is not scored
        self._alignment = np.asarray([1.0 if scores[i] is None else float(scores[i]) for i in rows], dtype=np.float32)
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
        self.quarantined: set[int] = set()  # positions of damaged samples (this process's knowledge)
        self.quarantine_ids(quarantined)

    # -- pickling / lazy open ----------------------------------------------------------------
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_reader"] = None
        return d

    def _open(self) -> DatasetReader:
        if self._reader is None:
            from numcodecs import blosc

            blosc.set_nthreads(1)
            self._reader = DatasetReader(self.url, index=self._index_table)
        return self._reader

    def __len__(self) -> int:
        return len(self._rows)

    def quarantine_ids(self, image_ids: Iterable[str]) -> None:
        """Never read these samples again (ids not in this split are ignored)."""
        pos = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.quarantined.update(pos[i] for i in image_ids if i in pos)

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
    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        """One item; or, for a sequence of indices (a ``BatchSampler`` with ``batch_size=None``,
        as :func:`make_dataloader` sets up), the already-collated batch (:meth:`get_batch`)."""
        if isinstance(index, (int, np.integer)):
            return self._draw_item(int(index), None)
        return self.get_batch(index)

    def get_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The items of ``indices`` collated exactly as ``default_collate`` would, but written
        straight into the batch tensors — in a DataLoader worker these are allocated in shared
        memory (as ``default_collate`` does), so no per-item tensors and no stacking copy."""
        torch = _torch()
        shared = torch.utils.data.get_worker_info() is not None
        out = self._empty_item(len(indices), shared=shared)
        metas = [self._draw_item(int(i), {k: t[b] for k, t in out.items()})["meta"] for b, i in enumerate(indices)]
        return {**out, "meta": torch.utils.data.default_collate(metas)}

    def _draw_item(self, index: int, out: dict[str, Any] | None) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        damaged: list[str] = []  # the samples this item stands in for
        sample = index
        for _ in range(len(self)):
            if sample in self.quarantined:
                damaged.append(self.image_ids[sample])
            else:
                item = self.crop_view(sample, self.draw_view(sample, 0 if sample == index else 1 + index), out=out)
                if item is not None:
                    item["meta"]["quarantined"] = " ".join(damaged)
                    return item
                self.quarantined.add(sample)
                damaged.append(self.image_ids[sample])
                log.warning("%s: the stored passes hold non-finite values (a crop sampled NaN/Inf); sample "
                            "quarantined for the rest of this run (%d of %d in this process)", self.image_ids[sample],
                            len(self.quarantined), len(self))
            sample = (sample + 1) % len(self)
        raise NonFiniteCropError(
            f"{self.url}: every one of the {len(self)} samples of split {self.split!r} has non-finite stored "
            f"passes; run `python -m s2r_data.store verify {self.url}`")

    def _empty_item(self, batch: int | None, *, shared: bool = False) -> dict[str, Any]:
        """Uninitialised item tensors (with a leading batch dimension if ``batch`` is given)."""
        torch = _torch()
        n = self.crop.out_size
        if self.compact:
            spec = {"sim": ((7, n, n), torch.float16), "real": ((3, n, n), torch.uint8),
                    "label": ((n, n), torch.uint8), "valid": ((1, n, n), torch.uint8)}
        else:
            spec = {"sim": ((7, n, n), torch.float32), "real": ((3, n, n), torch.float32),
                    "label": ((n, n), torch.int64), "sky": ((1, n, n), torch.float32),
                    "valid": ((1, n, n), torch.float32)}
        lead = () if batch is None else (batch,)
        return {k: _empty_tensor(lead + shape, dtype, shared=shared) for k, (shape, dtype) in spec.items()}

    def crop_view(self, index: int, view: CropView, *, out: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The item for an explicit view, or None if the sampled values are not all finite.
        ``out``: tensors to write the item into (one slot of a batch; default: new ones)."""
        torch = _torch()
        reader = self._open()
        c = self.crop
        n = c.out_size
        H0, W0 = self.pano_hw
        level = crops.pyramid_level(view.fov_deg, n, W0, self.levels) if self.levels else 0
        H, W = H0 >> level, W0 >> level
        # the map (flip = mirrored map: every channel flips together) and the chunks under it
        plan, x, y = crops.crop_grid(
            view.yaw_deg, view.pitch_deg, view.fov_deg, (n, n), (H, W), reader.chunk_shape("sim", level), flip=view.flip
        )
        row = int(self._rows[index])

        def read(array: str, channels=None) -> np.ndarray:  # only the inner chunks under the map, cut to the taps' box
            return reader.read_box(row, array, level, plan.chunk_rows, plan.chunk_cols, plan.bbox, channels=channels)

        if out is None:
            out = self._empty_item(None)
        if self.compact:  # the kernel writes the uint8 slots directly; sim float32 → float16 after
            sim, real, label, valid = torch.empty((7, n, n), dtype=torch.float32), out["real"], out["label"], out["valid"][0]
        else:
            sim = out["sim"]
            real, label, valid = (torch.empty(shape, dtype=torch.uint8) for shape in ((3, n, n), (n, n), (n, n)))
        flip_axis = crops.crop_right_axis_local(self._R[index], view.yaw_deg, view.pitch_deg) if view.flip else None
        ok = sample_crop(
            x, y, read("sim"), read("real"), read("label")[0], read("mask", channels=(1,))[0],  # mask = (sky, valid)
            depth_range_m=self.depth_range_m, flip_axis=flip_axis,
            sim_out=sim.numpy(), real_out=real.numpy(), label_out=label.numpy(), valid_out=valid.numpy(),
        )
        if not ok:  # a NaN/Inf was sampled
            return None
        if self.compact:
            out["sim"].copy_(sim)
        else:
            out["real"].copy_(_photo_to_float(real))
            out["label"].copy_(label)
            out["sky"][0].copy_(torch.eq(label, 0))
            out["valid"][0].copy_(valid)
        return {
            **out,
            "meta": {
                "image_id": self.image_ids[index],
                "index": int(index),
                "yaw_deg": view.yaw_deg,
                "pitch_deg": view.pitch_deg,
                "fov_deg": view.fov_deg,
                "flip": view.flip,
                "level": level,
                "alignment": float(self._alignment[index]),  # alignment_score in [0, 1] (1 if unscored)
                # the panorama's world→camera rotation (local_m → cam_opensfm), for conditioning
                # that rotates normals into the crop camera's frame
                "R_world_to_cam_opensfm": torch.as_tensor(np.asarray(self._R[index], dtype=np.float32)),
            },
        }


def _empty_tensor(shape: tuple[int, ...], dtype, *, shared: bool):
    """``torch.empty``; ``shared``: in shared memory from the start, as ``default_collate`` allocates
    batches in DataLoader workers (sending it to the main process then copies nothing)."""
    torch = _torch()
    if not shared:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device=proto.device)
    return proto.new(storage).resize_(*shape)


def _photo_to_float(real_u8):
    """uint8 photo [0, 255] → float32 [−1, 1] (the one formula, for items and decode_batch)."""
    return real_u8.float().mul_(1.0 / 127.5).sub_(1.0)


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
        out["real"] = _photo_to_float(out["real"])
        out["sim"] = out["sim"].float()
        if "sky" not in out:
            out["sky"] = torch.eq(out["label"], 0).unsqueeze(1).float()
        out["label"] = out["label"].long()
        for key in ("sky", "valid"):
            if key in out:
                out[key] = out[key].float()
    return out


def make_dataloader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    num_workers: int,
    shuffle: bool = True,
    drop_last: bool = True,
    sampler: torch.utils.data.Sampler | None = None,
    multiprocessing_context: str = "forkserver",
    **kwargs,
) -> torch.utils.data.DataLoader:
    """A DataLoader with fork-safe defaults (forkserver workers, persistent, pinned if CUDA).

    A :class:`PanoCropDataset` is given whole batches of indices (``BatchSampler`` over
    ``sampler``, ``batch_size=None``): each worker builds a batch in place
    (:meth:`PanoCropDataset.get_batch`), same contents as per-item loading + ``default_collate``.
    Other datasets are batched by the DataLoader as usual. ``kwargs`` go to the DataLoader."""
    torch = _torch()
    tud = torch.utils.data
    if batch_size < 1:
        raise ValueError(f"make_dataloader: batch_size must be >= 1, got {batch_size}")
    if sampler is None:
        sampler = tud.RandomSampler(dataset, generator=kwargs.get("generator")) if shuffle else tud.SequentialSampler(dataset)
    n = len(sampler) if hasattr(sampler, "__len__") else None
    if drop_last and n is not None and n < batch_size:
        raise ValueError(
            f"make_dataloader: {n} samples to draw from (dataset of {len(dataset)}) but batch_size={batch_size} "
            "with drop_last=True: the loader would yield no batch at all. Use a batch size of at most "
            f"{max(n, 1)}, drop_last=False, or a dataset with more samples")
    extra: dict[str, Any] = {"pin_memory": torch.cuda.is_available()}
    if num_workers > 0:
        extra.update(multiprocessing_context=multiprocessing_context, persistent_workers=True, prefetch_factor=4)
    extra.update(kwargs)
    if isinstance(dataset, PanoCropDataset):
        batches = tud.BatchSampler(sampler, batch_size, drop_last)
        return tud.DataLoader(dataset, batch_size=None, sampler=batches, num_workers=num_workers, **extra)
    return tud.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers, **extra)
