"""Translation quality vs training time, against the class-mean and nearest-neighbour baselines.

On the sample city's dataset (built with ``python -m flows.demo --no-train`` when ``--dataset`` is
not given), at fixed seeds, every number from ``s2r_train.evaluate`` (held-out val split; the
baselines are fitted on the train split in the same run):

1. **demo**: the ``demo`` recipe for the demo's fixed work budget (``flows.demo.DEMO_TRAIN_STEPS``
   optimizer steps), full evaluation (crops, whole panoramas tiled and direct, FID/KID). Its
   CPU seconds per step (``time.process_time`` of the training process, one torch thread) give
   the budget's duration on a quiet machine, whatever the load while measuring.
2. **s2r**: the ``s2r`` recipe at reduced width (``S2R_CPU_OVERRIDES``: SPADE nf 8, 64-px crops,
   fp32; everything else as the preset) for ``--s2r-minutes`` of training wall time, scored on
   the fixed val crops every ``--eval-every-minutes`` (no FID in between; a full evaluation at
   the end): the quality-vs-time curve and where it crosses each baseline (first evaluation at
   which the EMA generator is better; time interpolated linearly).
3. **GPU** (``--gpu``, or whenever CUDA is available): the full ``s2r`` recipe at 256², batch 16,
   bf16 instead of step 2 — images/s and the same curve.

    python benchmarks/train_quality.py             # CPU: ≤ 40 min on 2 cores (demo ≈ 6, s2r 25 + evals)
    python benchmarks/train_quality.py --quick     # smoke test: a few minutes
    python benchmarks/train_quality.py --gpu       # on a GPU machine

Writes benchmarks/results/train_quality.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_train.config import EvalConfig, load_config  # noqa: E402
from s2r_train.evaluate import evaluate, format_table  # noqa: E402
from s2r_train.trainer import DistInfo, Trainer  # noqa: E402

# the s2r recipe at reduced width for CPU runs (network width ÷ 8, 64-px crops, fp32, one loader worker)
S2R_CPU_OVERRIDES = [
    "network.generator.base_filters=8", "network.generator.spade_hidden=32", "network.discriminator.base_filters=16",
    "data.crop_size=64", "train.batch_size=4", "train.precision=fp32", "train.channels_last=false",
    "train.num_workers=1", "train.cpu_threads=1", "train.ema_start_nimg=0",
]
S2R_GPU_OVERRIDES = ["train.batch_size=16", "train.precision=bf16", "data.crop_size=256"]  # = the preset, stated
COMMON_OVERRIDES = ["train.epochs=1000000", "train.checkpoint_every_epochs=1000000", "train.num_vis_samples=0",
                    "train.val_batches=0", "train.log_every_steps=50"]
CURVE_EVAL = EvalConfig(fid_crops=0, panoramas=False, grid_rows=0)


def ensure_dataset(url: str | None, work: Path) -> str:
    if url:
        return url
    store = work / "sample" / "dataset.zarr"
    if not (store / "index.parquet").is_file():
        print(f"building the sample dataset into {work} (python -m flows.demo --no-train) ...", flush=True)
        subprocess.run([sys.executable, "-m", "flows.demo", "--no-train", "--out", str(work)], check=True, cwd=ROOT)
    return str(store)


def subjects(metrics: dict, part: str = "crops", split: str = "val") -> dict:
    return metrics["splits"][split][part]["subjects"]


def run_demo(url: str, work: Path, steps: int, device: torch.device) -> dict:
    """The demo recipe for ``steps`` optimizer steps, then the full evaluation (as at the end of a
    demo run); the training process's CPU seconds are measured apart from the evaluation's."""
    from s2r_train.evaluate import write_eval_outputs

    run = work / "runs" / "demo"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_config("demo", ["train.num_vis_samples=0", "train.val_batches=0", "eval.at_end=false"])
    tr = Trainer(cfg, run_dir=run, dataset_url=url, max_steps=steps, progress=False, log_tensorboard=False,
                 dist_info=DistInfo(device=device))
    c0, w0 = time.process_time(), time.perf_counter()
    summary = tr.fit()
    train_cpu, train_wall = time.process_time() - c0, time.perf_counter() - w0
    w1 = time.perf_counter()
    report = evaluate(url, {"model_ema": tr.G_ema, "model_raw": tr.G_raw}, cfg)
    report.metrics.update(step=tr.step, nimg=tr.nimg)
    write_eval_outputs(report, run / "eval")
    tr.close()
    return {"steps": summary["step"], "train_wall_s": round(train_wall, 1), "cpu_s_per_step": train_cpu / max(steps, 1),
            "eval_wall_s": round(time.perf_counter() - w1, 1), "metrics": report.metrics}


def run_curve(url: str, work: Path, *, preset: str, overrides: list[str], minutes: float, eval_every_min: float,
              device: torch.device) -> dict:
    """Train ``preset`` for ``minutes`` of training wall time, scoring fixed val crops along the way."""
    run = work / "runs" / f"{preset}-curve"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_config(preset, COMMON_OVERRIDES + ["eval.at_end=false"] + overrides)
    tr = Trainer(cfg, run_dir=run, dataset_url=url, max_steps=0, progress=False, log_tensorboard=False,
                 dist_info=DistInfo(device=device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    curve, train_s, cpu_s = [], 0.0, 0.0
    steps_per_s = None
    chunk = 10
    while train_s < minutes * 60:
        tr.max_steps = tr.step + chunk
        c0, w0 = time.process_time(), time.perf_counter()
        tr.fit()
        sync()
        dt = time.perf_counter() - w0
        train_s += dt
        cpu_s += time.process_time() - c0
        steps_per_s = chunk / max(dt, 1e-9)
        gens = {"model_ema": tr.G_ema, "model_raw": tr.G_raw} if tr.G_ema is not None else {"model_raw": tr.G_raw}
        s = subjects(evaluate(url, gens, cfg, eval_config=CURVE_EVAL).metrics)
        point = {"step": tr.step, "images": tr.nimg, "train_minutes": round(train_s / 60, 3),
                 "train_cpu_minutes": round(cpu_s / 60, 3), **{f"{k}_{m}": round(v[m], 4) for k, v in s.items()
                                                               for m in ("l1", "psnr", "ssim")}}
        curve.append(point)
        print(json.dumps(point), flush=True)
        remaining = minutes * 60 - train_s
        chunk = max(1, int(min(eval_every_min * 60, max(remaining, 1)) * steps_per_s))
    final_gens = {"model_ema": tr.G_ema, "model_raw": tr.G_raw} if tr.G_ema is not None else {"model_raw": tr.G_raw}
    final = evaluate(url, final_gens, cfg).metrics
    tr.close()
    return {"preset": preset, "overrides": overrides, "curve": curve, "crossings": crossings(curve),
            "images_per_s": round(tr.nimg / max(train_s, 1e-9), 2), "final": final}


def crossings(curve: list[dict], model: str = "model_ema") -> dict:
    """For each baseline and metric: the first evaluation where the model is better, with the
    training time interpolated between it and the previous evaluation (None: never crossed)."""
    out = {}
    for base in ("class_mean", "nearest_neighbour"):
        for metric, better in (("psnr", lambda m, b: m > b), ("l1", lambda m, b: m < b)):
            key, hit = f"{base}_{metric}", None
            prev = None
            for p in curve:
                m, b = p.get(f"{model}_{metric}"), p.get(f"{base}_{metric}")
                if m is not None and b is not None and better(m, b):
                    t = p["train_minutes"]
                    if prev is not None:
                        m0 = prev[f"{model}_{metric}"]
                        frac = (b - m0) / (m - m0) if m != m0 else 1.0
                        t = prev["train_minutes"] + min(max(frac, 0.0), 1.0) * (p["train_minutes"] - prev["train_minutes"])
                    hit = {"step": p["step"], "train_minutes": round(t, 3)}
                    break
                prev = p
            out[key] = hit
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread)"


def main(argv: list[str] | None = None) -> int:
    from flows.demo import DEMO_TRAIN_STEPS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: few steps, short curve")
    ap.add_argument("--gpu", action="store_true", help="full s2r recipe at 256², batch 16, bf16 (needs CUDA)")
    ap.add_argument("--dataset", default=None, help="dataset store (default: build the sample city's)")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench" / "train_quality")
    ap.add_argument("--demo-steps", type=int, default=None, help=f"default {DEMO_TRAIN_STEPS} (the demo's budget)")
    ap.add_argument("--s2r-minutes", type=float, default=None, help="training wall minutes of the s2r curve (25)")
    ap.add_argument("--eval-every-minutes", type=float, default=None, help="curve resolution (default 2.5)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_quality.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    gpu = args.gpu or torch.cuda.is_available()
    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu: no CUDA device here")
    device = torch.device("cuda" if gpu else "cpu")
    if not gpu:
        torch.set_num_threads(1)
    demo_steps = args.demo_steps or (300 if args.quick else DEMO_TRAIN_STEPS)
    s2r_minutes = args.s2r_minutes or (2.0 if args.quick else 25.0)
    every = args.eval_every_minutes or (1.0 if args.quick else 2.5)
    url = ensure_dataset(args.dataset, args.work)

    print(f"demo recipe: {demo_steps} steps on {device_name(device)} ...", flush=True)
    demo = run_demo(url, args.work, demo_steps, device)
    m = demo["metrics"]
    crops = subjects(m)
    print(format_table(m), flush=True)

    overrides = S2R_GPU_OVERRIDES if gpu else S2R_CPU_OVERRIDES
    print(f"s2r recipe ({'full, GPU' if gpu else 'reduced width, CPU'}) for {s2r_minutes} training minutes ...", flush=True)
    s2r = run_curve(url, args.work, preset="s2r", overrides=overrides, minutes=s2r_minutes, eval_every_min=every,
                    device=device)

    pano = m["splits"]["val"].get("panoramas", {}).get("subjects", {})
    result = {
        "device": device_name(device), "quick": args.quick, "dataset": url,
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "demo_recipe": "demo", "demo_steps": demo["steps"],
        "demo_cpu_s_per_step": round(demo["cpu_s_per_step"], 4),
        # CPU time of the training process = its wall time on a quiet machine (one torch thread, the
        # loader worker on the other core); only meaningful for the full budget (warm-up + GAN steps)
        "demo_quiet_train_minutes_estimate": (round(demo["cpu_s_per_step"] * demo["steps"] / 60, 2)
                                              if demo["steps"] == DEMO_TRAIN_STEPS else None),
        "demo_train_wall_minutes": round(demo["train_wall_s"] / 60, 2),
        "demo_eval_wall_minutes": round(demo["eval_wall_s"] / 60, 2),
        "demo_val_psnr": crops["model_ema"]["psnr"], "demo_val_l1": crops["model_ema"]["l1"],
        "demo_val_ssim": crops["model_ema"]["ssim"],
        "classmean_val_psnr": crops["class_mean"]["psnr"], "classmean_val_l1": crops["class_mean"]["l1"],
        "nn_val_psnr": crops["nearest_neighbour"]["psnr"], "nn_val_l1": crops["nearest_neighbour"]["l1"],
        "demo_minus_classmean_psnr_db": crops["model_ema"]["psnr"] - crops["class_mean"]["psnr"],
        "demo_l1_ratio_vs_classmean": crops["model_ema"]["l1"] / crops["class_mean"]["l1"],
        "fid_model": crops["model_ema"].get("fid"), "fid_classmean": crops["class_mean"].get("fid"),
        "fid_nn": crops["nearest_neighbour"].get("fid"), "kid_model": crops["model_ema"].get("kid"),
        "kid_classmean": crops["class_mean"].get("kid"),
        "demo_pano": pano, "demo_eval": m,
        "s2r": s2r,
        "gpu_figures": ("measured" if gpu else "missing: no GPU was available; rerun with --gpu on a GPU machine"),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    cross = s2r["crossings"]
    print("\n| what | val crop PSNR | val crop L1 | FID |\n|---|---:|---:|---:|")
    for name, key in (("demo recipe (EMA)", "model_ema"), ("class-mean baseline", "class_mean"),
                      ("nearest-neighbour baseline", "nearest_neighbour")):
        c = crops[key]
        print(f"| {name} | {c['psnr']:.2f} | {c['l1']:.4f} | {c.get('fid', float('nan')):.1f} |")
    last = s2r["curve"][-1]
    print(f"| s2r ({'GPU' if gpu else 'reduced, CPU'}) after {last['train_minutes']:.1f} min | "
          f"{last['model_ema_psnr']:.2f} | {last['model_ema_l1']:.4f} | "
          f"{subjects(s2r['final'])['model_ema'].get('fid', float('nan')):.1f} |")
    quiet = result["demo_quiet_train_minutes_estimate"]
    print(f"\ndemo − class-mean: {result['demo_minus_classmean_psnr_db']:+.2f} dB (target ≥ 1.5); demo L1 "
          f"{result['demo_l1_ratio_vs_classmean']:.2f}× class-mean's; "
          + (f"demo budget ≈ {quiet:.1f} min of training on a quiet machine" if quiet is not None else
             f"{demo['steps']} of the demo's {DEMO_TRAIN_STEPS} steps"))
    print("s2r crosses: " + ", ".join(f"{k} at {v['train_minutes']:.1f} min (step {v['step']})" if v else f"{k} never"
                                      for k, v in cross.items()))
    print(f"wrote {args.out} ({result['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
