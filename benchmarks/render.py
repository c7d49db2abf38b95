"""Benchmark: the batch render worker vs one fresh Blender process per panorama.

For each city (the sample city = Paris 13e Olympiades, and the Helsinki extract), built with
s2r_data.osm (a synthetic random-box city if that package is unavailable — reported as such), at
1024×512 and 2048×1024:

* panos per minute of ``render_poses`` (one long-lived worker, startup included);
* overhead ratio = steady-state wall time per pano ÷ Cycles' own render time (measured inside
  Blender around ``render()``), and the same with startup amortised over the batch;
* at 1024×512, the naive baseline in the same run: ``restart_every=1`` (fresh Blender, import,
  scene build, render, convert per pano) → speedup of the batch worker.

Top-level keys of benchmarks/results/render.json are the worst case over cities
(max overhead, min speedup, min panos/min). Targets: overhead ≤ 1.2, speedup ≥ 3 at 1024.

    python benchmarks/render.py            # full (≈10 min on 2 cores)
    python benchmarks/render.py --quick    # a few poses per case (≈2-3 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_data.citymodel import CityModel, Mesh  # noqa: E402
from s2r_data.poses import Pose, rotation_from_heading_pitch_roll  # noqa: E402
from s2r_data.render import RenderSettings, render_poses  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "render.json"


# ---- city models -------------------------------------------------------------------------------
def synthetic_city(n_boxes: int, half_m: float, seed: int) -> CityModel:
    """Random axis-aligned blocks on a ground quad (fallback when s2r_data.osm is unavailable)."""
    import shapely

    rng = np.random.default_rng(seed)
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    tri = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    verts, tris, fps = [], [], []
    for k in range(n_boxes):
        c = rng.uniform(-half_m, half_m, 2)
        s = rng.uniform(8, 30, 2) / 2
        h = rng.uniform(6, 40)
        lo, hi = (c[0] - s[0], c[1] - s[1], 0.0), (c[0] + s[0], c[1] + s[1], h)
        verts.append([[(lo, hi)[ix][0], (lo, hi)[iy][1], (lo, hi)[iz][2]] for iz in (0, 1) for iy in (0, 1) for ix in (0, 1)])
        tris.append(tri + 8 * k)
        fps.append(shapely.box(lo[0], lo[1], hi[0], hi[1]))
    g = half_m + 200
    ground = Mesh(np.array([[-g, -g, 0], [g, -g, 0], [g, g, 0], [-g, g, 0]]), np.array([[0, 1, 2], [0, 2, 3]]))
    walls = Mesh(np.concatenate(verts), np.concatenate(tris))
    return CityModel({"ground": ground, "wall": walls}, shapely.to_wkb(shapely.union_all(fps)), {"city": f"synthetic-{n_boxes}"})


def city_model(name: str, cache: Path) -> tuple[Path, str, object]:
    """(model path, source description, walkable area polygon in local_m or None)."""
    try:
        from s2r_data.cities import load_city
        from s2r_data.osm import build_or_load_city_model

        city = load_city(name)
        path = build_or_load_city_model(city, cache / name)
        import shapely

        frame = city.frame
        lon, lat = np.asarray(city.polygon.exterior.coords).T
        x, y = frame.lonlat_to_local(lon, lat)
        return Path(path), f"s2r_data.osm ({city.osm_source})", shapely.Polygon(np.stack([x, y], 1))
    except ImportError as e:
        n = 20 if name == "sample" else 570
        print(f"[render bench] s2r_data.osm unavailable ({e}); {name}: synthetic city of {n} random boxes instead")
        path = synthetic_city(n, 150 if name == "sample" else 600, seed=len(name)).save(cache / name / "city_model.npz")
        return path, f"synthetic ({n} random boxes; s2r_data.osm unavailable)", None


def street_poses(model_path: Path, area, n: int, seed: int, prefix: str) -> list[Pose]:
    """Cameras at 2.5 m outside buildings (footprints buffered 1.5 m), random heading, small pitch/roll."""
    import shapely

    model = CityModel.load(model_path)
    blocked = model.footprints().buffer(1.5)
    lo, hi = model.bbox_local_m()
    region = area if area is not None else shapely.box(lo[0] * 0.8, lo[1] * 0.8, hi[0] * 0.8, hi[1] * 0.8)
    free = region.difference(blocked)
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = free.bounds
    poses: list[Pose] = []
    while len(poses) < n:
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if not free.contains(shapely.Point(x, y)):
            continue
        R = rotation_from_heading_pitch_roll(rng.uniform(0, 360), rng.normal(0, 3), rng.normal(0, 2))
        poses.append(Pose(f"{prefix}{len(poses):04d}", [x, y, 2.5], R))
    return poses


# ---- one measurement ---------------------------------------------------------------------------
def run_batch(model_path: Path, poses: list[Pose], settings: RenderSettings, out_dir: Path) -> dict:
    done_at: list[float] = []
    t0 = time.perf_counter()
    results = render_poses(model_path, poses, out_dir, settings, progress=False, on_result=lambda r: done_at.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    failed = [r for r in results if r.status != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} renders failed, e.g. {failed[0].image_id}: {failed[0].reason}")
    render_s = np.array([r.render_time_s for r in results], dtype=float)
    n = len(results)
    out = {
        "n_panos": n,
        "wall_s": wall,
        "wall_per_pano_s": wall / n,
        "panos_per_min": 60.0 * n / wall,
        "render_s_mean": float(render_s.mean()),
        "render_s_median": float(np.median(render_s)),
        "overhead_ratio_amortised": (wall / n) / float(render_s.mean()),
    }
    if n >= 4:
        # Steady state, startup excluded. Pose j's result is final when Blender has rendered j+1
        # (its conversion overlaps that render); the last one after its own conversion. So
        # done_at[0] ≈ end of render 1 and done_at[-1] ≈ end of render n-1 + one conversion:
        # renders 2..n-1 (n-2 of them) plus the tail, all counted as wall time.
        steady = (done_at[-1] - done_at[0]) / (n - 2)
        out["steady_wall_per_pano_s"] = steady
        out["overhead_ratio"] = steady / float(render_s[2:].mean())
    return out


def _delete_outputs(p: Path) -> None:
    for f in p.glob("*.npz"):
        f.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few poses per case (checks the script works)")
    ap.add_argument("--cities", default="sample,helsinki")
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads (0 = all cores)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    n_batch = {1024: 8, 2048: 4} if a.quick else {1024: 40, 2048: 20}
    n_naive = 3 if a.quick else 8
    load_before = os.getloadavg()
    cases, per_city = [], {}
    with tempfile.TemporaryDirectory(prefix="s2r-render-bench-") as tmp:
        tmp = Path(tmp)
        for name in a.cities.split(","):
            model_path, source, area = city_model(name, tmp / "models")
            per_city[name] = {"model": source}
            for width in (1024, 2048):
                settings = RenderSettings(width=width, threads=a.threads, device=a.device)
                poses = street_poses(model_path, area, n_batch[width], seed=width, prefix=f"{name}{width}_")
                r = run_batch(model_path, poses, settings, tmp / f"out-{name}-{width}")
                _delete_outputs(tmp / f"out-{name}-{width}")
                per_city[name][f"batch_{width}"] = r
                cases.append((name, f"batch {width}", r))
                if width == 1024:
                    naive_settings = RenderSettings(width=width, threads=a.threads, device=a.device, restart_every=1)
                    nposes = street_poses(model_path, area, n_naive, seed=7, prefix=f"{name}naive_")
                    rn = run_batch(model_path, nposes, naive_settings, tmp / f"naive-{name}")
                    per_city[name]["naive_1024"] = rn
                    per_city[name]["speedup_vs_naive_1024"] = rn["wall_per_pano_s"] / r["wall_per_pano_s"]
                    cases.append((name, "naive 1024 (fresh Blender per pano)", rn))

    def worst(key: str, width: int, fn) -> float:
        return float(fn(per_city[c][f"batch_{width}"].get(key, np.nan) for c in per_city))

    import bpy  # noqa: F401  (version for the record; the worker uses the same module)

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    summary = {
        "overhead_ratio_1024": worst("overhead_ratio", 1024, max),
        "overhead_ratio_2048": worst("overhead_ratio", 2048, max),
        "speedup_vs_naive_1024": float(min(per_city[c]["speedup_vs_naive_1024"] for c in per_city)),
        "panos_per_min_1024": worst("panos_per_min", 1024, min),
        "panos_per_min_2048": worst("panos_per_min", 2048, min),
        "targets": {"overhead_ratio_max": 1.2, "speedup_vs_naive_1024_min": 3.0},
        "machine": {
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "bpy": bpy.app.version_string,
            "platform": platform.platform(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "threads_setting": a.threads, "device_setting": a.device,
        },
        "quick": a.quick,
        "cities": per_city,
        "definitions": {
            "overhead_ratio": "steady-state wall time per pano (first to last completion, startup excluded, one conversion tail included) / mean Cycles render() time measured inside Blender over the same poses",
            "overhead_ratio_amortised": "total wall incl. worker startup / n / mean render() time",
            "speedup_vs_naive_1024": "naive wall per pano (fresh Blender process per pano) / batch wall per pano incl. startup",
            "top_level": "worst case over cities: max overhead, min speedup, min panos/min",
        },
    }
    atomic_write_text(a.out, json.dumps(summary, indent=2))
    print(f"\n{'city':10} {'case':38} {'n':>4} {'wall/pano s':>11} {'render s':>9} {'overhead':>9} {'panos/min':>9}")
    for city, case, r in cases:
        print(f"{city:10} {case:38} {r['n_panos']:>4} {r['wall_per_pano_s']:>11.3f} {r['render_s_mean']:>9.3f} "
              f"{r.get('overhead_ratio', float('nan')):>9.3f} {r['panos_per_min']:>9.1f}")
    print(f"\noverhead 1024: {summary['overhead_ratio_1024']:.3f}   overhead 2048: {summary['overhead_ratio_2048']:.3f}   "
          f"speedup vs naive 1024: {summary['speedup_vs_naive_1024']:.2f}x   (targets ≤ 1.2, ≥ 3)")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
