"""The build report: a Markdown summary (counts, failures by reason, timings, the city model's
flat-layer areas and sanity warnings) and a preview PNG of a few sim/real pairs. Plain functions
(no Prefect); the flow turns them into artifacts.

Prefect image artifacts need a browser-loadable URL, not bytes or a local path, so the preview
is written next to the dataset and the Markdown artifact names its path; pass
``preview_base_url`` (e.g. a static file server over the output directory) to get an image link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from s2r_data.atomic import atomic_path, atomic_write_text
from s2r_data.osm.layer_areas import road_share_warning

__all__ = [
    "PreviewPair",
    "preview_rows",
    "write_preview_png",
    "city_model_report",
    "report_markdown",
    "write_report_files",
    "evaluation_markdown",
    "AlignmentPair",
    "write_alignment_png",
    "write_score_histogram_png",
]


@dataclass(frozen=True)
class PreviewPair:
    """One dataset sample as shown in the preview (channel-first, as stored)."""

    image_id: str
    sim: np.ndarray  # (7, H, W): DiffCol [0,1] ×3, world normal [−1,1] ×3, depth m ×1 (0 = sky)
    real: np.ndarray  # (3, H, W) uint8


def _to_u8(img_hwc_01: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(img_hwc_01.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preview_rows(pair: PreviewPair) -> np.ndarray:
    """DiffCol | normal | depth | photo side by side, uint8 (H, 4W, 3)."""
    sim = np.asarray(pair.sim, dtype=np.float32)
    if sim.ndim != 3 or sim.shape[0] < 7:
        raise ValueError(f"sample {pair.image_id}: sim must be (7, H, W), got {sim.shape}")
    depth_m = sim[6]
    hit = depth_m > 0
    diffcol = _to_u8(sim[0:3].transpose(1, 2, 0))
    normal = _to_u8(np.where(hit[..., None], (sim[3:6].transpose(1, 2, 0) + 1.0) / 2.0, 0.0))  # sky black
    # log depth, near = bright; sky (0) stays black
    log_d = np.log1p(np.where(hit, depth_m, 0.0))
    hi = float(log_d[hit].max()) if hit.any() else 1.0
    depth = np.where(hit, 1.0 - log_d / max(hi, 1e-6) * 0.85, 0.0)
    depth_u8 = _to_u8(np.repeat(depth[..., None], 3, axis=2))
    real = np.asarray(pair.real)
    if real.ndim != 3 or real.shape[0] != 3:
        raise ValueError(f"sample {pair.image_id}: real must be (3, H, W), got {real.shape}")
    real_u8 = real.transpose(1, 2, 0).astype(np.uint8)
    if real_u8.shape[:2] != diffcol.shape[:2]:
        real_u8 = np.asarray(Image.fromarray(real_u8).resize(diffcol.shape[1::-1], Image.BILINEAR))
    return np.concatenate([diffcol, normal, depth_u8, real_u8], axis=1)


def write_preview_png(pairs: Sequence[PreviewPair], path: str | Path, *, max_width_px: int = 2048) -> Path:
    """A grid: one row per pair (DiffCol | normal | depth | photo), written atomically."""
    if not pairs:
        raise ValueError("no samples to preview")
    rows = [preview_rows(p) for p in pairs]
    width = min(r.shape[1] for r in rows)
    rows = [r[:, :width] for r in rows]
    return _save_png(np.concatenate(rows, axis=0), path, max_width_px)


@dataclass(frozen=True)
class AlignmentPair:
    """One pair of the alignment figure: the photo with the model's edges before/after refinement."""

    image_id: str
    which: str  # "worst" | "best"
    score_before: float | None
    score_after: float | None
    status: str
    before: np.ndarray  # (h, w, 3) uint8 overlay at the reported pose
    after: np.ndarray  # (h, w, 3) uint8 overlay at the stored (refined or kept) pose


def _save_png(img: np.ndarray, path: str | Path, max_width_px: int) -> Path:
    im = Image.fromarray(img)
    if im.width > max_width_px:
        im = im.resize((max_width_px, round(im.height * max_width_px / im.width)), Image.BILINEAR)
    with atomic_path(path, suffix=".png") as tmp:
        im.save(tmp, format="PNG")
    return Path(path)


def city_model_report(city_model_path: str | Path) -> dict[str, Any]:
    """What the build report shows of the city model (from the ``summary.json`` beside it): the
    flat layers' mesh and union areas, building counts and the sanity warnings (a road share of
    the clip polygon below :data:`s2r_data.osm.layer_areas.ROAD_SHARE_MIN`: a city without
    streets renders every label pass without them)."""
    meta = json.loads(Path(city_model_path).with_name("summary.json").read_text())
    clip_m2 = float(meta.get("clip_area_m2") or 0.0)
    counts = meta.get("counts", {})
    return {
        "path": str(city_model_path),
        "builder_version": meta.get("builder_version"),
        "clip_area_m2": clip_m2,
        "flat_layers": {
            name: {
                "mesh_area_m2": a["mesh_area_m2"],
                "union_area_m2": a["union_area_m2"],
                "share_of_clip": a["mesh_area_m2"] / clip_m2 if clip_m2 else None,
            }
            for name, a in meta.get("flat_layers", {}).items()
        },
        "buildings": counts.get("buildings"),
        "buildings_dropped": counts.get("buildings_dropped"),
        "building_heights_clamped": counts.get("building_heights_clamped"),
        "warnings": [w for w in (road_share_warning(meta),) if w],
    }


def _city_model_lines(cm: Mapping[str, Any]) -> list[str]:
    lines = ["", "## City model", "", f"`{cm.get('path')}` (builder {cm.get('builder_version')})", ""]
    lines += ["| layer | mesh area m² | union area m² | share of clip |", "|---|---:|---:|---:|"]
    for name, a in cm.get("flat_layers", {}).items():
        share = "-" if a.get("share_of_clip") is None else f"{100 * a['share_of_clip']:.2f} %"
        lines.append(f"| {name} | {a['mesh_area_m2']:,.0f} | {a['union_area_m2']:,.0f} | {share} |")
    lines += ["", f"buildings: {cm.get('buildings')}, dropped: {cm.get('buildings_dropped')}, "
                  f"heights clamped: {cm.get('building_heights_clamped')}"]
    lines += [f"\n**Warning:** {w}" for w in cm.get("warnings", [])]
    return lines


def write_alignment_png(pairs: Sequence[AlignmentPair], path: str | Path, *, max_width_px: int = 2048) -> Path:
    """Rows of before | after edge overlays (red: vertical building edges, yellow: facade–ground
    lines, magenta: ground outlines, cyan: rooflines), each with a caption; written atomically."""
    from s2r_data.align.overlay import label_strip

    if not pairs:
        raise ValueError("no pairs to show")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = []
    for p in pairs:
        w = p.before.shape[1]
        cap_b = label_strip(f"{p.which}: {p.image_id}  reported pose, score {fmt(p.score_before)}", w)
        cap_a = label_strip(f"{p.status}, score {fmt(p.score_after)}", w)
        rows.append(np.concatenate([np.concatenate([cap_b, p.before]), np.concatenate([cap_a, p.after])], axis=1))
    width = min(r.shape[1] for r in rows)
    return _save_png(np.concatenate([r[:, :width] for r in rows]), path, max_width_px)


def write_score_histogram_png(before: Sequence[float | None], after: Sequence[float | None], path: str | Path) -> Path:
    """Histogram of the alignment scores at the reported (grey) and stored (blue) poses."""
    from s2r_data.align.overlay import score_histogram

    img = score_histogram([("reported poses", before, (150, 150, 150)), ("stored poses", after, (30, 90, 220))])
    return _save_png(img, path, 2048)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}" if s < 600 else f"{s / 60:.1f} min"


def report_markdown(summary: Mapping[str, Any], *, preview_path: str | None = None, preview_url: str | None = None) -> str:
    """Markdown for the flow's report artifact (tables of counts, failures, timings)."""
    lines = [f"# Dataset build: {summary['city']}", ""]
    lines += [
        f"- store: `{summary.get('store_url')}`",
        f"- index: `{summary.get('index_path')}`",
        f"- panorama size: {summary.get('width')} × {summary.get('height')} px",
        f"- samples in store: **{summary.get('samples_in_store')}**, verified: **{summary.get('verified')}**",
        f"- splits: {', '.join(f'{k} {v}' for k, v in summary.get('splits', {}).items()) or '-'}",
        "",
        "## Counts",
        "",
        "| stage | count |",
        "|---|---:|",
    ]
    for key, value in summary.get("counts", {}).items():
        lines.append(f"| {key.replace('_', ' ')} | {value} |")
    failures = summary.get("failures", {})
    lines += ["", "## Failures by reason", ""]
    if failures:
        lines += ["| stage | reason | count |", "|---|---|---:|"]
        for key, value in sorted(failures.items()):
            stage, _, reason = key.partition(":")
            lines.append(f"| {stage} | {reason or '-'} | {value} |")
    else:
        lines.append("none")
    if summary.get("city_model"):
        lines += _city_model_lines(summary["city_model"])
    warnings = list(summary.get("warnings", [])) + list(summary.get("city_model", {}).get("warnings", []))
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    al = summary.get("alignment")
    if al:
        lines += ["", "## Pose alignment", "",
                  f"- images aligned: {al.get('images', 0)}, {al.get('s_per_image', 0)} s per image",
                  "- status: " + (", ".join(f"{k} {v}" for k, v in sorted(al.get("status", {}).items())) or "-"),
                  "- flags: " + (", ".join(f"{k} {v}" for k, v in sorted(al.get("flags", {}).items())) or "-")]
        for key, name in (("score_before", "score at the reported poses"), ("score_after", "score at the stored poses")):
            q = al.get(key) or {}
            if q:
                lines.append(f"- {name}: median {q['median']}, p10 {q['p10']}, p90 {q['p90']}")
        for key, name in (("alignment_histogram_png", "score histogram"), ("alignment_png", "worst and best pairs, before | after")):
            if summary.get(key):
                lines.append(f"- {name}: `{summary[key]}`")
    if summary.get("train_flow_run"):
        lines += ["", f"Training started: flow run `{summary['train_flow_run']}`"]
    lines += ["", "## Timings", "", "| step | seconds |", "|---|---:|"]
    for key, value in summary.get("timings_s", {}).items():
        lines.append(f"| {key.replace('_', ' ')} | {_fmt_seconds(float(value))} |")
    if preview_url:
        lines += ["", "## Preview (DiffCol | normal | depth | photo)", "", f"![preview]({preview_url})"]
    elif preview_path:
        lines += ["", "## Preview (DiffCol | normal | depth | photo)", "", f"PNG on the worker: `{preview_path}`"]
    return "\n".join(lines) + "\n"


def write_report_files(summary: Mapping[str, Any], report_dir: str | Path, markdown: str) -> tuple[Path, Path]:
    """``report.md`` and ``report.json`` (machine-readable summary) in ``report_dir``."""
    report_dir = Path(report_dir)
    md = atomic_write_text(report_dir / "report.md", markdown)
    js = atomic_write_text(report_dir / "report.json", json.dumps(summary, indent=2, sort_keys=True, default=str))
    return md, js


def evaluation_markdown(eval_dir: str | Path, *, image_base_url: str | None = None) -> list[str]:
    """The training report's section on a run's final evaluation (``<run_dir>/eval``, written by
    ``s2r_train.evaluate``): the model-vs-baselines table and the image grids (render |
    class-mean | nearest-neighbour | model | photo), as links under ``image_base_url`` or as paths
    on the worker. Empty when the run has no evaluation."""
    from s2r_train.evaluate import format_table

    eval_dir = Path(eval_dir)
    try:
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    lines = ["", f"## Evaluation against baselines (step {metrics.get('step', '?')})", "",
             "Baselines fitted on the train split only; crops from a fixed seed.", "", format_table(metrics)]
    for grid in sorted(eval_dir.glob("*.png")):
        title = f"{grid.stem}: render | class-mean | nearest-neighbour | model | photo"
        lines += [f"![{title}]({image_base_url.rstrip('/')}/{grid.name})" if image_base_url else
                  f"- {title}: `{grid}`"]
    return lines
