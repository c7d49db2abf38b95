"""Benchmark: does pose refinement make a better sim→real model? Same recipe, same budget, three
training sets from the realistic stand-in world, one held-out test set rendered at the TRUE poses.

Arms (the training sequences; held-out sequences are never trained on):

* **(a) reported** — pairs rendered at the poses Mapillary reported (what the pipeline did before);
* **(b) refined** — pairs rendered at the poses adopted by :mod:`s2r_data.align`;
* **(c) refined + filter** — (b), training only on pairs with ``alignment_score`` ≥ the arm's
  threshold (``data.min_alignment_score``) and with L1 weighted per pair by the score
  (``train.l1_alignment_weighting``).

Test: the held-out sequences' photos paired with renders at their true poses; each arm's
generator (EMA) translates fixed perspective crops; L1, PSNR, SSIM against the photo crops, FID and
KID (the pinned offline Inception, ``s2r_train.fid``) between generated and photo crops.

Renders come from the ray-cast backend (agreement with Blender is tested by the render backend).
The adopted poses come from ``benchmarks/alignment.py`` (``<work>/outcomes.json``), so run it first.

    python benchmarks/alignment_training.py --content DIR --work outputs/bench-alignment          # full: 1024 px, 1500 steps
    python benchmarks/alignment_training.py --content DIR --work outputs/bench-alignment --quick  # 256 px, 150 steps
    python benchmarks/alignment_training.py --content DIR --train-seeds 0 1 2   # every arm three times: mean ± sd
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2r_data.align import ScoreConfig, score_pair  # noqa: E402
from s2r_data.atomic import atomic_write_text  # noqa: E402
from s2r_data.citymodel import CityModel  # noqa: E402
from s2r_data.mapillary.standin_truth import load_truth  # noqa: E402
from s2r_data.poses import Pose  # noqa: E402
from s2r_data.render.raycast import RaycastScene  # noqa: E402
from s2r_data.store import DatasetWriter  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "alignment_training.json"


def _photo(path: Path, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((width, width // 2), Image.LANCZOS)).transpose(2, 0, 1).copy()


def build_store(url: Path, samples: list[tuple[str, Pose, Path, str]], scene: RaycastScene, width: int) -> dict[str, float]:
    """Pairs (photo, ray-cast render at the given pose) in a new store, every sample in split
    'train', scored. Returns the scores by image id. A store left by an earlier run is removed
    first: its poses (outcomes.json) or scores (the score's version) may be other than today's."""
    if url.exists():
        shutil.rmtree(url)
    scores = {}
    cfg = ScoreConfig(width_px=min(1024, width))
    with DatasetWriter(url, height=width // 2, width=width, city="bench") as w:
        for iid, pose, photo_path, seq in samples:
            p = scene.render(pose, width)
            real = _photo(photo_path, width)
            sc = score_pair(real, p.label, p.depth_m, p.normal, pose.R_world_to_cam_opensfm, cfg)
            scores[iid] = float(sc.score) if sc.usable else None
            w.write_sample(iid, p.sim7(), p.label, real, p.sky_mask.astype(np.uint8), np.ones_like(p.label),
                           {"pose": pose, "split": "train", "sequence_id": seq, "alignment_score": scores[iid]})
    return scores


def train_arm(url: Path, run_dir: Path, recipe: str, steps: int, seed: int, extra: list[str]) -> Path:
    from s2r_train.checkpoint import CheckpointManager
    from s2r_train.config import load_config
    from s2r_train.trainer import Trainer, init_distributed

    # narrower crops than the recipes' 60-100°: misalignment of a few pixels at 2048 must still
    # show at the crops' resolution (same for every arm)
    overrides = [f"data.url={url}", "train.val_batches=0", "train.num_vis_samples=0", f"train.seed={seed}",
                 "train.epochs=100000", "train.checkpoint_every_epochs=100000", "train.log_every_steps=100000",
                 "data.fov_deg=[35.0,55.0]", *extra]
    cfg = load_config(recipe, overrides)
    trainer = Trainer(cfg, run_dir=run_dir, dist_info=init_distributed("cpu"), max_steps=steps, resume=False, progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    ckpt = CheckpointManager(run_dir).latest()
    if ckpt is None:
        raise RuntimeError(f"training in {run_dir} wrote no checkpoint")
    return Path(ckpt)


def evaluate(ckpt: Path, test_url: Path, n_crops: int, seed: int, inception) -> dict[str, float]:
    import torch

    from s2r_train.conditioning import condition_from_batch
    from s2r_train.data import decode_batch
    from s2r_train.fid import extract_features, fid_from_features, kid_from_features
    from s2r_train.infer import load_generator, translate
    from s2r_train.metrics import image_metrics
    from s2r_train.trainer import build_dataset

    G, cfg = load_generator(ckpt)
    fakes, reals, mets = [], [], []
    batches = []
    rep = 0
    while sum(len(i) for _, i in batches) < n_crops:  # a new seed per pass: deterministic views depend on (seed, index)
        ds = build_dataset(str(test_url), split="train", data_cfg=cfg.data, seed=seed + rep, deterministic=True,
                           depth_range_m=cfg.network.conditioning.depth_range_m)
        idx = list(range(min(len(ds), n_crops - sum(len(i) for _, i in batches))))
        batches += [(ds, idx[k:k + 16]) for k in range(0, len(idx), 16)]
        rep += 1
    with torch.no_grad():
        for ds, ix in batches:
            b = decode_batch(ds.get_batch(ix))
            cond = condition_from_batch(b, cfg.network.conditioning, "cpu")
            fake = translate(G, cond).clamp(-1, 1)
            mets.append((len(fake), image_metrics(fake, b["real"])))
            fakes.append(fake)
            reals.append(b["real"])
    n = sum(m for m, _ in mets)
    out = {key: float(sum(m * d[key] for m, d in mets) / n) for key in ("l1", "psnr", "ssim")}
    ff = extract_features(inception, list(torch.cat(fakes)))
    fr = extract_features(inception, list(torch.cat(reals)))
    out["fid"] = fid_from_features(fr, ff)
    out["kid"], out["kid_std"] = kid_from_features(fr, ff, num_subsets=50, subset_size=max(2, min(len(ff) // 2, 100)))
    out["crops"] = n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--content", type=Path, required=True, help="realistic replay content (with truth.json)")
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "bench-alignment", help="where alignment.py wrote outcomes.json")
    ap.add_argument("--quick", action="store_true", help="256-px panoramas, 150 steps, 64 test crops")
    ap.add_argument("--width", type=int, default=None, help="panorama width of the stores (default 1024; quick 256)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per arm (default 1500; quick 150)")
    ap.add_argument("--test-crops", type=int, default=None, help="held-out crops (default 256; quick 64)")
    ap.add_argument("--held-out", type=float, default=0.25, help="fraction of sequences held out for the test")
    ap.add_argument("--min-score", type=float, default=None, help="arm (c) threshold (default: the train scores' 25th percentile)")
    ap.add_argument("--recipe", default="demo",
                    help="training preset of every arm (default demo: the CPU recipe that beats the class-mean baseline)")
    ap.add_argument("--seed", type=int, default=0, help="held-out sequences and test crops")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=None,
                    help="training seeds, every arm trained once per seed; the table shows the mean (default: --seed)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    width = args.width or (256 if args.quick else 1024)
    steps = args.steps or (150 if args.quick else 1500)
    n_crops = args.test_crops or (64 if args.quick else 256)

    doc = json.loads((args.work / "outcomes.json").read_text())
    truth = load_truth(args.content)
    model = CityModel.load(doc["model"])
    scene = RaycastScene(model)
    rows = [r for r in doc["rows"] if (args.content / "images" / f"{r['image_id']}.jpg").is_file()]
    seqs = sorted({r["sequence"] for r in rows})
    rng = np.random.default_rng(args.seed)
    held = set(rng.choice(seqs, size=max(1, round(args.held_out * len(seqs))), replace=False).tolist()) if len(seqs) > 1 else set()
    train_rows = [r for r in rows if r["sequence"] not in held]
    test_rows = [r for r in rows if r["sequence"] in held]
    if not train_rows or not test_rows:
        print("need at least two sequences (one held out)", file=sys.stderr)
        return 2
    print(f"{len(train_rows)} training pairs ({len(seqs) - len(held)} sequences), {len(test_rows)} held-out pairs "
          f"({len(held)} sequences); {width} px, {steps} steps of the '{args.recipe}' recipe per arm", flush=True)

    root = args.work / f"training-w{width}"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def photo(r) -> Path:
        return args.content / "images" / f"{r['image_id']}.jpg"

    stores = {}
    scores = {}
    for name, pose_of in (("reported", lambda r: Pose.from_dict(r["outcome"]["reported"])),
                          ("refined", lambda r: Pose.from_dict(r["outcome"]["pose"]))):
        stores[name] = root / f"{name}.zarr"
        scores[name] = build_store(stores[name], [(r["image_id"], pose_of(r), photo(r), r["sequence"]) for r in train_rows], scene, width)
    stores["test"] = root / "test_true_poses.zarr"
    build_store(stores["test"], [(r["image_id"], truth.images[r["image_id"]].true_pose, photo(r), r["sequence"]) for r in test_rows],
                scene, width)
    refined_scores = [s for s in scores["refined"].values() if s is not None]
    tau = args.min_score if args.min_score is not None else float(np.percentile(refined_scores, 25))
    build_s = time.perf_counter() - t0

    from s2r_train.fid import InceptionFeatures

    inception = InceptionFeatures()
    arms = {
        "a_reported": (stores["reported"], []),
        "b_refined": (stores["refined"], []),
        "c_refined_filtered": (stores["refined"], [f"data.min_alignment_score={tau}", "train.l1_alignment_weighting=true"]),
    }
    train_seeds = args.train_seeds or [args.seed]
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for train_seed in train_seeds:
        for name, (url, extra) in arms.items():
            t1 = time.perf_counter()
            run_dir = root / "runs" / f"{name}-seed{train_seed}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            ckpt = train_arm(url, run_dir, args.recipe, steps, train_seed, extra)
            train_s = time.perf_counter() - t1
            per_seed[name].append({**evaluate(ckpt, stores["test"], n_crops, args.seed + 1, inception), "train_s": train_s,
                                   "train_seed": train_seed})
            print(f"  {name} (training seed {train_seed}): {per_seed[name][-1]}", flush=True)
    metrics = ("l1", "psnr", "ssim", "fid", "kid")
    results = {name: {**{k: float(np.mean([r[k] for r in runs])) for k in (*metrics, "kid_std", "crops", "train_s")},
                      **{f"{k}_sd": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for k in metrics},
                      "per_seed": runs}
               for name, runs in per_seed.items()}

    def better(x: dict[str, float], y: dict[str, float], k: str) -> bool:
        return x[k] < y[k] if k in ("l1", "fid", "kid") else x[k] > y[k]

    a = results["a_reported"]
    res = {
        "n_train_pairs": len(train_rows), "n_test_pairs": len(test_rows), "width": width, "recipe": args.recipe, "steps": steps, "test_crops": n_crops,
        "min_alignment_score_c": tau, "n_train_pairs_c": int(sum(s is not None and s >= tau for s in scores["refined"].values())),
        "score_median_reported": float(np.median([s for s in scores["reported"].values() if s is not None])),
        "score_median_refined": float(np.median(refined_scores)),
        "arms": results,
        "train_seeds": train_seeds,
        # on the means over the training seeds, and seed by seed (the same seed's (a) run)
        "b_beats_a": {k: better(results["b_refined"], a, k) for k in metrics},
        "c_beats_a": {k: better(results["c_refined_filtered"], a, k) for k in metrics},
        "b_beats_a_every_seed": {k: all(better(b, aa, k) for b, aa in zip(per_seed["b_refined"], per_seed["a_reported"])) for k in metrics},
        "c_beats_a_every_seed": {k: all(better(c, aa, k) for c, aa in zip(per_seed["c_refined_filtered"], per_seed["a_reported"]))
                                 for k in metrics},
        "build_s": build_s, "quick": bool(args.quick),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    atomic_write_text(args.out, json.dumps(res, indent=2, default=float))
    print(f"\n{len(train_seeds)} training seed(s) {train_seeds}: mean ± sd")
    print("| arm | L1 ↓ | PSNR ↑ | SSIM ↑ | FID ↓ | KID ↓ | train pairs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        n = res["n_train_pairs_c"] if name.startswith("c_") else len(train_rows)
        print(f"| {name} | {r['l1']:.4f} ± {r['l1_sd']:.4f} | {r['psnr']:.2f} ± {r['psnr_sd']:.2f} | {r['ssim']:.4f} ± {r['ssim_sd']:.4f} "
              f"| {r['fid']:.1f} ± {r['fid_sd']:.1f} | {r['kid']:.4f} ± {r['kid_sd']:.4f} | {n} |")
    print(f"(b) beats (a) in every seed: {res['b_beats_a_every_seed']}; (c): {res['c_beats_a_every_seed']}")
    print(f"\nscores of the training pairs: reported median {res['score_median_reported']:.3f}, refined {res['score_median_refined']:.3f}; "
          f"(c) keeps score ≥ {tau:.3f} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
