"""Benchmark: OSM extract → CityModel build time (s2r_data.osm).

Two tables:

1. The three real extracts in data/osm (sample, helsinki, liechtenstein): full build time
   against a baseline measured in the same run, the bare pyosmium read of the same file
   (``read_osm``); the ratio says what the geometry work costs on top of parsing. Beside it, as a
   sanity check, the road mesh area and the smallest mesh ÷ union area ratio of the flat layers
   (the build fails below 0.99).
2. Scaling on synthetic cities of N untagged rectangular buildings on a grid (plus a street
   per row): build time per building for each N, and the ratio to the smallest N's per-building
   time (≈ 1 means linear; a per-building growing structure would show up as a ratio ≫ 1).

Usage: ``python benchmarks/osm_build.py [--sizes 1000 10000] [--repeat 3]``; writes
``benchmarks/results/osm_build.json``. Timings are wall-clock medians of ``--repeat`` runs.
``--quick`` (checks the script works: one run each, synthetic sizes 200 and 1000) writes
``benchmarks/results/osm_build-quick.json`` instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_data.cities import CityConfig, load_city  # noqa: E402
from s2r_data.osm import build_city_model  # noqa: E402
from s2r_data.osm.reader import read_osm  # noqa: E402


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synthetic_city(n_buildings: int, folder: Path) -> CityConfig:
    """An XML extract with ``n_buildings`` 12 m × 9 m untagged buildings 20 m apart, and a street per row."""
    side = int(np.ceil(np.sqrt(n_buildings)))
    lon0, lat0 = 10.0, 50.0
    dlon, dlat = 20.0 / (111_320.0 * np.cos(np.radians(lat0))), 20.0 / 111_320.0
    wlon, wlat = 12.0 / (111_320.0 * np.cos(np.radians(lat0))), 9.0 / 111_320.0
    nodes, ways = [], []
    nid = wid = 1
    for k in range(n_buildings):
        i, j = divmod(k, side)
        x, y = lon0 + j * dlon, lat0 + i * dlat
        refs = []
        for lon, lat in ((x, y), (x + wlon, y), (x + wlon, y + wlat), (x, y + wlat)):
            nodes.append(f'<node id="{nid}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
            refs.append(nid)
            nid += 1
        nds = "".join(f'<nd ref="{r}"/>' for r in refs + refs[:1])
        ways.append(f'<way id="{wid}" version="1">{nds}<tag k="building" v="yes"/></way>')
        wid += 1
    for i in range(side):
        y = lat0 + i * dlat - dlat * 0.25
        a, b = nid, nid + 1
        nodes.append(f'<node id="{a}" version="1" lat="{y:.7f}" lon="{lon0 - dlon:.7f}"/>')
        nodes.append(f'<node id="{b}" version="1" lat="{y:.7f}" lon="{lon0 + side * dlon:.7f}"/>')
        nid += 2
        ways.append(f'<way id="{wid}" version="1"><nd ref="{a}"/><nd ref="{b}"/><tag k="highway" v="residential"/></way>')
        wid += 1
    path = folder / f"synthetic-{n_buildings}.osm"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="s2r-bench">\n'
                    + "\n".join(nodes + ways) + "\n</osm>\n")
    lon1, lat1 = lon0 + side * dlon, lat0 + side * dlat
    return CityConfig(
        name=f"synthetic-{n_buildings}",
        boundary_lonlat=((lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1)),
        reference_lonlat=((lon0 + lon1) / 2, (lat0 + lat1) / 2),
        osm_source=str(path),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run each, synthetic sizes 200 and 1000")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/osm_build[-quick].json")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [200, 1000], 1
    out = args.out or ROOT / "benchmarks" / "results" / f"osm_build{'-quick' if args.quick else ''}.json"

    extracts = []
    print(f"{'extract':<15}{'buildings':>10}{'read s':>10}{'build s':>10}{'build/read':>12}{'road m²':>12}"
          f"{'min mesh/union':>16}")
    for name in ("sample", "helsinki", "liechtenstein"):
        city = load_city(name)
        read_s = _median_time(lambda: read_osm(city.local_osm_path()), args.repeat)
        model = build_city_model(city)
        build_s = _median_time(lambda: build_city_model(city), args.repeat)
        n = model.meta["counts"]["buildings"]
        layers = model.meta["flat_layers"]
        road_m2 = layers["road"]["mesh_area_m2"]
        min_ratio = min(a["mesh_ratio"] for a in layers.values())
        extracts.append({"city": name, "buildings": n, "read_s": read_s, "build_s": build_s, "ratio": build_s / read_s,
                         "road_mesh_m2": road_m2, "min_mesh_ratio": min_ratio})
        print(f"{name:<15}{n:>10}{read_s:>10.3f}{build_s:>10.3f}{build_s / read_s:>12.2f}{road_m2:>12,.0f}{min_ratio:>16.5f}")

    scaling = []
    print(f"\n{'synthetic N':<15}{'build s':>10}{'µs/bldg':>10}{'vs smallest':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        base_per = None
        for n in sorted(args.sizes):
            city = synthetic_city(n, Path(tmp))
            model = build_city_model(city, margin_m=50.0)
            assert model.meta["counts"]["buildings"] == n, model.meta["counts"]
            s = _median_time(lambda: build_city_model(city, margin_m=50.0), args.repeat)
            per = s / n
            base_per = base_per or per
            scaling.append({"buildings": n, "build_s": s, "us_per_building": per * 1e6, "ratio_to_smallest": per / base_per})
            print(f"{n:<15}{s:>10.3f}{per * 1e6:>10.1f}{per / base_per:>12.2f}")

    result = {
        "benchmark": "osm_build",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": args.repeat,
        "quick": args.quick,
        "extracts": extracts,
        "scaling": scaling,
    }
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
