"""Store verification cost: write-time read-back vs re-reading every sample at the end of a build.

    .venv/bin/python benchmarks/store_verify.py            # 1024×2048 panoramas, 12 samples
    .venv/bin/python benchmarks/store_verify.py --quick    # 128×256, 6 samples (a check that it runs)

1. Writes the same synthetic panoramas (s2r_data.store.synthetic, one pyramid level) twice:
   ``DatasetWriter(verify_writes=False)`` (the baseline: the writer before write-time
   verification) and ``verify_writes=True`` (the default); reports samples/s and the overhead ratio.
2. On the verified store, the ``index-and-verify`` step of ``build-dataset`` as it was (``verify``
   of every sample, what each rerun paid) vs now (store and index only, ``samples=()``); the
   ratio is the speed-up of a no-op rerun's verify step, which grows with the dataset (the old
   step is O(samples), the new one reads the index only).

Writes benchmarks/results/store_verify.json (keys ``write_samples_per_s_unverified``,
``write_samples_per_s_verified``, ``write_verify_overhead_ratio``, ``full_verify_samples_per_s``,
``full_verify_s``, ``store_level_verify_s``, ``noop_verify_speedup``). Wall-clock timings, best of
two interleaved runs; the load average is recorded so runs on a shared machine can be recognised.
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

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_data.store import DatasetWriter, verify  # noqa: E402
from s2r_data.store.synthetic import synthetic_panorama, synthetic_pose  # noqa: E402


def _write_all(url: Path, panos, height: int, verify_writes: bool) -> float:
    t0 = time.perf_counter()
    with DatasetWriter(url, height=height, width=2 * height, city="bench", verify_writes=verify_writes) as w:
        for k, p in enumerate(panos):
            image_id = f"b{k:05d}"
            w.write_sample(image_id, p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                           {"pose": synthetic_pose(image_id, k), "sequence_id": f"seq{k % 3}"})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    ap.add_argument("--height", type=int, default=None, help="panorama height (width = 2×); default 1024, quick 128")
    ap.add_argument("--n", type=int, default=None, help="samples; default 12, quick 6")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store_verify.json")
    args = ap.parse_args(argv)
    H = args.height or (128 if args.quick else 1024)
    n = args.n or (6 if args.quick else 12)
    load0 = os.getloadavg()
    panos = [synthetic_panorama(H, 2 * H, k) for k in range(n)]
    work = Path(tempfile.mkdtemp(prefix="s2r-bench-verify-"))
    try:
        _write_all(work / "warmup", panos[:1], H, verify_writes=True)  # imports, codec setup
        t_plain, t_checked, t_full, t_light = [], [], [], []
        for r in range(2):  # interleaved, best of two: less sensitive to load drifting during the run
            t_plain.append(_write_all(work / f"plain{r}", panos, H, verify_writes=False))
            t_checked.append(_write_all(work / f"checked{r}", panos, H, verify_writes=True))
        url = work / "checked0"
        for _ in range(2):
            t0 = time.perf_counter()
            full = verify(url)
            t_full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            light = verify(url, samples=())
            t_light.append(time.perf_counter() - t0)
        assert full.ok and light.ok and full.n_checked == n and light.n_checked == 0, (full.summary(), light.summary())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_plain, t_checked, t_full, t_light = min(t_plain), min(t_checked), min(t_full), min(t_light)

    result = {
        "quick": args.quick,
        "height": H,
        "width": 2 * H,
        "samples": n,
        "write_samples_per_s_unverified": n / t_plain,
        "write_samples_per_s_verified": n / t_checked,
        "write_verify_overhead_ratio": t_checked / t_plain,
        "full_verify_s": t_full,
        "full_verify_samples_per_s": n / t_full,
        "store_level_verify_s": t_light,
        "noop_verify_speedup": t_full / t_light,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "zarr": __import__("zarr").__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg()},
    }
    rows = [
        ("write, no read-back (baseline)", f"{result['write_samples_per_s_unverified']:.2f} samples/s", ""),
        ("write + read-back verification", f"{result['write_samples_per_s_verified']:.2f} samples/s",
         f"×{result['write_verify_overhead_ratio']:.2f} time"),
        ("index-and-verify before: every sample", f"{t_full:.2f} s ({result['full_verify_samples_per_s']:.1f} samples/s)", ""),
        ("index-and-verify now: store + index", f"{t_light:.3f} s", f"{result['noop_verify_speedup']:.0f}× faster"),
    ]
    print(f"{n} samples of {H}×{2 * H} (+1 pyramid level), loadavg {load0[0]:.1f}")
    for name, value, ratio in rows:
        print(f"  {name:<40} {value:<28} {ratio}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
