"""``s2r align`` — score and refine the poses of an existing dataset (no re-harvest).

    s2r align --dataset outputs/sample/dataset.zarr --out outputs/sample/dataset-aligned.zarr \\
              --city-model outputs/sample/city_model/city_model.npz
    s2r align --dataset D --out D2 --city sample --score-only

The city model defaults to ``<dataset>/../city_model/city_model.npz`` (the build layout), or is
built/reused for ``--city``. Writes a new store (see :mod:`s2r_data.align.dataset`) and prints a
summary; ``--json`` writes it as JSON too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="s2r align", description="Score and refine the poses of an existing dataset (no re-harvest); writes a new store.")
    ap.add_argument("--dataset", required=True, help="the dataset store to align (read only)")
    ap.add_argument("--out", required=True, help="where to write the aligned store (a new location)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--city-model", type=Path, default=None, help="city_model.npz the dataset was rendered from")
    src.add_argument("--city", default=None, help="build or reuse the model of this city (data/cities.yaml) under --model-dir")
    ap.add_argument("--model-dir", type=Path, default=None, help="with --city: where the model lives (default: beside the dataset)")
    ap.add_argument("--score-only", action="store_true", help="only score the pairs at their stored poses (no refinement)")
    ap.add_argument("--backend", choices=("raycast", "blender"), default="raycast", help="renderer for refined pairs (default raycast)")
    ap.add_argument("--threads", type=int, default=0, help="ray-casting threads (0 = all cores)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N samples (by zarr index)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    return ap


def _model_path(args: argparse.Namespace) -> Path:
    if args.city_model is not None:
        return args.city_model
    dataset_dir = Path(args.dataset).resolve().parent
    if args.city:
        from s2r_data.cities import load_city
        from s2r_data.osm import build_or_load_city_model

        return Path(build_or_load_city_model(load_city(args.city), args.model_dir or dataset_dir / "city_model"))
    guess = dataset_dir / "city_model" / "city_model.npz"
    if not guess.is_file():
        raise SystemExit(f"s2r align: no --city-model given and {guess} does not exist; pass --city-model PATH or --city NAME")
    return guess


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tqdm.auto import tqdm

    from .dataset import align_dataset
    from .pipeline import AlignOutcome

    model_path = _model_path(args)
    bar = tqdm(desc="align", unit="pano")

    def progress(o: AlignOutcome) -> None:
        bar.update(1)
        bar.set_postfix_str(o.status)

    try:
        report = align_dataset(args.dataset, args.out, model_path, refine=not args.score_only, backend=args.backend,
                               threads=args.threads, limit=args.limit, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"s2r align: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    d = report.to_dict()
    print(f"aligned {d['samples']} samples of {d['source_url']} → {d['out_url']} in {d['seconds']:.0f} s: "
          f"{d['refined']} re-rendered at a refined pose, {d['copied']} copied, {d['skipped_existing']} already there; "
          f"status {d['status']}; verified {d['verified']}")
    if args.json:
        args.json.write_text(json.dumps(d, indent=2))
    return 0 if d["verified"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
