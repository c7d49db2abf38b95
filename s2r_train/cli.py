"""``python -m s2r_train {train,eval,infer,fid,splits}`` (also the ``s2r-train`` script).

    python -m s2r_train train --config s2r_train/configs/s2r.yaml --dataset URL --run-dir DIR \
        [--resume [PATH]] [--no-resume] [--max-steps N] [--set train.lr_g=2e-4 ...] [--dry-run]
    torchrun --standalone --nproc_per_node=8 -m s2r_train train ...      (same script and config)
    python -m s2r_train eval --checkpoint CKPT --dataset URL [--out DIR]   (model vs class-mean / nearest-neighbour)
    python -m s2r_train infer --checkpoint CKPT --input RENDER_DIR|URL --out DIR [--mode panorama|views]
    python -m s2r_train fid --real DIR --fake DIR
    python -m s2r_train splits --dataset URL [--train 0.8 --val 0.1 --vis 5 --seed 0] [--reassign]

Training resumes from the newest checkpoint in the run dir by default (rerun the same
command); ``--no-resume`` refuses to start over an existing run instead of mixing runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m s2r_train", description="s2r sim→real GAN: train, eval, infer, FID/KID")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a generator (resumes from the run dir)")
    t.add_argument("--config", required=True, help="YAML path or preset name (thesis, s2r, tiny)")
    t.add_argument("--dataset", default=None, metavar="URL", help="dataset URL or synthetic://N (overrides data.url)")
    t.add_argument("--run-dir", required=True, type=Path, help="checkpoints, TensorBoard logs, samples, config.yaml")
    t.add_argument("--resume", nargs="?", const="latest", default="latest", metavar="PATH",
                   help="checkpoint to resume from (default: newest in the run dir, if any)")
    t.add_argument("--no-resume", action="store_true", help="fail if the run dir already holds checkpoints")
    t.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop at absolute step N (checkpoint saved)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    t.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="score a checkpoint (EMA and raw weights) against the class-mean and "
                                    "nearest-neighbour baselines on the held-out splits")
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--dataset", required=True, metavar="URL", help="dataset store with train and val (test) splits")
    e.add_argument("--out", type=Path, default=None,
                   help="metrics.json, metrics.md and image grids (default: <run dir>/eval of the checkpoint)")
    e.add_argument("--crops-per-panorama", type=int, default=None, help="default: the run's eval.crops_per_panorama")
    e.add_argument("--fid-crops", type=int, default=None, help="crops in the FID/KID sets (0 = none)")
    e.add_argument("--crop-seed", type=int, default=None, help="seed of the fixed crops (default: eval.crop_seed)")
    e.add_argument("--pano-width", type=int, default=None, help="whole-panorama width (default: the crops' resolution)")
    e.add_argument("--no-panoramas", action="store_true", help="score crops only")
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", action="store_true")

    i = sub.add_parser("infer", help="translate rendered passes into photo-like PNGs")
    i.add_argument("--checkpoint", required=True, type=Path)
    i.add_argument("--input", required=True, help="render output dir (*.npz) or dataset URL")
    i.add_argument("--out", required=True, type=Path)
    i.add_argument("--mode", choices=["panorama", "views"], default="panorama")
    i.add_argument("--pano-method", choices=["tiled", "direct"], default=None,
                   help="panorama mode: tiled = overlapping perspective views blended back (what the generator "
                        "was trained on), direct = the equirect image through G at once (default: "
                        "s2r_train.panorama.DEFAULT_PANO_METHOD, the better one on the sample city's val panoramas)")
    i.add_argument("--tile", type=int, default=None,
                   help="direct method only: translate in windows of this size (px) to bound memory")
    i.add_argument("--overlap", type=int, default=32, help="direct method windows: overlap (px)")
    i.add_argument("--pano-width", type=int, default=None,
                   help="panorama mode: translate at this width (default: the training crops' angular resolution)")
    i.add_argument("--yaw-deg", type=float, nargs="+", default=[0.0, 90.0, 180.0, 270.0])
    i.add_argument("--pitch-deg", type=float, default=0.0)
    i.add_argument("--fov-deg", type=float, default=90.0)
    i.add_argument("--size", type=int, default=256, help="perspective view size (px)")
    i.add_argument("--split", default="val", help="dataset split (dataset input only)")
    i.add_argument("--limit", type=int, default=None, help="max images (dataset input only)")
    i.add_argument("--no-ema", action="store_true", help="use G instead of G_ema")
    i.add_argument("--device", default="cpu")

    f = sub.add_parser("fid", help="FID and KID between two image directories (offline Inception)")
    f.add_argument("--real", required=True, type=Path)
    f.add_argument("--fake", required=True, type=Path)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--device", default="cpu")
    f.add_argument("--kid-subsets", type=int, default=100)
    f.add_argument("--kid-subset-size", type=int, default=1000)
    f.add_argument("--json", type=Path, default=None, help="also write the result here")

    sp = sub.add_parser("splits", help="assign train/val/test splits by sequence in a dataset store's index "
                                       "(new sequences only; --reassign redoes all)")
    sp.add_argument("--dataset", required=True, metavar="URL", help="dataset store (local path or s3://…)")
    sp.add_argument("--train", type=_fraction_or_count, default=0.8, help="fraction (0.8) or count (120) of samples")
    sp.add_argument("--val", type=_fraction_or_count, default=0.1,
                    help="fraction or count, of the same kind as --train; what is left over is test")
    sp.add_argument("--vis", type=int, default=5, help="visualisation samples, chosen from val")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--reassign", action="store_true",
                    help="reassign every sequence (default: sequences that have a split keep it, so a growing "
                         "store never moves a sample between train and val; a store built all-train needs this)")
    return p


def _fraction_or_count(text: str) -> float | int:
    """``0.8`` → a fraction, ``120`` → a count (argparse type of ``splits --train/--val``)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction (0.8) or a sample count (120)") from None


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointManager
    from .config import ConfigError, config_to_yaml, load_config

    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.url={args.dataset}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(config_to_yaml(config), end="")
        return 0
    existing = CheckpointManager(args.run_dir).latest()
    if args.no_resume and existing is not None:
        print(f"{args.run_dir} already holds {existing.name}; use another --run-dir or drop --no-resume",
              file=sys.stderr)
        return 2
    from .trainer import Trainer, init_distributed

    info = init_distributed(args.device)
    resume_from = None if args.resume in (None, "latest") else Path(args.resume)
    trainer = Trainer(config, run_dir=args.run_dir, dist_info=info, max_steps=args.max_steps,
                      resume=not args.no_resume, resume_from=resume_from, progress=not args.no_progress)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
        if info.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()
    if info.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "last"}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint, format_table

    overrides = {k: v for k, v in {"crops_per_panorama": args.crops_per_panorama, "fid_crops": args.fid_crops,
                                   "crop_seed": args.crop_seed, "pano_width": args.pano_width}.items() if v is not None}
    if args.no_panoramas:
        overrides["panoramas"] = False
    if not args.checkpoint.is_file():
        print(f"checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    report, paths = evaluate_checkpoint(args.checkpoint, args.dataset, out_dir=args.out, device=args.device,
                                        progress=not args.no_progress, overrides=overrides)
    print(format_table(report.metrics))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _infer(args: argparse.Namespace) -> int:
    from .infer import infer_dataset, infer_render_dir, load_generator
    from .panorama import DEFAULT_PANO_METHOD

    G, config = load_generator(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    src = Path(args.input)
    if src.is_dir() and any(src.glob("*.npz")):
        written = infer_render_dir(G, config, src, args.out, mode=args.mode,
                                   pano_method=args.pano_method or DEFAULT_PANO_METHOD,
                                   tile=args.tile, overlap=args.overlap, pano_width=args.pano_width,
                                   yaws_deg=args.yaw_deg, pitch_deg=args.pitch_deg, fov_deg=args.fov_deg,
                                   size=args.size, device=args.device)
    else:
        written = infer_dataset(G, config, args.input, args.out, split=args.split, limit=args.limit,
                                device=args.device)
    print(f"wrote {len(written)} images to {args.out}")
    return 0


def _fid(args: argparse.Namespace) -> int:
    from s2r_data.atomic import atomic_write_text

    from .fid import fid_kid_dirs

    res = fid_kid_dirs(args.real, args.fake, batch_size=args.batch_size, device=args.device,
                       kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    return 0


def _splits(args: argparse.Namespace) -> int:
    from .splits import SplitSpec, assign_splits

    try:
        spec = SplitSpec(train=args.train, val=args.val, vis=args.vis)
        counts = assign_splits(args.dataset, spec, seed=args.seed, keep_existing=not args.reassign)
    except (ValueError, FileNotFoundError) as exc:
        print(f"splits: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"train": _train, "eval": _eval, "infer": _infer, "fid": _fid, "splits": _splits}[args.command](args)
