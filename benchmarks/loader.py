"""Loader benchmark: codec choice for the store, and perspective-crop throughput vs the thesis.

    .venv/bin/python benchmarks/loader.py                 # 1024×2048 panoramas (the reference run)
    .venv/bin/python benchmarks/loader.py --height 256 --n 4 --seconds 5   # quick smoke run

1. Codec/chunk table: the same realistic-ish synthetic panoramas (s2r_data.store.synthetic:
   piecewise-constant DiffCol/labels, smooth normals and depth, photo-like RGB with texture and
   noise) written with each candidate; bytes/sample (all arrays incl. the level-1 pyramid), write
   time, whole-sample read time (zarr) and single-process crop time (PanoCropDataset).
2. Throughput: 256×256 crops/s through a torch DataLoader with 2 workers (batch 16), ours (the
   trainer's ``make_dataloader``: workers build whole batches; also per-item loading + collation)
   vs a baseline doing what the thesis did — decompress the whole panorama from an .npz, build the
   sampling map per sample, ``grid_sample`` on the CPU — measured in the same run.

Writes benchmarks/results/loader.json. Timings are wall-clock; the script records the load
average so noisy runs (shared machines) can be recognised.
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2r_data.store import CodecChoice, DatasetWriter, open_dataset  # noqa: E402
from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose  # noqa: E402
from s2r_train import crops  # noqa: E402
from s2r_train.data import CropConfig, PanoCropDataset, decode_batch, make_dataloader  # noqa: E402

CANDIDATES = [  # (name, codec, inner chunk side); the first is the store's default
    ("blosc-lz4-shuffle", CodecChoice("lz4", 5, "shuffle"), 256),
    ("blosc-zstd3-shuffle", CodecChoice("zstd", 3, "shuffle"), 256),
    ("zstd3", CodecChoice("zstd-plain", 3, "noshuffle"), 256),
    ("blosc-lz4-shuffle/chunk128", CodecChoice("lz4", 5, "shuffle"), 128),
]
CHOSEN = "blosc-lz4-shuffle"


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ThesisBaselineDataset(torch.utils.data.Dataset):
    """What the thesis loader did per crop: np.load a compressed .npz of the whole panorama,
    convert it, build the map, grid_sample all channels on the CPU (label: nearest)."""

    def __init__(self, paths: list[str], out_size: int, crop: CropConfig, seed: int):
        self.paths, self.out, self.crop, self.seed = paths, out_size, crop, seed
        self.calls = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        self.calls += 1
        rng = np.random.default_rng([self.seed, i, self.calls, torch.initial_seed() % 2**63])
        z = np.load(self.paths[i])
        sim = torch.from_numpy(z["sim"].astype(np.float32))
        real = torch.from_numpy(z["real"]).float() / 127.5 - 1
        label = torch.from_numpy(z["label"]).float()
        H, W = sim.shape[1:]
        c = self.crop
        yaw, pitch, fov = rng.uniform(*c.yaw_deg), rng.uniform(*c.pitch_deg), rng.uniform(*c.fov_deg)
        px, py = crops.perspective_map(yaw, pitch, fov, (self.out, self.out), (H, W), dtype=np.float64)
        grid = torch.from_numpy(np.stack([px / (W - 1) * 2 - 1, py / (H - 1) * 2 - 1], -1)).float()[None]
        img = torch.cat([sim, real])[None]
        out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", align_corners=True)[0]
        lab = torch.nn.functional.grid_sample(label[None], grid, mode="nearest", align_corners=True)[0]
        if rng.random() < c.flip_p:
            out, lab = out.flip(-1), lab.flip(-1)
        return {"sim": out[:7], "real": out[7:], "label": lab[0].long()}


def _loader_rate(dataset, *, workers: int, batch: int, seconds: float, min_batches: int, warmup: int, decode=None,
                 batched_workers: bool = False) -> dict:
    """Crops/s delivered to the main process; ``decode`` (if given) runs there on every batch,
    as the trainer would (it decodes compact items on its device; here the CPU, conservatively).
    ``batched_workers``: the trainer's loader (``make_dataloader``: each worker builds whole
    batches in shared memory); else a plain DataLoader (per-item ``__getitem__`` + collation)."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**7)
    kw = {"multiprocessing_context": "forkserver", "persistent_workers": True, "prefetch_factor": 4} if workers else {}
    if batched_workers:
        loader = make_dataloader(dataset, batch_size=batch, num_workers=workers, sampler=sampler, **kw)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, **kw)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    while True:
        b = next(it)
        if decode is not None:
            b = decode(b)
        n += b["sim"].shape[0]
        el = time.perf_counter() - t0
        if el >= seconds and n >= min_batches * batch:
            break
    del it, loader
    return {"crops": n, "seconds": round(el, 2), "crops_per_s": round(n / el, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=1024, help="panorama height (width = 2×)")
    ap.add_argument("--n", type=int, default=8, help="panoramas")
    ap.add_argument("--out", type=int, default=256, help="crop size")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement time per loader")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the stores here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "loader.json")
    args = ap.parse_args(argv)
    H, W = args.height, 2 * args.height
    work = args.workdir or Path(tempfile.mkdtemp(prefix="s2r-bench-loader-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    print(f"panoramas {args.n} × {H}×{W}, crops {args.out}², workdir {work}, loadavg {load0}")

    panos = []
    t = time.perf_counter()
    for k in range(args.n):
        panos.append(synthetic_panorama(H, W, 1000 + k))
    print(f"generated in {time.perf_counter() - t:.1f} s")
    raw_bytes = panos[0].sim.nbytes + panos[0].label.nbytes + panos[0].real.nbytes + 2 * panos[0].label.nbytes

    crop = CropConfig(out_size=args.out)
    table = []
    for name, codec, chunk in CANDIDATES:
        url = work / name.replace("/", "_")
        shutil.rmtree(url, ignore_errors=True)
        t = time.perf_counter()
        with DatasetWriter(url, height=H, width=W, city="bench", codec=codec, chunk_px=chunk, initial_capacity=args.n) as w:
            for k, p in enumerate(panos):
                w.write_sample(f"b{k}", p.sim, p.label, p.real, p.sky_mask, p.valid_mask, {"pose": synthetic_pose(f"b{k}", k)})
        write_s = (time.perf_counter() - t) / args.n
        nbytes = _du(url / "data.zarr") / args.n
        lvl0 = sum(_du(url / "data.zarr" / a) for a in ("sim", "label", "real", "mask")) / args.n
        ds = open_dataset(url)
        ds.read(0, "sim")
        t = time.perf_counter()
        for k in range(args.n):
            for a in ("sim", "label", "real", "mask"):
                ds.read(k, a)
        read_ms = (time.perf_counter() - t) / args.n * 1e3
        # decode only (CPU time: robust on a shared machine): every level-0 chunk of sim + real
        c0 = time.process_time()
        for k in range(args.n):
            for a in ("sim", "real"):
                fr = ds.fast_reader(a, 0)
                fr.read_chunks(ds.zarr_index(k), range(fr.grid_hw[0]), range(fr.grid_hw[1]))
        decode_cpu_ms = (time.process_time() - c0) / args.n * 1e3
        pds = PanoCropDataset(url, split=None, crop=crop, seed=0)
        pds[0]
        m = max(30, 3 * args.n)
        t, c0 = time.perf_counter(), time.process_time()
        for k in range(m):
            pds[k % args.n]
        crop_ms = (time.perf_counter() - t) / m * 1e3
        crop_cpu_ms = (time.process_time() - c0) / m * 1e3
        row = {"store": name, "codec": codec.to_json(), "chunk_px": chunk, "bytes_per_sample": int(nbytes),
               "bytes_per_sample_level0": int(lvl0), "ratio_level0": round(raw_bytes / lvl0, 2),
               "write_s_per_sample": round(write_s, 3), "full_read_ms": round(read_ms, 1),
               "decode_cpu_ms_sim_real": round(decode_cpu_ms, 1), "crop_ms_1proc": round(crop_ms, 2),
               "crop_cpu_ms_1proc": round(crop_cpu_ms, 2)}
        table.append(row)
        print(json.dumps(row))

    # thesis baseline inputs: one compressed npz per panorama
    npz = []
    for k, p in enumerate(panos):
        path = work / "npz" / f"b{k}.npz"
        path.parent.mkdir(exist_ok=True)
        np.savez_compressed(path, sim=p.sim, real=p.real, label=p.label)
        npz.append(str(path))
    chosen_url = work / CHOSEN
    # compact items (float16 sim, uint8 photo/label/masks), as the trainer loads them
    ours = PanoCropDataset(chosen_url, split=None, crop=crop, seed=0, compact=True)
    base = ThesisBaselineDataset(npz, args.out, crop, seed=0)
    # single-process CPU time per crop (robust to other load on a shared machine)
    base[0]
    m = 6
    t, c0 = time.perf_counter(), time.process_time()
    for k in range(m):
        base[k % args.n]
    base_ms, base_cpu_ms = (time.perf_counter() - t) / m * 1e3, (time.process_time() - c0) / m * 1e3
    print("DataLoader runs …")
    r_ours = _loader_rate(ours, workers=args.workers, batch=args.batch, seconds=args.seconds, min_batches=5, warmup=3,
                          decode=decode_batch, batched_workers=True)
    r_items = _loader_rate(ours, workers=args.workers, batch=args.batch, seconds=args.seconds, min_batches=5, warmup=3,
                           decode=decode_batch)
    r_base = _loader_rate(base, workers=args.workers, batch=min(args.batch, 4), seconds=args.seconds, min_batches=3, warmup=1)
    speedup = r_ours["crops_per_s"] / r_base["crops_per_s"]

    chosen = next(r for r in table if r["store"] == CHOSEN)
    cpu_speedup = base_cpu_ms / chosen["crop_cpu_ms_1proc"]
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    result = {
        "speedup_vs_thesis_baseline": round(speedup, 2),
        "crops_per_s_2_workers": r_ours["crops_per_s"],
        "crops_per_s_per_worker": round(r_ours["crops_per_s"] / max(args.workers, 1), 1),
        "baseline_crops_per_s_2_workers": r_base["crops_per_s"],
        "bytes_per_sample": chosen["bytes_per_sample"],
        # CPU-time view (one process, one thread): what 2 idle cores could do, and the ratio
        "crop_cpu_ms": chosen["crop_cpu_ms_1proc"],
        "baseline_crop_cpu_ms": round(base_cpu_ms, 1),
        "baseline_crop_ms_1proc": round(base_ms, 1),
        "cpu_speedup_vs_thesis_baseline": round(cpu_speedup, 1),
        "estimated_crops_per_s_2_idle_cores": round(2000.0 / chosen["crop_cpu_ms_1proc"], 0),
        "chosen_store": CHOSEN,
        "items": "compact (float16 sim, uint8 photo/label/valid, as the trainer loads them), decoded to float32 in the main process",
        "loader": "make_dataloader: each worker builds whole batches in shared memory (PanoCropDataset.get_batch)",
        "crops_per_s_2_workers_per_item_collate": r_items["crops_per_s"],
        "targets": {"speedup_vs_thesis_baseline": 10, "crops_per_s_2_workers": 300},
        "codec_table": table,
        "loader_runs": {"ours": r_ours, "ours_per_item_collate": r_items, "thesis_baseline": r_base},
        "config": {"height": H, "width": W, "n_panoramas": args.n, "out": args.out, "workers": args.workers,
                   "batch": args.batch, "crop": crop.to_dict()},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "zarr": __import__("zarr").__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg()},
    }
    print()
    print(f"{'store':28s} {'MB/sample':>9s} {'ratio L0':>8s} {'write s':>8s} {'read ms':>8s} {'dec cpu':>8s} {'crop ms':>8s} {'crop cpu':>8s}")
    for r in table:
        print(f"{r['store']:28s} {r['bytes_per_sample'] / 1e6:9.2f} {r['ratio_level0']:8.2f} {r['write_s_per_sample']:8.3f} "
              f"{r['full_read_ms']:8.1f} {r['decode_cpu_ms_sim_real']:8.1f} {r['crop_ms_1proc']:8.2f} {r['crop_cpu_ms_1proc']:8.2f}")
    print()
    print(f"{'loader':28s} {'crops/s':>9s}")
    print(f"{'ours (' + str(args.workers) + ' workers)':28s} {r_ours['crops_per_s']:9.1f}")
    print(f"{'ours, per-item + collate':28s} {r_items['crops_per_s']:9.1f}")
    print(f"{'thesis baseline':28s} {r_base['crops_per_s']:9.1f}")
    print(f"speedup {speedup:.1f}× (target ≥ 10×), {r_ours['crops_per_s']:.0f} crops/s (target ≥ 300)")
    print(f"CPU per crop: ours {chosen['crop_cpu_ms_1proc']:.2f} ms, thesis {base_cpu_ms:.1f} ms → {cpu_speedup:.1f}×; "
          f"2 idle cores ≈ {2000.0 / chosen['crop_cpu_ms_1proc']:.0f} crops/s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    from s2r_data.atomic import atomic_write_text

    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
