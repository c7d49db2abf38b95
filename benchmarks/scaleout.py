"""Scale-out benchmark: build-dataset on threads vs Dask worker processes, local disk vs S3.

    .venv/bin/python benchmarks/scaleout.py            # all 24 sample-city panoramas at 512 px
    .venv/bin/python benchmarks/scaleout.py --quick    # 6 panoramas at 128 px (a smoke run)

One temporary Prefect API and one S3-compatible server on 127.0.0.1 (moto) for the whole run.
The sample city is harvested once (replay content); every configuration then starts from a copy
of that harvest and city model, with no renders and a new store, and runs the real flow:

* ``threads``      — the default ThreadPoolTaskRunner (``$S2R_TASK_WORKERS`` = 2 batches at once,
  Blender threads = cores / 2), store on local disk;
* ``dask_1``/``dask_2`` — ``task_runner="dask"`` with 1 / 2 worker processes (Blender threads =
  cores / workers), local disk;
* ``threads_s3``, ``dask_2_s3`` — the same, store at ``s3://…`` on the local S3 server.

Each configuration starts its own Blender workers (idle render handles of the flow process are
closed in between). Panoramas per minute are taken over the render+write stage (dispatch of the first batch to the
last batch done, from the flow's own timings); the whole flow (cluster start, harvest check,
compaction, splits, verify) is reported beside it. Where the time goes: per configuration the
summed render and write time of all batches, the stage's wall time and the rest of the flow.
Then the crop loader (``PanoCropDataset``, one process) on a synthetic store, local vs S3 vs S3
with the local shard cache (``S2R_SHARD_CACHE_DIR``).

On a 2-core machine both Dask configurations use both cores (1 worker × 2 Blender threads, or
2 × 1), so ``dask_speedup_2_vs_1`` measures what processes add besides cores (overlapping one
batch's Blender start-up, conversion and store writes with another's rendering), not more CPU.
The moto server is a Python process thread, far slower per request than S3 or MinIO: the S3
ratios are an upper bound on the overhead. Writes benchmarks/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [  # name, task_runner, dask_workers, store on S3
    ("threads", "threads", None, False),
    ("dask_1", "dask", 1, False),
    ("dask_2", "dask", 2, False),
    ("threads_s3", "threads", None, True),
    ("dask_2_s3", "dask", 2, True),
]


def _prefect_env(home: Path) -> None:
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _seed_copy(seed: Path, out: Path) -> None:
    """A fresh build directory with the seed's harvest and city model (no renders, no store)."""
    for part in ("harvest", "city_model"):
        shutil.copytree(seed / "sample" / part, out / "sample" / part)


def _build(out: Path, store_url: str | None, *, n: int, width: int, batch: int, task_runner: str,
           dask_workers: int | None) -> dict:
    from flows.build_dataset import build_dataset

    t0 = time.perf_counter()
    s = build_dataset(city="sample", width=width, limit=n, batch_size=batch, out_dir=str(out), store_url=store_url,
                      task_runner=task_runner, dask_workers=dask_workers, preview_count=0, splits=[0.8, 0.2, 0])
    wall = time.perf_counter() - t0
    if not s["verified"] or s["samples_in_store"] != n or s["counts"]["rendered_now"] != n:
        raise RuntimeError(f"{task_runner} → {store_url}: expected {n} new verified samples, got {s['counts']}")
    t = s["timings_s"]
    stage = float(t["render_and_write"])
    render = float(sum(s["render_s_per_batch"]))
    write = float(sum(s["write_s_per_batch"]))
    return {
        "panos": n,
        "panos_per_min": round(60.0 * n / stage, 1),
        "stage_s": round(stage, 2),
        "flow_s": round(float(t["total"]), 2),
        "wall_s": round(wall, 2),  # incl. a Dask cluster's start and stop, Prefect's subflow
        "render_s_sum": round(render, 2),
        "write_s_sum": round(write, 2),
        "write_s_per_pano": round(write / n, 3),
        "harvest_check_s": round(float(t["harvest"]), 2),
        "index_and_verify_s": round(float(t["index_and_verify"]), 2),
        "outside_stage_s": round(wall - stage, 2),
    }


def _crops_per_s(url: str, seconds: float, cache_dir: str | None) -> dict:
    from s2r_train.crops import CropConfig
    from s2r_train.data import PanoCropDataset

    os.environ.pop("S2R_SHARD_CACHE_DIR", None)
    if cache_dir:
        os.environ["S2R_SHARD_CACHE_DIR"] = cache_dir
    ds = PanoCropDataset(url, split=None, crop=CropConfig(out_size=256), seed=1)
    t0 = time.perf_counter()
    n = 0
    while True:
        ds[n % len(ds)]
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= 2 * len(ds):
            break
    return {"crops": n, "seconds": round(el, 2), "crops_per_s": round(n / el, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 panoramas at 128 px, short loader runs")
    ap.add_argument("--panos", type=int, default=None, help="panoramas per configuration (sample city: ≤ 24)")
    ap.add_argument("--width", type=int, default=None, help="panorama width in px")
    ap.add_argument("--batch", type=int, default=None, help="panoramas per render batch")
    ap.add_argument("--loader-height", type=int, default=None, help="synthetic panorama height for the loader")
    ap.add_argument("--seconds", type=float, default=None, help="measurement time per loader case")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "scaleout.json")
    args = ap.parse_args(argv)
    n = args.panos or (6 if args.quick else 24)
    width = args.width or (128 if args.quick else 512)
    batch = args.batch or (2 if args.quick else 4)
    lh = args.loader_height or (256 if args.quick else 512)
    seconds = args.seconds or (4.0 if args.quick else 15.0)

    work = Path(tempfile.mkdtemp(prefix="s2r-scaleout-"))
    _prefect_env(work / "prefect")
    load_before = os.getloadavg()
    from prefect.testing.utilities import prefect_test_harness

    from s2r_data.store.local_s3 import local_s3_server
    from s2r_data.store.synthetic import write_synthetic_dataset

    results: dict[str, dict] = {}
    try:
        with prefect_test_harness(server_startup_timeout=180), local_s3_server() as s3:
            seed = work / "seed"
            print(f"seed: harvesting the sample city and building its model ({n} panoramas, {width} px) …", flush=True)
            _build(seed, None, n=n, width=width, batch=batch, task_runner="threads", dask_workers=None)
            from s2r_data.render.handles import close_all

            for name, runner, workers, on_s3 in CONFIGS:
                close_all()  # every configuration starts its Blender workers (the thread runner would reuse the seed's)
                out = work / name
                _seed_copy(seed, out)
                url = s3.url(f"{name}/dataset.zarr") if on_s3 else None
                print(f"{name}: task_runner={runner} dask_workers={workers} store={'s3' if on_s3 else 'local'} …", flush=True)
                results[name] = _build(out, url, n=n, width=width, batch=batch, task_runner=runner, dask_workers=workers)

            print(f"loader: synthetic store of 8 panoramas at {2 * lh}×{lh}, local vs S3 …", flush=True)
            local_url = str(work / "loader" / "dataset.zarr")
            s3_url = s3.url("loader/dataset.zarr")
            for u in (local_url, s3_url):
                write_synthetic_dataset(u, 8, height=lh)
            _crops_per_s(local_url, 0.0, None)  # warm-up: numba compiles the crop kernel once
            loader = {
                "local": _crops_per_s(local_url, seconds, None),
                "s3": _crops_per_s(s3_url, seconds, None),
                "s3_shard_cache_cold": _crops_per_s(s3_url, seconds, str(work / "cache")),
                "s3_shard_cache_warm": _crops_per_s(s3_url, seconds, str(work / "cache")),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {k: v["panos_per_min"] for k, v in results.items()}
    speedup = rate["dask_2"] / rate["dask_1"]
    out = {
        "panos_per_min_threads": rate["threads"],
        "panos_per_min_dask_1": rate["dask_1"],
        "panos_per_min_dask_2": rate["dask_2"],
        "panos_per_min_threads_s3": rate["threads_s3"],
        "panos_per_min_dask_2_s3": rate["dask_2_s3"],
        "dask_speedup_2_vs_1": round(speedup, 3),
        "scaling_efficiency_dask_2": round(speedup / 2, 3),
        "dask_2_vs_threads": round(rate["dask_2"] / rate["threads"], 3),
        "s3_write_overhead_ratio": round(results["threads_s3"]["write_s_per_pano"] / results["threads"]["write_s_per_pano"], 2),
        "s3_end_to_end_ratio_dask_2": round(rate["dask_2"] / rate["dask_2_s3"], 3),
        "local_loader_crops_per_s": loader["local"]["crops_per_s"],
        "s3_loader_crops_per_s": loader["s3"]["crops_per_s"],
        "s3_cached_loader_crops_per_s": loader["s3_shard_cache_warm"]["crops_per_s"],
        "s3_loader_ratio_vs_local": round(loader["s3"]["crops_per_s"] / loader["local"]["crops_per_s"], 3),
        "s3_cached_loader_ratio_vs_local": round(loader["s3_shard_cache_warm"]["crops_per_s"] / loader["local"]["crops_per_s"], 3),
        "configs": results,
        "loader": loader,
        "settings": {"panos": n, "width": width, "batch_size": batch, "loader_height": lh, "loader_seconds": seconds,
                     "quick": bool(args.quick)},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    print(f"\n{'config':<12} {'panos/min':>10} {'stage s':>8} {'render Σs':>10} {'write Σs':>9} {'flow s':>7} {'wall s':>7}")
    for name, r in results.items():
        print(f"{name:<12} {r['panos_per_min']:>10} {r['stage_s']:>8} {r['render_s_sum']:>10} {r['write_s_sum']:>9} "
              f"{r['flow_s']:>7} {r['wall_s']:>7}")
    print(f"\nDask 2 vs 1 worker: ×{out['dask_speedup_2_vs_1']} (efficiency {out['scaling_efficiency_dask_2']}); "
          f"vs threads ×{out['dask_2_vs_threads']}")
    print(f"S3 write time per panorama ×{out['s3_write_overhead_ratio']} local; Dask-2 end to end local/S3 ×{out['s3_end_to_end_ratio_dask_2']}")
    print(f"crops/s: local {out['local_loader_crops_per_s']}, S3 {out['s3_loader_crops_per_s']}, "
          f"S3 + shard cache {out['s3_cached_loader_crops_per_s']}")
    print(f"load average before/after: {load_before} / {out['machine']['load_average_after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
