"""The whole pipeline on the embedded sample city, offline: ``python -m flows.demo`` (``make demo``).

1. runs the ``build-dataset`` flow for ``sample`` end to end (harvest → city model → render →
   store → index → verify → report), Prefect in ephemeral mode (no server; its database lives
   in ``outputs/demo/prefect``); the sample city's registry entry names its replay content, so
   the flow serves it itself on 127.0.0.1 (a stand-in for Mapillary, no token);
2. runs the ``train`` flow on the CPU with the ``demo`` recipe for a fixed amount of work
   (``DEMO_TRAIN_STEPS`` optimizer steps, ≈ 3 minutes of CPU on a quiet 2-core machine; a fixed step
   count, not a time limit, so results do not depend on how busy the machine is); the run ends
   with an evaluation against the class-mean and nearest-neighbour baselines, whose table the
   demo prints;
3. translates one held-out panorama with the trained generator (tiled perspective views) and
   stacks render | translation | photo;
4. prints where everything is.

No token, no network, no GPU needed. Rerunning reuses the dataset (nothing is harvested,
rendered or written again) and the trained model (training stops at step ``--train-steps``, which
the first run reached); a larger ``--train-steps`` continues training from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .prefect_env import use_local_prefect

REPO = Path(__file__).resolve().parent.parent

DEMO_CONFIG = "demo"  # s2r_train/configs/demo.yaml: chosen by measurement (docs/benchmarks-train.md)
# The demo's training budget as work, not time: the demo recipe costs ≈ 0.06 s of CPU per step in
# the training process (one torch thread; the loader worker has the other core), measured with
# time.process_time, which does not grow with other processes' load; 2,800 steps ≈ 3 minutes on a
# quiet 2-core machine. benchmarks/train_quality.py measures it again (demo_cpu_s_per_step).
DEMO_TRAIN_STEPS = 2800

_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"\n[demo {time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "demo", help="everything goes here (default outputs/demo)")
    ap.add_argument("--width", type=int, default=None, help="panorama width in px (height = width/2); default: the city's (1024)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many panoramas (default: all of the sample city)")
    ap.add_argument("--train-steps", type=int, default=DEMO_TRAIN_STEPS,
                    help=f"train the demo recipe up to this optimizer step (default {DEMO_TRAIN_STEPS}, ≈ 3 min of CPU on a quiet "
                         "2-core machine); a rerun reuses a model that got there, a larger value continues training it")
    ap.add_argument("--no-train", action="store_true", help="stop after the dataset is built")
    args = ap.parse_args(argv)
    if args.width is not None and (args.width < 16 or args.width % 4):
        ap.error(f"--width {args.width}: must be a multiple of 4, >= 16")
    if args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    return args


def translate_one(checkpoint: Path, npz: Path, out_dir: Path) -> list[Path]:
    """Translate one rendered panorama (``<id>.npz``) into a photo-like PNG with the generator
    (``s2r-train infer``: EMA weights, the default panorama method)."""
    from .train import run_logged

    staging = out_dir / "_input"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    os.symlink(npz.resolve(), staging / npz.name)
    cmd = [sys.executable, "-m", "s2r_train", "infer", "--checkpoint", str(checkpoint), "--input", str(staging),
           "--out", str(out_dir), "--mode", "panorama", "--device", "cpu"]
    rc = run_logged(cmd, log_line=lambda line: print("  " + line, flush=True))
    shutil.rmtree(staging, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"inference failed (exit {rc}): {' '.join(cmd)}")
    return sorted(out_dir.glob(f"{npz.stem}*.png"))


def comparison_png(store_url: str, image_id: str, translated_png: Path, out_png: Path) -> Path:
    """Stack the render (DiffCol), the translation and the photo of one panorama vertically."""
    import numpy as np
    from PIL import Image

    from s2r_data.atomic import atomic_path
    from s2r_data.store import open_dataset

    ds = open_dataset(store_url)
    i = ds.image_ids.index(image_id)
    sim, real = ds.read(i, "sim"), ds.read(i, "real")
    diffcol = (np.clip(sim[0:3].astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    photo = real.transpose(1, 2, 0)
    with Image.open(translated_png) as im:
        fake = np.asarray(im.convert("RGB").resize(photo.shape[1::-1], Image.BILINEAR))
    with atomic_path(out_png, suffix=".png") as tmp:
        Image.fromarray(np.concatenate([diffcol, fake, photo], axis=0)).save(tmp)
    return out_png


def held_out_render(store_url: str, render_dir: Path) -> Path:
    """The render of the first visualisation (else val) sample: a panorama the model never saw."""
    from s2r_data.store import open_dataset

    index = open_dataset(store_url).index.to_pydict()
    order = sorted(range(len(index["image_id"])), key=lambda i: (
        index["vis_index"][i] is None, index["vis_index"][i] or 0, index["split"][i] != "val", index["image_id"][i]))
    for i in order:
        path = render_dir / f"{index['image_id'][i]}.npz"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{render_dir}: no render of the dataset's samples")


def print_eval_table(run_dir: Path) -> None:
    """The comparison table of the run's final evaluation (``eval/metrics.md``)."""
    from s2r_train.evaluate import format_table

    try:
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    except (OSError, ValueError):
        print("  (no evaluation found in the run directory)")
        return
    print(f"model (EMA and raw weights) vs baselines at step {metrics.get('step')}; lower L1 / FID / KID and "
          "higher PSNR / SSIM are better; baselines fitted on the train split only:\n")
    print(format_table(metrics), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_local_prefect(out / "prefect")  # before prefect is imported
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    from s2r_data.cities import load_city

    content = Path(load_city("sample").replay_content or "")
    if not (content / "images.json").is_file():
        print(f"demo: replay content missing at {content} (expected images.json + images/); "
              "regenerate it with `python -m s2r_data.mapillary.sample_content --out data/sample/replay`", file=sys.stderr)
        return 2

    say("starting Prefect (ephemeral mode; the first start creates its database, ~20-40 s)")
    from .build_dataset import build_dataset

    say(f"flow build-dataset: harvest (replay server with {content}, a stand-in for Mapillary) "
        "→ city model → render (Blender) → store → verify")
    summary = build_dataset(city="sample", width=args.width, limit=args.limit, out_dir=str(out), batch_size=6)
    c = summary["counts"]
    say(f"dataset verified: {summary['samples_in_store']} samples ({c['rendered_now']} rendered now, "
        f"{c['already_in_store']} from earlier runs) in {summary['timings_s'].get('total', 0):.0f} s")

    train_result = None
    translated: list[Path] = []
    if not args.no_train:
        from .train import last_logged_step, train

        run_dir = out / "runs" / "sample"
        # An absolute step, not steps to add: a rerun reproduces the first run's model and
        # figures. Past DEMO_TRAIN_STEPS the recipe turns into a GAN, which on the CPU costs PSNR
        # (measured: 5,600 steps +0.56 dB over the class-mean, 2,800 steps +2.21 dB).
        target = args.train_steps
        done = last_logged_step(run_dir)
        say(f"flow train: the '{DEMO_CONFIG}' recipe on the CPU up to step {target} (a fixed amount of work, "
            f"≈ 3 min of CPU on a quiet 2-core machine), then evaluation against the baselines"
            + (f"; the run there is at step {done}: reused" if done >= target else ""))
        train_result = train(dataset=summary["store_url"], config=DEMO_CONFIG, run_dir=str(run_dir), resume=True,
                             max_steps=target, allow_cpu=True)
        say("evaluation on the held-out (val) panoramas")
        print_eval_table(run_dir)
        ckpts = [Path(p) for p in train_result["checkpoints"] if "checkpoint-" in Path(p).name]
        if ckpts:
            render = held_out_render(summary["store_url"], out / "sample" / "renders" / f"w{summary['width']}")
            say(f"translating held-out panorama {render.stem} with {ckpts[-1].name}")
            translated = translate_one(ckpts[-1], render, out / "translated")
            if translated:
                translated.append(comparison_png(summary["store_url"], render.stem, translated[0],
                                                 out / "translated" / f"{render.stem}-render-translation-photo.png"))

    say("done. Where everything is:")
    city_dir = out / "sample" / "city_model"
    rows = [
        ("city model (OSM meshes)", str(city_dir / "city_model.npz")),
        ("city summary / top-down preview", f"{city_dir / 'summary.json'}  {city_dir / 'preview.png'}"),
        ("dataset (Zarr v3 + index)", summary["store_url"]),
        ("index (Parquet)", summary["index_path"]),
        ("harvest table", summary["harvest_table"]),
        ("build report", summary.get("report_md", "-")),
        ("preview (DiffCol|normal|depth|photo)", summary.get("preview_png", "-")),
        ("alignment scores (histogram)", summary.get("alignment_histogram_png", "-")),
        ("alignment before | after (worst, best)", summary.get("alignment_png", "-")),
    ]
    if train_result:
        rows += [
            ("training run", train_result["run_dir"]),
            ("TensorBoard", f"tensorboard --logdir {train_result['run_dir']}"),
            ("newest checkpoint", (train_result["checkpoints"] or ["-"])[-1]),
            ("evaluation vs baselines", str(Path(train_result["run_dir"]) / "eval" / "metrics.md")),
        ]
    rows += [("translated panorama" if i == 0 else "render | translation | photo", str(p)) for i, p in enumerate(translated)]
    rows.append(("Prefect database (ephemeral)", os.environ.get("PREFECT_HOME", "-")))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"\ntotal {time.perf_counter() - _T0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
