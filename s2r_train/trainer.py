"""The sim→real GAN training loop: paired (pix2pix/SPADE) or CycleGAN, single process or DDP.

Shape follows edm2's ``training_loop``: a top-down loop (step → log → epoch end (samples, val)
→ checkpoint → done?), and resume = rerun the same command (the newest checkpoint in the run dir
is picked up). Units: everything a user sees counts **optimizer steps** (``--max-steps``,
``log_every_steps``, the TensorBoard x axis, checkpoint names ``checkpoint-step<N>.pt``, the
``step`` of ``metrics.jsonl``); images seen are named as such (``nimg``, config keys ``*_nimg``,
TensorBoard ``progress/images_seen``). One iteration:

1. G forward once (autocast), D update(s) on ``cat(cond, fake.detach())`` and
   ``cat(cond, real)`` in ONE concatenated D batch;
2. G update: adversarial + feature matching + (weighted) L1 + optional perceptual + KL;
3. EMA of G.

Before ``adversarial_start_nimg`` images (an L1 warm-up) D is not updated and G is trained on
its reconstruction terms only.

Guards: a batch with non-finite inputs, or a non-finite loss/gradient, skips the update
(all ranks agree), is counted and logged; ``max_nonfinite_steps`` consecutive skips stop
training with ``NonFiniteTrainingError``. A damaged sample (NaN/Inf in its stored passes) is
quarantined by the dataset (see ``s2r_train.data``); the trainer collects those ids from the
batches, logs them, lists them in ``<run_dir>/quarantine.txt`` (read back on resume) and stops
with ``DataQualityError`` when more than ``max_quarantined_fraction`` of the train split is
damaged. When a run on a dataset store ends, the generators are evaluated against the
baselines (``s2r_train.evaluate``; ``<run_dir>/eval/``). Exact resume: the global RNG is reseeded per
step from (seed, rank, step), the sampler restarts mid-epoch at the saved position, and
RNG states are also saved as tensors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from s2r_data.atomic import atomic_path, atomic_write_text

from .checkpoint import CheckpointManager, load_checkpoint
from .conditioning import condition_from_batch
from .data import decode_batch, make_dataloader
from .config import Config, DataConfig, EvalConfig, config_from_dict, config_to_yaml
from .losses import (PerceptualLoss, d_adversarial_loss, feature_matching_loss, g_adversarial_loss, kl_loss,
                     weighted_l1_loss, weighted_l2_loss)
from .metrics import discriminator_accuracy, l1, psnr, ssim
from .models import build_networks, load_vgg19_features

__all__ = [
    "Trainer", "DistInfo", "init_distributed", "build_dataset", "ResumableSampler", "ema_update",
    "NonFiniteTrainingError", "DataQualityError", "autocast_context", "step_seed", "config_from_checkpoint",
]


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had non-finite losses or gradients."""


class DataQualityError(RuntimeError):
    """More of the train split is damaged (quarantined) than ``train.max_quarantined_fraction`` allows."""


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Single process unless launched by torchrun (``WORLD_SIZE`` > 1): then one process per
    device, NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def _all_true(flag: bool, info: DistInfo) -> bool:
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# --------------------------------------------------------------------------- data


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled per epoch from ``seed + epoch``, sharded by rank) that can
    start mid-epoch: ``set_epoch(epoch, start_index)`` skips this rank's first indices."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def build_dataset(url: str, *, split: str, data_cfg: DataConfig, seed: int, deterministic: bool,
                  depth_range_m: tuple[float, float] = (0.0, 200.0)) -> Dataset:
    """``synthetic://N`` → ``SyntheticPairDataset``; anything else → ``s2r_train.data.PanoCropDataset``
    (imported lazily; same item contract), with crops from ``data_cfg`` and the depth range the
    conditioning expects."""
    if url.startswith("synthetic://"):
        from .synthetic import SyntheticPairDataset, parse_synthetic_url

        n, size = parse_synthetic_url(url)
        return SyntheticPairDataset(n, crop_size=size or data_cfg.crop_size, seed=seed, split=split)
    try:
        from .crops import CropConfig  # noqa: PLC0415
        from .data import PanoCropDataset  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"dataset {url!r} needs s2r_train.data.PanoCropDataset, which failed to import ({exc}); "
                          "use --dataset synthetic://64 for a synthetic run") from exc
    crop = CropConfig(out_size=data_cfg.crop_size, pitch_deg=data_cfg.pitch_deg, fov_deg=data_cfg.fov_deg,
                      flip_p=0.5 if data_cfg.hflip else 0.0)
    # compact items (float16/uint8): a third of the worker → main-process transfer; decoded on the device
    return PanoCropDataset(url, split=split, crop=crop, seed=seed, deterministic=deterministic,
                           depth_range_m=depth_range_m, compact=True,
                           min_alignment_score=data_cfg.min_alignment_score if split == data_cfg.train_split else None)


def _val_data_config(data_cfg: DataConfig, eval_cfg: EvalConfig) -> DataConfig:
    """The data config of the in-loop validation: the evaluation's crop angles, no flips."""
    return replace(data_cfg, pitch_deg=eval_cfg.crop_pitch_deg, fov_deg=eval_cfg.crop_fov_deg, hflip=False)


def _optional_dataset(url: str, split: str, data_cfg: DataConfig, seed: int,
                      depth_range_m: tuple[float, float]) -> Dataset | None:
    """A deterministic split that may be absent from the store (val, vis): None if it is."""
    try:
        return build_dataset(url, split=split, data_cfg=data_cfg, seed=seed, deterministic=True,
                             depth_range_m=depth_range_m)
    except (KeyError, ValueError, FileNotFoundError):
        return None


# --------------------------------------------------------------------------- helpers


def step_seed(seed: int, rank: int, step: int) -> int:
    """Per-step RNG seed (edm2-style): resume needs no hidden RNG position."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 12_345) % (2**62)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema ← β·ema + (1−β)·model on parameters; buffers are copied (BN stats, spectral-norm u/v)."""
    ema_p = [p for p in ema.parameters()]
    mod_p = [p.detach() for p in model.parameters()]
    if beta == 0.0:
        torch._foreach_copy_(ema_p, mod_p)
    else:
        torch._foreach_lerp_(ema_p, mod_p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "_orig_mod", m)  # torch.compile
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)


def _split_d(out: list[list[torch.Tensor]], n_first: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    first = [[t[:n_first] for t in scale] for scale in out]
    second = [[t[n_first:] for t in scale] for scale in out]
    return first, second


def _finite_batch(batch: Mapping[str, Any]) -> bool:
    return all(torch.isfinite(batch[k]).all().item() for k in ("sim", "real") if k in batch)


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Owns networks, optimisers, EMA, data and the run directory of one training run.

    ``run_dir`` gets ``config.yaml`` (resolved), ``checkpoints/``, ``tb/`` (TensorBoard),
    ``samples/`` (per-epoch PNG grids) and ``metrics.jsonl``. ``resume=True`` continues from
    the newest checkpoint there (or ``resume_from``); ``max_steps`` caps the absolute step.
    Pass ``train_dataset``/``val_dataset``/``vis_dataset`` to bypass ``dataset_url``; fixed
    visualisation samples come from the store's ``vis`` split when it has one, else val, else train.
    """

    def __init__(self, config: Config, *, run_dir: str | Path, dataset_url: str | None = None,
                 dist_info: DistInfo | None = None, max_steps: int | None = None, resume: bool = True,
                 resume_from: str | Path | None = None, train_dataset: Dataset | None = None,
                 val_dataset: Dataset | None = None, vis_dataset: Dataset | None = None, progress: bool = True,
                 log_tensorboard: bool = True):
        self.config = config
        self.net_cfg, self.tcfg, self.dcfg = config.network, config.train, config.data
        self.run_dir = Path(run_dir)
        self.dist = dist_info or DistInfo(device=torch.device("cpu"))
        self.device = self.dist.device
        self.max_steps = max_steps
        self.progress = progress and self.dist.is_main
        t = self.tcfg
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train.precision: fp16 needs CUDA; use bf16 (CPU autocast) or fp32")
        self._setup_backends()
        torch.manual_seed(t.seed)  # identical initial weights on every rank

        # ---- networks
        self.cond_channels = self.net_cfg.conditioning.in_channels
        G, D = build_networks(self.net_cfg.generator, self.net_cfg.discriminator,
                              cond_channels=self.cond_channels, mode=t.mode)
        if self.dist.enabled and self.net_cfg.generator.norm == "sync_batch":
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
        self.G_raw, self.D_raw = G.to(self.device), D.to(self.device)
        self.G_ema = None
        if t.ema:
            import copy

            self.G_ema = copy.deepcopy(self.G_raw).eval().requires_grad_(False)
        self.channels_last = t.channels_last and self.device.type == "cuda"
        if self.channels_last:
            for m in (self.G_raw, self.D_raw, self.G_ema):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        self._running_stats = [b for m in (self.G_raw, self.D_raw) for name, b in m.named_buffers()
                               if name.endswith(("running_mean", "running_var"))]
        self.perceptual = None
        if t.lambda_vgg > 0:
            self.perceptual = PerceptualLoss(load_vgg19_features(t.perceptual_weights_path)).to(self.device)

        G_run, D_run = self.G_raw, self.D_raw
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            G_run = DDP(G_run, device_ids=ids, broadcast_buffers=False)
            D_run = DDP(D_run, device_ids=ids, broadcast_buffers=False)
        if t.compile:
            G_run, D_run = torch.compile(G_run), torch.compile(D_run)
        self.G, self.D = G_run, D_run

        fused = self.device.type == "cuda"
        self.opt_g = torch.optim.Adam(self.G_raw.parameters(), lr=t.lr_g, betas=t.betas_g, fused=fused)
        self.opt_d = torch.optim.Adam(self.D_raw.parameters(), lr=t.lr_d, betas=t.betas_d, fused=fused)
        scaler_on = t.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scaler_on)

        # ---- data
        url = dataset_url or self.dcfg.url
        self.dataset_url = url
        if train_dataset is None:
            if url is None:
                raise ValueError("no dataset: pass --dataset URL (or synthetic://N) or set data.url")
            depth_range_m = self.net_cfg.conditioning.depth_range_m
            train_dataset = build_dataset(url, split=self.dcfg.train_split, data_cfg=self.dcfg, seed=t.seed,
                                          deterministic=t.deterministic, depth_range_m=depth_range_m)
            if val_dataset is None and t.val_batches + t.num_vis_samples > 0:
                # the in-loop validation looks through the evaluation's crop angles (eval.crop_*),
                # not the recipe's training ones: one val distribution in the log and in eval/
                val_dataset = _optional_dataset(url, self.dcfg.val_split, _val_data_config(self.dcfg, config.eval), t.seed,
                                                depth_range_m)
            if vis_dataset is None and t.num_vis_samples > 0 and not url.startswith("synthetic://"):
                vis_dataset = _optional_dataset(url, "vis", self.dcfg, t.seed, depth_range_m)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.vis_dataset = vis_dataset or (val_dataset if val_dataset is not None and len(val_dataset) else
                                           train_dataset)
        global_batch = t.batch_size * self.dist.world_size
        if len(train_dataset) < global_batch:
            raise ValueError(f"the train split has {len(train_dataset)} items, fewer than one global batch "
                             f"({t.batch_size} × {self.dist.world_size} processes)")
        self.sampler = ResumableSampler(train_dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                        seed=t.seed)
        self.steps_per_epoch = len(self.sampler) // t.batch_size
        self.epoch_nimg = self.steps_per_epoch * global_batch
        self.total_nimg = t.epochs * self.epoch_nimg
        loader_kw: dict[str, Any] = {"prefetch_factor": 2} if t.num_workers > 0 else {}
        self.loader = make_dataloader(train_dataset, batch_size=t.batch_size, num_workers=t.num_workers,
                                      sampler=self.sampler, drop_last=True, multiprocessing_context="spawn",
                                      pin_memory=self.device.type == "cuda",
                                      generator=torch.Generator().manual_seed(t.seed), **loader_kw)

        # ---- counters (all restored on resume)
        self.step = 0
        self.nimg = 0
        self.epoch = 0
        self.nonfinite_total = 0
        self.nonfinite_consecutive = 0
        self.last_stats: dict[str, float] = {}
        self.checkpoints = CheckpointManager(self.run_dir, keep_last=t.keep_last)
        self.quarantined: list[str] = self._read_quarantine()
        if self.quarantined and hasattr(train_dataset, "quarantine_ids"):
            train_dataset.quarantine_ids(self.quarantined)  # before any worker starts: they get the list
        self._vis_batch = None
        self._writer = None
        self._log_tb = log_tensorboard
        self._last_ckpt_nimg = -1

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", config_to_yaml(config))
        ckpt = Path(resume_from) if resume_from else (self.checkpoints.latest() if resume else None)
        if ckpt is not None:
            state = load_checkpoint(ckpt, map_location="cpu")
            if state.get("config_yaml") != config_to_yaml(config):
                self._print(f"warning: {ckpt.name} was written with a different config; resuming with the new one "
                            "(see config.yaml in the run dir for what is in use now)")
            self.load_state_dict(state)
            self._last_ckpt_nimg = self.nimg
            self._print(f"resumed from {ckpt} at step {self.step}, {self.nimg} images, epoch {self.epoch}")

    # ------------------------------------------------------------------ setup

    def _setup_backends(self) -> None:
        t = self.tcfg
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=False)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = self.device.type == "cuda"
        if t.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(t.cpu_threads)
        tf32 = t.precision in ("tf32", "bf16", "fp16") and not t.deterministic
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    def _print(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, flush=True)

    @property
    def writer(self):
        if self._writer is None and self.dist.is_main and self._log_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))
        return self._writer

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": "s2r_train.checkpoint/1",
            "G": self.G_raw.state_dict(),
            "D": self.D_raw.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": rng,
            "step": self.step,
            "nimg": self.nimg,
            "epoch": self.epoch,
            "nonfinite_total": self.nonfinite_total,
            "world_size": self.dist.world_size,
            "config_yaml": config_to_yaml(self.config),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.G_raw.load_state_dict(state["G"])
        self.D_raw.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler_g"):
            self.scaler_g.load_state_dict(state["scaler_g"])
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step, self.nimg, self.epoch = int(state["step"]), int(state["nimg"]), int(state["epoch"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        if int(state.get("world_size", 1)) != self.dist.world_size and self.dist.is_main:
            print(f"warning: checkpoint was written with {state.get('world_size')} processes, resuming with "
                  f"{self.dist.world_size}; the data order after this point differs from an uninterrupted run")

    def check_ddp_consistency(self) -> None:
        """Raise if the ranks' G/D weights differ (edm2 ``check_ddp_consistency``); no-op single-process."""
        if not self.dist.enabled:
            return
        sums = torch.stack([p.detach().double().sum() for p in list(self.G_raw.parameters()) +
                            list(self.D_raw.parameters())]).to(self.device)
        lo, hi = sums.clone(), sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise RuntimeError(f"DDP ranks disagree on the weights at step {self.step} "
                               f"({int((lo != hi).sum())} tensors differ)")

    def save_checkpoint(self) -> Path | None:
        if self._last_ckpt_nimg == self.nimg:
            return None
        self.check_ddp_consistency()
        path = None
        if self.dist.is_main:
            path = self.checkpoints.save(self.step, self.state_dict())
        self._last_ckpt_nimg = self.nimg
        if self.dist.enabled:
            dist.barrier()
        return path

    # ------------------------------------------------------------------ steps

    def _to_device(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        batch = decode_batch(dict(batch), self.device)  # compact loader items → float layout, on the device
        cond = condition_from_batch(batch, self.net_cfg.conditioning, self.device)
        real = batch["real"].to(self.device, non_blocking=True).float()
        weight = None
        if self.tcfg.l1_alignment_weighting:
            score = batch.get("alignment", (batch.get("meta") or {}).get("alignment"))
            if score is None:
                raise KeyError("train.l1_alignment_weighting needs a per-pair 'alignment' score in [0, 1] in each "
                               "batch (batch['alignment'] or batch['meta']['alignment']); or set it to false")
            weight = torch.as_tensor(score).to(self.device).float()
        if self.channels_last:
            cond = cond.contiguous(memory_format=torch.channels_last)
            real = real.contiguous(memory_format=torch.channels_last)
        return cond, real, weight

    def _backward_and_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                           params: list[nn.Parameter]) -> bool:
        """Zero grads, backward, then step only if loss and grads are finite on every rank.
        True if stepped."""
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        loss_ok = bool(torch.isfinite(loss.detach()).item())
        norm = _grad_norm(params)
        grad_ok = bool(torch.isfinite(norm).item()) or scaler.is_enabled()  # fp16: the scaler skips inf grads
        ok = _all_true(loss_ok and grad_ok, self.dist)
        if ok:
            if self.tcfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.tcfg.grad_clip_norm, foreach=True)
            scaler.step(opt)
        scaler.update()
        return ok

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One iteration (``d_steps_per_g`` D updates, one G update, EMA). Returns scalar stats;
        ``skipped`` = 1.0 when a guard skipped an update."""
        if self.device.type != "cpu":
            return self._train_step(batch)
        # CPU: Adam's second moments reach subnormals, which made steps ~10x slower (measured);
        # flush them during the step only, so the process-wide FP state is left as found.
        torch.set_flush_denormal(True)
        try:
            return self._train_step(batch)
        finally:
            torch.set_flush_denormal(False)

    def _train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        t = self.tcfg
        torch.manual_seed(step_seed(t.seed, self.dist.rank, self.step))
        self.G.train()
        self.D.train()
        if not _all_true(_finite_batch(batch), self.dist):
            return self._count_skip({"skipped": 1.0, "skipped_input": 1.0}, "the batch has non-finite sim/real values")
        cond, real, weight = self._to_device(batch)
        saved_stats = [b.clone() for b in self._running_stats]  # BN statistics of a bad step are not kept
        if t.mode == "paired":
            valid = batch["valid"].to(self.device).float() if "valid" in batch else None
            stats = self._paired_step(cond, real, weight, valid)
        else:
            stats = self._cycle_step(cond, real)
        if stats["skipped"]:
            with torch.no_grad():
                for b, saved in zip(self._running_stats, saved_stats):
                    b.copy_(saved)
            return self._count_skip(stats, "non-finite loss or gradient")
        self.nonfinite_consecutive = 0
        return stats

    def _count_skip(self, stats: dict[str, float], why: str) -> dict[str, float]:
        self.nonfinite_total += 1
        self.nonfinite_consecutive += 1
        if self.progress:
            print(f"step {self.step}: skipped update ({why}); {self.nonfinite_consecutive} in a row, "
                  f"{self.nonfinite_total} in total", flush=True)
        if self.nonfinite_consecutive >= self.tcfg.max_nonfinite_steps:
            raise NonFiniteTrainingError(
                f"training stopped at step {self.step}: {self.nonfinite_consecutive} consecutive updates were "
                f"skipped ({why}); limit train.max_nonfinite_steps={self.tcfg.max_nonfinite_steps}. Check the data "
                "for NaN/Inf, lower the learning rates, or try precision: fp32.")
        stats["nonfinite_total"] = float(self.nonfinite_total)
        return stats

    def _autocast(self):
        return autocast_context(self.device, self.tcfg.precision)

    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        beta = self.tcfg.ema_beta if self.nimg >= self.tcfg.ema_start_nimg else 0.0
        ema_update(self.G_ema, self.G_raw, beta)

    def _paired_step(self, cond: torch.Tensor, real: torch.Tensor, weight: torch.Tensor | None,
                     valid: torch.Tensor | None = None) -> dict[str, float]:
        t = self.tcfg
        n = cond.shape[0]
        with self._autocast():
            fake, mu, logvar = self.G(cond, real if self.net_cfg.generator.use_vae else None)
        real_pair = torch.cat([cond, real.to(cond.dtype)], 1)
        stats: dict[str, float] = {"skipped": 0.0}
        adversarial = self.nimg >= t.adversarial_start_nimg  # before: L1 warm-up, D untouched

        # ---- D update(s): one concatenated fake+real batch
        d_ok = True
        for _ in range(t.d_steps_per_g if adversarial else 0):
            with self._autocast():
                d_out = self.D(torch.cat([torch.cat([cond, fake.detach().to(cond.dtype)], 1), real_pair], 0))
            d_fake, d_real = _split_d(d_out, n)
            loss_d = t.lambda_gan * d_adversarial_loss(d_real, d_fake, t.gan_loss)
            d_ok = self._backward_and_step(loss_d, self.opt_d, self.scaler_d, list(self.D_raw.parameters())) and d_ok
            acc_r, acc_f = discriminator_accuracy(d_real, d_fake, threshold=0.5 if t.gan_loss == "ls" else 0.0)
            stats.update(loss_d=float(loss_d.detach()), d_acc_real=acc_r, d_acc_fake=acc_f)

        # ---- G update
        terms: dict[str, torch.Tensor] = {}
        if adversarial:
            with self._autocast():
                d_out = self.D(torch.cat([torch.cat([cond, fake.to(cond.dtype)], 1), real_pair], 0))
            d_fake, d_real = _split_d(d_out, n)
            terms["g_adv"] = t.lambda_gan * g_adversarial_loss(d_fake, t.gan_loss)
            if t.lambda_feat > 0:
                terms["g_feat"] = t.lambda_feat * feature_matching_loss(d_fake, d_real)
        if t.lambda_l1 > 0:
            terms["g_l1"] = t.lambda_l1 * weighted_l1_loss(fake, real, weight, mask=valid)
        if t.lambda_l2 > 0:
            terms["g_l2"] = t.lambda_l2 * weighted_l2_loss(fake, real, weight, mask=valid)
        if self.perceptual is not None:
            terms["g_vgg"] = t.lambda_vgg * self.perceptual(fake, real)
        if mu is not None:
            terms["g_kl"] = t.lambda_kl * kl_loss(mu, logvar)
        loss_g = sum(terms.values())
        g_ok = self._backward_and_step(loss_g, self.opt_g, self.scaler_g, list(self.G_raw.parameters()))
        if g_ok:
            self._update_ema()
        self.opt_d.zero_grad(set_to_none=True)  # drop D grads from the G backward
        stats.update({k: float(v.detach()) for k, v in terms.items()})
        stats["loss_g"] = float(loss_g.detach())
        with torch.no_grad():
            stats["l1"] = float(l1(fake, real).mean())
            stats["psnr"] = float(psnr(fake, real).mean())
            stats["ssim"] = float(ssim(fake, real).mean())
        stats["skipped"] = 0.0 if (d_ok and g_ok) else 1.0
        return stats

    def _cycle_step(self, cond: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        t = self.tcfg
        with self._autocast():
            out = self.G(cond, real)
        stats: dict[str, float] = {"skipped": 0.0}
        d_ok = True
        for _ in range(t.d_steps_per_g):
            with self._autocast():
                (d_a, d_b) = self.D(torch.cat([out["fake_cond"].detach().to(cond.dtype), cond], 0),
                                    torch.cat([out["fake_real"].detach().to(real.dtype), real], 0))
            fa, ra = _split_d(d_a, cond.shape[0])
            fb, rb = _split_d(d_b, real.shape[0])
            loss_d = t.lambda_gan * (d_adversarial_loss(ra, fa, t.gan_loss) + d_adversarial_loss(rb, fb, t.gan_loss))
            d_ok = self._backward_and_step(loss_d, self.opt_d, self.scaler_d, list(self.D_raw.parameters())) and d_ok
        acc_r, acc_f = discriminator_accuracy(rb, fb, threshold=0.5 if t.gan_loss == "ls" else 0.0)
        stats.update(loss_d=float(loss_d.detach()), d_acc_real=acc_r, d_acc_fake=acc_f)
        with self._autocast():
            (d_a, d_b) = self.D(torch.cat([out["fake_cond"], cond.to(out["fake_cond"].dtype)], 0),
                                torch.cat([out["fake_real"], real.to(out["fake_real"].dtype)], 0))
        fa, ra = _split_d(d_a, cond.shape[0])
        fb, rb = _split_d(d_b, real.shape[0])
        terms = {"g_adv": t.lambda_gan * (g_adversarial_loss(fa, t.gan_loss) + g_adversarial_loss(fb, t.gan_loss)),
                 "g_cycle": t.lambda_cycle * (weighted_l1_loss(out["rec_cond"], cond) +
                                              weighted_l1_loss(out["rec_real"], real))}
        if t.lambda_feat > 0:
            terms["g_feat"] = t.lambda_feat * (feature_matching_loss(fa, ra) + feature_matching_loss(fb, rb))
        if t.lambda_l1 > 0:
            terms["g_l1"] = t.lambda_l1 * weighted_l1_loss(out["fake_real"], real)
        if self.perceptual is not None:
            terms["g_vgg"] = t.lambda_vgg * self.perceptual(out["fake_real"], real)
        loss_g = sum(terms.values())
        g_ok = self._backward_and_step(loss_g, self.opt_g, self.scaler_g, list(self.G_raw.parameters()))
        if g_ok:
            self._update_ema()
        self.opt_d.zero_grad(set_to_none=True)
        stats.update({k: float(v.detach()) for k, v in terms.items()})
        stats["loss_g"] = float(loss_g.detach())
        fake = out["fake_real"].detach()
        stats["l1"] = float(l1(fake, real).mean())
        stats["psnr"] = float(psnr(fake, real).mean())
        stats["ssim"] = float(ssim(fake, real).mean())
        stats["skipped"] = 0.0 if (d_ok and g_ok) else 1.0
        return stats

    # ------------------------------------------------------------------ eval / visualisation

    def generator_for_eval(self) -> nn.Module:
        return self.G_ema if self.G_ema is not None else self.G_raw

    @torch.no_grad()
    def predict(self, cond: torch.Tensor, G: nn.Module | None = None) -> torch.Tensor:
        """Eval-mode prediction of a batch of conditions (fp32 output in [−1, 1])."""
        G = G or self.generator_for_eval()
        was_training = G.training
        G.eval()
        with self._autocast():
            out = G(cond)
        G.train(was_training)
        return out[0].float()

    def _paired_d_logits(self, cond: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        D = self.D_raw.b if self.tcfg.mode == "cycle" else self.D_raw
        x = image if self.tcfg.mode == "cycle" else torch.cat([cond, image], 1)
        with self._autocast():
            return D(x)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_dataset is None or self.tcfg.val_batches == 0 or len(self.val_dataset) == 0:
            return {}
        loader = DataLoader(self.val_dataset, batch_size=self.tcfg.batch_size, shuffle=False, num_workers=0)
        sums: dict[str, float] = {}
        count = 0
        self.D_raw.eval()
        try:
            for i, batch in enumerate(loader):
                if i >= self.tcfg.val_batches:
                    break
                cond, real, _ = self._to_device(batch)
                fake = self.predict(cond)
                real_out = self._paired_d_logits(cond, real)
                fake_out = self._paired_d_logits(cond, fake)
                acc_r, acc_f = discriminator_accuracy(real_out, fake_out,
                                                      threshold=0.5 if self.tcfg.gan_loss == "ls" else 0.0)
                vals = {"l1": float(l1(fake, real).mean()), "psnr": float(psnr(fake, real).mean()),
                        "ssim": float(ssim(fake, real).mean()), "d_acc_real": acc_r, "d_acc_fake": acc_f}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        finally:
            self.D_raw.train()
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _vis_source(self) -> dict[str, Any] | None:
        if self._vis_batch is None and self.tcfg.num_vis_samples > 0:
            ds = self.vis_dataset
            k = min(self.tcfg.num_vis_samples, len(ds))
            from torch.utils.data import default_collate

            self._vis_batch = default_collate([ds[i] for i in range(k)])
        return self._vis_batch

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        """Per epoch: ``samples/epoch-XXXX.png`` rows = fixed samples, columns = prediction,
        D map (sigmoid of scale-0 logits), target; ``samples/sim.png`` (DiffCol, normals, depth) once."""
        if not self.dist.is_main:
            return None
        batch = self._vis_source()
        if batch is None:
            return None
        cond, real, _ = self._to_device(batch)
        fake = self.predict(cond)
        self.D_raw.eval()
        try:
            logits = self._paired_d_logits(cond, fake)[0][-1].float()
        finally:
            self.D_raw.train()
        dmap = torch.sigmoid(F.interpolate(logits, size=fake.shape[-2:], mode="nearest")) * 2 - 1
        rows = torch.cat([fake, dmap.expand(-1, 3, -1, -1), real], 3).cpu()  # (B,3,h,3w) in [-1,1]
        grid = _to_uint8(torch.cat(list(rows), 1))
        out_dir = self.run_dir / "samples"
        path = out_dir / f"epoch-{self.epoch:04d}.png"
        _save_png(path, grid)
        if self.writer is not None:
            self.writer.add_image("samples/pred_dmap_target", grid, self.step, dataformats="HWC")
        sim_path = out_dir / "sim.png"
        if not sim_path.exists():
            sim = batch["sim"].float()
            panes = torch.cat([sim[:, 0:3] * 2 - 1, sim[:, 3:6], (sim[:, 6:7] * 2 - 1).expand(-1, 3, -1, -1)], 3)
            sim_grid = _to_uint8(torch.cat(list(panes), 1))
            _save_png(sim_path, sim_grid)
            if self.writer is not None:
                self.writer.add_image("samples/sim_diffcol_normal_depth", sim_grid, 0, dataformats="HWC")
        return path

    def _log(self, stats: Mapping[str, float], prefix: str) -> None:
        if not self.dist.is_main:
            return
        rec = {"step": self.step, "nimg": self.nimg, "epoch": self.epoch, "split": prefix, **stats}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self.writer is not None:  # x axis: optimizer steps (as --max-steps and the logs)
            for k, v in stats.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, self.step)
            self.writer.add_scalar("progress/images_seen", self.nimg, self.step)
            self.writer.add_scalar("progress/epoch", self.epoch, self.step)

    # ------------------------------------------------------------------ damaged samples

    @property
    def quarantine_path(self) -> Path:
        return self.run_dir / "quarantine.txt"

    def _read_quarantine(self) -> list[str]:
        try:
            return [line.strip() for line in self.quarantine_path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def _note_quarantined(self, batch: Mapping[str, Any]) -> None:
        """Collect the damaged samples the dataset reported in this batch (``meta["quarantined"]``);
        list new ones in ``quarantine.txt``, log them, stop past ``max_quarantined_fraction``.
        Multi-process: what any rank found is shared with all (every rank calls this every step;
        one integer all-reduce, plus a gather in the rare step that found something), so all
        ranks keep the same list and stop together."""
        reported = (batch.get("meta") or {}).get("quarantined") or []
        if isinstance(reported, str):
            reported = [reported]
        new = sorted({i for entry in reported for i in str(entry).split() if i} - set(self.quarantined))
        if self.dist.enabled:
            found = torch.tensor([len(new)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(found)
            if int(found.item()):
                everyone: list[list[str] | None] = [None] * self.dist.world_size
                dist.all_gather_object(everyone, new)
                new = sorted(set().union(*(set(x or []) for x in everyone)) - set(self.quarantined))
        if not new:
            return
        self.quarantined += new
        n_train = len(self.train_dataset)
        fraction = len(self.quarantined) / max(n_train, 1)
        if self.dist.is_main:
            atomic_write_text(self.quarantine_path, "".join(f"{i}\n" for i in self.quarantined))
            print(f"step {self.step}: quarantined damaged sample(s) {', '.join(new)} (non-finite values in the stored "
                  f"passes; skipped for the rest of the run): {len(self.quarantined)} of {n_train} train samples, "
                  f"listed in {self.quarantine_path}", flush=True)
            if self.writer is not None:
                self.writer.add_scalar("data/quarantined_samples", len(self.quarantined), self.step)
        if fraction > self.tcfg.max_quarantined_fraction:
            raise DataQualityError(
                f"training stopped at step {self.step}: {len(self.quarantined)} of {n_train} train samples "
                f"({fraction:.1%}) have non-finite stored passes, more than train.max_quarantined_fraction="
                f"{self.tcfg.max_quarantined_fraction}; run `python -m s2r_data.store verify {self.dataset_url}` "
                f"and rebuild them (list: {self.quarantine_path})")

    # ------------------------------------------------------------------ loop

    def _checkpoint_due(self) -> bool:
        every = self.tcfg.checkpoint_every_nimg
        if every is None:
            return False
        global_batch = self.tcfg.batch_size * self.dist.world_size
        return self.nimg // every > (self.nimg - global_batch) // every

    def fit(self) -> dict[str, Any]:
        """Train until ``epochs`` (or ``max_steps``) is reached; returns a summary."""
        t = self.tcfg
        global_batch = t.batch_size * self.dist.world_size
        self._print(f"training {t.mode} {self.net_cfg.generator.arch}: {len(self.train_dataset)} items, "
                    f"{self.steps_per_epoch} steps/epoch, {t.epochs} epochs, batch {t.batch_size}×{self.dist.world_size},"
                    f" {t.precision}, device {self.device}")
        done = self._is_done()
        t0, n0 = time.perf_counter(), self.nimg
        bar = None
        if self.progress:
            from tqdm import tqdm

            total_steps = self.total_nimg // global_batch
            if self.max_steps is not None:
                total_steps = min(total_steps, self.max_steps)
            bar = tqdm(total=total_steps, initial=self.step, unit="step", desc="train")
        while not done:
            self.epoch = self.nimg // self.epoch_nimg
            start = (self.nimg % self.epoch_nimg) // self.dist.world_size
            self.sampler.set_epoch(self.epoch, start)
            epoch_finished = True
            for batch in self.loader:
                self._note_quarantined(batch)
                stats = self.train_step(batch)
                self.step += 1
                self.nimg += global_batch
                self.last_stats = stats
                if bar is not None:
                    bar.update(1)
                if self.step % t.log_every_steps == 0 or stats.get("skipped"):
                    dt = time.perf_counter() - t0
                    stats = {**stats, "images_per_s": (self.nimg - n0) / max(dt, 1e-9),
                             "nonfinite_total": float(self.nonfinite_total),
                             "quarantined_total": float(len(self.quarantined))}
                    self._log(stats, "train")
                if self._checkpoint_due():
                    self.save_checkpoint()
                if self._is_done():
                    epoch_finished = self.nimg % self.epoch_nimg == 0
                    break
            if epoch_finished:
                self._end_epoch()
            done = self._is_done()
        self.save_checkpoint()
        if bar is not None:
            bar.close()
        summary: dict[str, Any] = {
            "step": self.step, "nimg": self.nimg, "epoch": self.epoch, "nonfinite_total": self.nonfinite_total,
            "quarantined_total": len(self.quarantined), "quarantined": list(self.quarantined),
            "quarantine_list": str(self.quarantine_path) if self.quarantined else None}
        if self.dist.is_main:
            evaluation = self.evaluate_at_end()
            if evaluation is not None:
                summary["eval"] = evaluation
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if self._writer is not None:
            self._writer.flush()
        return {**summary, "last": self.last_stats}

    def evaluate_at_end(self) -> dict[str, Any] | None:
        """``eval.at_end``: the generators (EMA and raw) against the baselines on the held-out
        splits (``s2r_train.evaluate``), written to ``<run_dir>/eval/`` and TensorBoard. Skipped
        for synthetic datasets, stores without a held-out split, and when ``eval/metrics.json``
        already holds this step (a rerun after the end)."""
        url = self.dataset_url
        if not self.config.eval.at_end or url is None or url.startswith("synthetic://"):
            return None
        from .evaluate import evaluate, format_table, held_out_splits, log_tensorboard, write_eval_outputs

        out_dir = self.run_dir / "eval"
        try:
            previous = json.loads((out_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            previous = {}
        if previous.get("step") == self.step:
            return {"metrics": str(out_dir / "metrics.json"), "table": str(out_dir / "metrics.md"), "reused": True}
        if not held_out_splits(url):
            self._print(f"evaluation skipped: {url} has no val/test split (`s2r-train splits --dataset {url} --reassign` "
                        "makes one)")
            return None
        generators = {"model_ema": self.G_ema} if self.G_ema is not None else {}
        generators["model_raw"] = self.G_raw
        if self.tcfg.mode == "cycle":
            generators = {k: _unwrap(g).ab for k, g in generators.items()}
        self._print(f"evaluating step {self.step} against the class-mean and nearest-neighbour baselines ...")
        report = evaluate(url, generators, self.config, progress=self.progress)
        report.metrics.update(step=self.step, nimg=self.nimg, checkpoint=str(self.checkpoints.latest() or ""))
        paths = write_eval_outputs(report, out_dir)
        if self.writer is not None:
            log_tensorboard(self.writer, report.metrics, report.grids, self.step)
        self._print(format_table(report.metrics))
        return {"metrics": str(paths["json"]), "table": str(paths["markdown"])}

    def _is_done(self) -> bool:
        return self.nimg >= self.total_nimg or (self.max_steps is not None and self.step >= self.max_steps)

    def _end_epoch(self) -> None:
        finished_epoch = self.nimg // self.epoch_nimg  # 1-based count of completed epochs
        self.epoch = finished_epoch - 1
        if finished_epoch % self.tcfg.samples_every_epochs == 0 or self.nimg >= self.total_nimg:
            self.write_samples()
            val = self.validate()
            if val:
                self._log(val, "val")
        self.epoch = finished_epoch
        if finished_epoch % self.tcfg.checkpoint_every_epochs == 0 or self.nimg >= self.total_nimg:
            self.save_checkpoint()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# --------------------------------------------------------------------------- images


def _to_uint8(img_chw: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [−1, 1] → (H,W,3) uint8."""
    x = ((img_chw.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def _save_png(path: Path, hwc_uint8: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(hwc_uint8).save(tmp, format="PNG")


def config_from_checkpoint(state: Mapping[str, Any]) -> Config:
    import yaml

    return config_from_dict(yaml.safe_load(state["config_yaml"]))
