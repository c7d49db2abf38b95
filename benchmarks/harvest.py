"""Harvest throughput: the concurrent, rate-limited harvester vs. the thesis' sequential client.

Both run in the same process against the same replay server (a subprocess, so the two do not
share a GIL) with 30 ms latency per answer and server-side limits on Graph and the image CDN.
The sequential baseline does what the thesis did, three requests per image: the metadata, then the
thumbnail URL, then the image. The harvester batches metadata (≤ 200 ids per call) and downloads
with bounded concurrency through token buckets set to the server's limits.

Reports images/s for both, the speed-up, and ``max_observed_rate_over_limit``: from the request
arrival times the server recorded, the largest (requests in [t_j, t_i]) / (burst + rate·(t_i − t_j))
over all pairs; ≤ 1.0 means the server's token bucket never had to refuse a request.

    .venv/bin/python benchmarks/harvest.py            # 600 images (sequential baseline: 60)
    .venv/bin/python benchmarks/harvest.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_data.cities import load_city  # noqa: E402
from s2r_data.mapillary import GRAPH_FIELDS, HarvestConfig, harvest_city  # noqa: E402
from s2r_data.mapillary.ratelimit import max_rate_ratio  # noqa: E402
from s2r_data.mapillary.sample_content import Placement, make_records, placeholder_jpeg, write_content  # noqa: E402

TOKEN = "MLY|0000000000000000|benchmarkbenchmarkbenchmark"
RESULT = ROOT / "benchmarks" / "results" / "harvest.json"
SAMPLE_PHOTOS = ROOT / "data" / "sample" / "replay" / "images"


def build_content(root: Path, n: int, seed: int = 0) -> list[dict]:
    """n panoramas at random points of the sample city; photos cycled from the sample content."""
    city = load_city("sample")
    frame = city.frame
    poly = shapely.transform(city.polygon, lambda xy: np.column_stack(frame.lonlat_to_local(xy[:, 0], xy[:, 1])))
    rng = random.Random(seed)
    inner = poly.buffer(-2.0)  # coverage tiles quantise positions (~0.4 m): stay off the edge
    w, s, e, nn = inner.bounds
    places = []
    while len(places) < n:
        x, y = rng.uniform(w, e), rng.uniform(s, nn)
        if inner.contains(shapely.Point(x, y)):
            places.append(Placement(x, y, rng.uniform(0, 360), f"s{len(places) // 50}"))
    recs = make_records(places, frame, seed=seed)
    photos = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:8]
    pool = [p.read_bytes() for p in photos] or [placeholder_jpeg(2048, seed=i) for i in range(8)]
    write_content(root, recs, {})
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    srcs = []
    for i, data in enumerate(pool):
        p = root / f"pool_{i}.jpg"
        p.write_bytes(data)
        srcs.append(p)
    for i, r in enumerate(recs):
        os.link(srcs[i % len(srcs)], img_dir / f"{r['id']}.jpg")
    return recs


def start_server(content: Path, args) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable, "-m", "s2r_data.mapillary.replay", "--content", str(content), "--port", "0",
        "--token", TOKEN, "--latency-ms", str(args.latency_ms),
        "--graph-rate", str(args.graph_rate), "--graph-burst", str(args.graph_burst),
        "--tiles-rate", "5", "--tiles-burst", "2",
        "--images-rate", str(args.images_rate), "--images-burst", str(args.images_burst),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("REPLAY_URL "):
        proc.kill()
        raise RuntimeError(f"replay server did not start (got {line!r})")
    return proc, line.split()[1]


def admin(base: str, path: str, method: str = "GET") -> dict:
    r = requests.request(method, f"{base}/_replay/{path}", headers={"Authorization": f"OAuth {TOKEN}"}, timeout=60)
    r.raise_for_status()
    return r.json()


def sequential_baseline(base: str, ids: list[str], out: Path) -> tuple[float, int]:
    """The thesis client: per image GET metadata, GET the URL, GET the image; one at a time."""
    s = requests.Session()
    s.headers["Authorization"] = f"OAuth {TOKEN}"
    meta_fields = ",".join(f for f in GRAPH_FIELDS if not f.startswith("thumb_"))
    out.mkdir(parents=True, exist_ok=True)
    refused = 0
    t0 = time.perf_counter()
    for i in ids:
        for url, params in ((f"{base}/{i}", {"fields": meta_fields}), (f"{base}/{i}", {"fields": "thumb_2048_url"})):
            r = s.get(url, params=params, timeout=60)
            while r.status_code == 403:  # over the limit: wait and repeat, as a naive client would
                refused += 1
                time.sleep(1.0)
                r = s.get(url, params=params, timeout=60)
        img = requests.get(r.json()["thumb_2048_url"], timeout=60)
        (out / f"{i}.jpg").write_bytes(img.content)
    return time.perf_counter() - t0, refused


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--sequential-images", type=int, default=60)
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--graph-rate", type=float, default=50.0, help="server Graph limit, requests/s")
    ap.add_argument("--graph-burst", type=int, default=5)
    ap.add_argument("--images-rate", type=float, default=200.0, help="server CDN limit, requests/s")
    ap.add_argument("--images-burst", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="150 images, 20 sequential")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args()
    if args.quick:
        args.images, args.sequential_images = 150, 20

    work = Path(tempfile.mkdtemp(prefix="s2r-bench-harvest-"))
    proc = None
    try:
        recs = build_content(work / "content", args.images)
        proc, base = start_server(work / "content", args)
        city = load_city("sample")

        # the client's buckets: 90 % of the server's rates, burst 1 (evenly spaced sends): arrival
        # times at the server jitter by tens of ms on a busy machine, which matters at 50-200 req/s
        # (the real budgets are per minute, where such jitter is negligible)
        cfg = HarvestConfig(
            graph_url=base, tiles_url=base, max_concurrency=args.concurrency,
            graph_rate_per_min=args.graph_rate * 60 * 0.9, graph_burst=1,
            tiles_rate_per_min=5 * 60 * 0.9, tiles_burst=1, tiles_jitter=True,
            image_rate_per_min=args.images_rate * 60 * 0.9, image_burst=1,
            progress=False, seed=0,
        )  # fmt: skip
        admin(base, "reset", "POST")
        t0 = time.perf_counter()
        report = harvest_city(city, work / "harvest", cfg, TOKEN)
        t_conc = time.perf_counter() - t0
        stats = admin(base, "stats")
        n_ok = report.status_counts.get("harvested", 0)
        if n_ok != len(recs):
            from s2r_data.mapillary import read_table

            t = read_table(work / "harvest" / "harvest.parquet").to_pylist()
            bad = sorted({(r["status"], r["reason"]) for r in t if r["status"] != "harvested"})
            raise RuntimeError(f"harvester got {n_ok} of {len(recs)} images: {report.summary()}; {bad[:5]}")
        log = stats["log"]
        limits = {"graph": (args.graph_rate, args.graph_burst), "tile": (5.0, 2), "image": (args.images_rate, args.images_burst)}
        ratios = {k: max_rate_ratio([e["t"] for e in log if e["kind"] == k], *lim) for k, lim in limits.items()}
        refused = sum(1 for e in log if e.get("fault") == "over_limit")

        admin(base, "reset", "POST")
        ids = [r["id"] for r in recs[: args.sequential_images]]
        t_seq, seq_refused = sequential_baseline(base, ids, work / "sequential")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    conc_ips = len(recs) / t_conc
    seq_ips = len(ids) / t_seq
    result = {
        "benchmark": "harvest",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(recs),
        "sequential_images": len(ids),
        "latency_ms": args.latency_ms,
        "limits": {k: {"rate_per_s": v[0], "burst": v[1]} for k, v in limits.items()},
        "concurrency": args.concurrency,
        "images_per_s": round(conc_ips, 2),
        "sequential_images_per_s": round(seq_ips, 2),
        "speedup_vs_sequential": round(conc_ips / seq_ips, 2),
        "max_observed_rate_over_limit": round(max(ratios.values()), 4),
        "rate_over_limit_by_endpoint": {k: round(v, 4) for k, v in ratios.items()},
        "requests_refused_by_server": refused,
        "sequential_requests_refused": seq_refused,
        "harvester_requests": report.requests,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    rows = [
        ("client", "images", "seconds", "images/s", "requests/image"),
        ("sequential (thesis)", len(ids), f"{t_seq:.2f}", f"{seq_ips:.1f}", "3"),
        ("harvester", len(recs), f"{t_conc:.2f}", f"{conc_ips:.1f}", f"{sum(report.requests.values()) / len(recs):.2f}"),
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print(f"speed-up {result['speedup_vs_sequential']}x (target >= 10x); max observed rate / limit "
          f"{result['max_observed_rate_over_limit']} (must be <= 1.0; by endpoint {result['rate_over_limit_by_endpoint']}); "
          f"refused by server: {refused}")
    print(f"wrote {args.out}")
    ok = result["max_observed_rate_over_limit"] <= 1.0 and refused == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
