"""The whole pipeline on the embedded sample city, offline: ``python -m flows.demo`` (``make demo``).

1. starts the local Mapillary replay server (the sample city's content, a fixed demo token);
2. runs the ``build-dataset`` flow for ``sample`` end to end (harvest → city model → render →
   store → index → verify → report), Prefect in ephemeral mode (no server; its database lives
   in ``outputs/demo/prefect``);
3. runs the ``train`` flow for a few minutes on the CPU (the ``tiny`` config; a short first run
   measures the machine's speed, further resumed runs fill the rest of ``--train-minutes``);
4. translates one rendered panorama with the trained generator;
5. prints where everything is.

No token, no network, no GPU needed. Rerunning reuses the dataset (nothing is harvested,
rendered or written again) and continues training from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from .prefect_env import use_local_prefect

REPO = Path(__file__).resolve().parent.parent
SAMPLE_REPLAY = REPO / "data" / "sample" / "replay"
DEMO_TOKEN = "MLY|s2r-demo|replay-only"  # accepted by the local replay server only

# the tiny preset trains 2 epochs; the demo trains by step count instead (few samples, so
# checkpoint and validate every 5 epochs rather than after each one)
DEMO_TRAIN_OVERRIDES = ("train.epochs=100000", "train.checkpoint_every_epochs=5")
PROBE_STEPS = 12
MAX_TRAIN_RUNS = 4

_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"\n[demo {time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "demo", help="everything goes here (default outputs/demo)")
    ap.add_argument("--width", type=int, default=None, help="panorama width in px (height = width/2); default: the city's (1024)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many panoramas (default: all of the sample city)")
    ap.add_argument("--train-minutes", type=float, default=5.0, help="CPU training time of the tiny GAN (default 5)")
    ap.add_argument("--train-steps", type=int, default=None, help="train this many steps instead of --train-minutes")
    ap.add_argument("--no-train", action="store_true", help="stop after the dataset is built")
    ap.add_argument("--content", type=Path, default=SAMPLE_REPLAY, help="replay content (default data/sample/replay)")
    args = ap.parse_args(argv)
    if args.width is not None and (args.width < 16 or args.width % 4):
        ap.error(f"--width {args.width}: must be a multiple of 4, >= 16")
    if args.train_steps is not None and args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    if args.train_minutes <= 0:
        ap.error("--train-minutes must be > 0")
    return args


def translate_one(checkpoint: Path, npz: Path, out_dir: Path) -> list[Path]:
    """Translate one rendered panorama (``<id>.npz``) into a photo-like PNG with the generator."""
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_local_prefect(out / "prefect")  # before prefect is imported
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if not (args.content / "images.json").is_file():
        print(f"demo: replay content missing at {args.content} (expected images.json + images/); "
              "regenerate it with `python -m s2r_data.mapillary.sample_content --out data/sample/replay`", file=sys.stderr)
        return 2

    say("starting Prefect (ephemeral mode; the first start creates its database, ~20-40 s)")
    from s2r_data.mapillary.replay import ReplayServer

    from .build_dataset import build_dataset

    os.environ["MAPILLARY_TOKEN"] = DEMO_TOKEN  # this process only; the replay server accepts it
    with ReplayServer(args.content, DEMO_TOKEN) as srv:
        say(f"replay server (stand-in for Mapillary) at {srv.graph_url} with {len(srv.image_ids)} panoramas")
        say("flow build-dataset: harvest → city model → render (Blender) → store → verify")
        summary = build_dataset(
            city="sample", width=args.width, limit=args.limit, out_dir=str(out),
            graph_url=srv.graph_url, tiles_url=srv.tiles_url, batch_size=6,
        )
    c = summary["counts"]
    say(f"dataset verified: {summary['samples_in_store']} samples ({c['rendered_now']} rendered now, "
        f"{c['already_in_store']} from earlier runs) in {summary['timings_s'].get('total', 0):.0f} s")

    train_result = None
    translated: list[Path] = []
    if not args.no_train:
        from .train import last_logged_step, train

        run_dir = out / "runs" / "sample"
        start = last_logged_step(run_dir)
        t_train = time.perf_counter()

        def train_to(step: int) -> dict:
            return train(dataset=summary["store_url"], config="tiny", run_dir=str(run_dir), resume=True,
                         max_steps=step, overrides=list(DEMO_TRAIN_OVERRIDES))

        if args.train_steps is not None:
            say(f"flow train: tiny sim→real GAN on the CPU, up to step {start + args.train_steps}")
            train_result = train_to(start + args.train_steps)
        else:
            # a short first run measures this machine; each further (resumed) run is sized from
            # the last one's speed to fill the budget (startup overhead makes early estimates slow)
            budget_s = args.train_minutes * 60
            say(f"flow train: tiny sim→real GAN on the CPU for ~{args.train_minutes:g} min "
                f"(a {PROBE_STEPS}-step run first measures this machine's speed)")
            target, steps, t_run = start + PROBE_STEPS, PROBE_STEPS, time.perf_counter()
            train_result = train_to(target)
            for _ in range(MAX_TRAIN_RUNS - 1):
                s_per_step = (time.perf_counter() - t_run) / steps
                remaining_s = budget_s - (time.perf_counter() - t_train)
                steps = int(remaining_s / s_per_step)
                if steps < 5:
                    break
                target += steps
                say(f"{s_per_step:.2f} s/step: flow train again (resumes), up to step {target}")
                t_run = time.perf_counter()
                train_result = train_to(target)
        ckpts = [Path(p) for p in train_result["checkpoints"] if "checkpoint-" in Path(p).name]
        if ckpts:
            renders = sorted((out / "sample" / "renders" / f"w{summary['width']}").glob("*.npz"))
            say(f"translating rendered panorama {renders[0].stem} with {ckpts[-1].name}")
            translated = translate_one(ckpts[-1], renders[0], out / "translated")
            if translated:
                translated.append(comparison_png(summary["store_url"], renders[0].stem, translated[0],
                                                 out / "translated" / f"{renders[0].stem}-render-translation-photo.png"))

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
