"""Training-step throughput of the sim→real GAN: images/s for SPADE and U-net generators.

One full ``Trainer.train_step`` per measurement (D step on a concatenated fake+real batch,
G step with adversarial + feature matching + L1, EMA, finiteness guards), on synthetic
batches already in memory (data loading is measured elsewhere: crops benchmark).

Grid: model {spade, unet} × batch × precision {fp32, bf16} × {eager, torch.compile}.
Baseline = fp32 eager of the same model and batch, measured in the same run; each record
carries ``ratio_vs_fp32_eager``. ``thesis_epochs_per_hour`` = images/s × 3600 /
``--thesis-epoch-images`` (default 10,000, an assumption: the thesis ran 330 epochs in
5 days on one V100 at batch 2; at the ~7.6 img/s SPADE reaches on a V100 at 256²
(NVlabs/SPADE#94) that is 5·86,400·7.6 / 330 ≈ 10,000 images per epoch).

    python benchmarks/train_step.py            # GPU: 256², batches 2 8 16 32
    python benchmarks/train_step.py --quick    # CPU smoke: 64², tiny nets, batches 2 4

Writes benchmarks/results/train_step.json (list of records).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_train.config import load_config  # noqa: E402
from s2r_train.synthetic import SyntheticPairDataset  # noqa: E402
from s2r_train.trainer import DistInfo, Trainer  # noqa: E402


def model_overrides(model: str, *, quick: bool, size: int) -> tuple[str, list[str]]:
    """(preset, overrides) for one benchmarked generator."""
    common = [f"data.crop_size={size}", "train.val_batches=0", "train.num_vis_samples=0", "train.num_workers=0",
              "train.deterministic=false", "train.epochs=1"]
    if model == "spade":  # the s2r recipe: SPADE nf 64 + 2-scale spectral PatchGAN
        tiny = ["network.generator.base_filters=8", "network.generator.spade_hidden=16",
                "network.discriminator.base_filters=8", "network.discriminator.n_layers=2"] if quick else []
        return "s2r", common + tiny
    if model == "unet":  # the thesis U-net: 128 filters, 8 levels, batch norm
        levels = 6 if quick else 8
        return "s2r", common + ["network.generator.arch=unet", f"network.generator.unet_levels={levels}",
                                f"network.generator.base_filters={16 if quick else 128}",
                                "network.generator.norm=batch"] + \
            (["network.discriminator.base_filters=8", "network.discriminator.n_layers=2"] if quick else [])
    raise ValueError(model)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def measure(model: str, batch: int, precision: str, compiled: bool, *, device: torch.device, size: int, quick: bool,
            warmup: int, steps: int) -> dict:
    preset, over = model_overrides(model, quick=quick, size=size)
    over += [f"train.batch_size={batch}", f"train.precision={precision}", f"train.compile={str(compiled).lower()}"]
    cfg = load_config(preset, over)
    ds = SyntheticPairDataset(max(batch, 2), crop_size=size)
    tr = Trainer(cfg, run_dir=Path("/tmp/s2r_bench_train_step"), train_dataset=ds, resume=False, progress=False,
                 log_tensorboard=False, dist_info=DistInfo(device=device))
    data = default_collate([ds[i % len(ds)] for i in range(batch)])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        tr.train_step(data)
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step(data)
    sync()
    dt = time.perf_counter() - t0
    rec = {"device": device_name(device), "model": model, "size": size, "batch": batch, "precision": precision,
           "compiled": compiled, "images_per_s": batch * steps / dt, "ms_per_step": 1000 * dt / steps,
           "warmup_s": warm_s, "params_G": sum(p.numel() for p in tr.G_raw.parameters()),
           "params_D": sum(p.numel() for p in tr.D_raw.parameters())}
    if device.type == "cuda":
        rec["max_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized smoke run: 64², tiny nets")
    p.add_argument("--device", default=None)
    p.add_argument("--models", nargs="+", default=["spade", "unet"])
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--compile", choices=["no", "yes", "both"], default=None,
                   help="eager, torch.compile or both (default: both on GPU, no with --quick)")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--thesis-epoch-images", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_step.json")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    size = args.size or (64 if quick else 256)
    batches = args.batches or ([2, 4] if quick else [2, 8, 16, 32])
    compile_mode = args.compile or ("no" if quick else "both")
    compiled_opts = {"no": [False], "yes": [True], "both": [False, True]}[compile_mode]
    warmup = args.warmup if args.warmup is not None else (2 if quick else 5)
    steps = args.steps or (5 if quick else 20)
    if device.type != "cuda":
        print(f"NOTE: no GPU here ({device_name(device)}); these CPU numbers only check the script works.")

    records = []
    for model in args.models:
        for batch in batches:
            base = None
            for compiled in compiled_opts:
                for precision in args.precisions:
                    try:
                        rec = measure(model, batch, precision, compiled, device=device, size=size, quick=quick,
                                      warmup=warmup, steps=steps)
                    except Exception as exc:  # noqa: BLE001 (e.g. OOM at big batch, no compiler): record it
                        rec = {"device": device_name(device), "model": model, "size": size, "batch": batch,
                               "precision": precision, "compiled": compiled, "images_per_s": None,
                               "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    if precision == "fp32" and not compiled and rec["images_per_s"]:
                        base = rec["images_per_s"]
                    ips = rec["images_per_s"]
                    rec["ratio_vs_fp32_eager"] = (ips / base) if (ips and base) else None
                    rec["thesis_epoch_images"] = args.thesis_epoch_images
                    rec["thesis_epochs_per_hour"] = (ips * 3600 / args.thesis_epoch_images) if ips else None
                    records.append(rec)
                    print(_row(rec), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _row(r: dict) -> str:
    ips = f"{r['images_per_s']:9.2f}" if r.get("images_per_s") else "    error"
    ratio = f"{r['ratio_vs_fp32_eager']:5.2f}x" if r.get("ratio_vs_fp32_eager") else "   - "
    ep = f"{r['thesis_epochs_per_hour']:8.3f}" if r.get("thesis_epochs_per_hour") else "       -"
    return (f"{r['model']:6s} {r['size']:4d}² b{r['batch']:<3d} {r['precision']:5s} "
            f"{'compiled' if r['compiled'] else 'eager   '} {ips} img/s {ratio} {ep} thesis-epochs/h"
            + (f"  [{r['error']}]" if r.get("error") else ""))


if __name__ == "__main__":
    sys.exit(main())
