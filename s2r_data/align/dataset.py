"""Score and refine an existing dataset without re-harvesting (``s2r align``).

Reads every sample of a store (photo = the stored ``real``; reported pose = the index's
``reported_*`` columns when the dataset was aligned before, else its pose columns), aligns them
sequence by sequence (:func:`.pipeline.align_images`), and writes a **new** store: samples whose
pose is refined are re-rendered at that pose (``raycast`` backend by default — agreement with
Blender is tested by the render backend — or ``blender``); the others are copied. Every row gets
the alignment columns (``alignment_score`` at the stored pose, the score before, status, flags,
reported pose, correction); splits are kept. The source store is never modified, and a rerun into
the same output continues where it stopped (committed samples are skipped).
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from ..citymodel import CityModel
from ..poses import Pose
from .model_edges import extract_model_edges
from .pipeline import AlignConfig, AlignInput, AlignOutcome, align_images
from .score import ScoreConfig, score_pair

__all__ = ["AlignDatasetReport", "align_dataset", "row_pose", "row_reported_pose"]

log = logging.getLogger(__name__)

_WRITER_COLUMNS = {"image_id", "city", "zarr_index", "written_at"}
_POSE_COLUMNS = {"x_local_m", "y_local_m", "z_local_m", "R_world_to_cam_opensfm", "heading_deg", "pitch_deg", "roll_deg"}


@dataclass
class AlignDatasetReport:
    source_url: str
    out_url: str
    samples: int = 0
    refined: int = 0
    copied: int = 0
    skipped_existing: int = 0
    status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def row_pose(row: dict[str, Any]) -> Pose:
    """The stored (rendered) pose of an index row."""
    return Pose(str(row["image_id"]), [row["x_local_m"], row["y_local_m"], row["z_local_m"]],
                np.asarray(row["R_world_to_cam_opensfm"], dtype=np.float64).reshape(3, 3),
                confidence=str(row.get("pose_confidence") or "sfm"),
                lon_deg=float(row["lon"]) if row.get("lon") is not None else float("nan"),
                lat_deg=float(row["lat"]) if row.get("lat") is not None else float("nan"))


def row_reported_pose(row: dict[str, Any]) -> Pose:
    """The pose Mapillary reported: the ``reported_*`` columns of an aligned dataset, else the
    stored pose."""
    stored = row_pose(row)
    R = row.get("reported_R_world_to_cam_opensfm")
    if R is None or row.get("reported_x_local_m") is None:
        return stored
    return Pose(stored.image_id, [row["reported_x_local_m"], row["reported_y_local_m"], row["reported_z_local_m"]],
                np.asarray(R, dtype=np.float64).reshape(3, 3), stored.confidence, stored.lon_deg, stored.lat_deg)


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def align_dataset(
    source_url: str,
    out_url: str,
    city_model_path: str | Path,
    *,
    config: AlignConfig = AlignConfig(),
    refine: bool = True,
    backend: Literal["raycast", "blender"] = "raycast",
    threads: int = 0,
    limit: int | None = None,
    progress: Callable[[AlignOutcome], None] | None = None,
) -> AlignDatasetReport:
    """Align every sample of ``source_url`` and write the result to ``out_url`` (see the module
    docstring). ``refine=False`` only scores (every sample copied, scored at its stored pose)."""
    from ..render.raycast import RaycastScene
    from ..store import DatasetWriter, compact, open_dataset, verify

    t0 = time.perf_counter()
    if str(Path(out_url).resolve()) == str(Path(source_url).resolve()):
        raise ValueError(f"--out {out_url} is the source dataset: write the aligned dataset to a new location")
    src = open_dataset(source_url)
    rows = src.index.to_pylist()
    if limit is not None:
        rows = rows[:limit]
    model = CityModel.load(city_model_path)
    scene = RaycastScene(model, threads=threads)
    edges = extract_model_edges(model)
    attrs = src.attrs
    H, W = int(attrs["height"]), int(attrs["width"])
    report = AlignDatasetReport(source_url, str(out_url))
    pos = {r["image_id"]: i for i, r in enumerate(src.index.to_pylist())}
    with DatasetWriter(out_url, height=H, width=W, city=str(attrs.get("city", model.meta.get("city", ""))),
                       pyramid_levels=int(attrs.get("pyramid_levels", 1))) as writer:
        todo = [r for r in rows if not writer.has(str(r["image_id"]))]
        report.skipped_existing = len(rows) - len(todo)

        def photo_of(image_id: str) -> Callable[[], np.ndarray]:
            return lambda: src.read(pos[image_id], "real").transpose(1, 2, 0)

        items = [AlignInput(str(r["image_id"]), row_reported_pose(r), photo_of(str(r["image_id"])), r.get("sequence_id"),
                            _ms(r.get("captured_at"))) for r in todo]
        by_id = {str(r["image_id"]): r for r in todo}
        score_cfg = ScoreConfig(width_px=min(config.score.width_px, W))
        tmp = tempfile.TemporaryDirectory(prefix="s2r-align-")

        def write(o: AlignOutcome) -> None:
            row = by_id[o.image_id]
            i = pos[o.image_id]
            real = src.read(i, "real")
            mask = src.read(i, "mask")
            stored = row_pose(row)
            same = (np.allclose(o.pose.center_local_m, stored.center_local_m, atol=1e-4)
                    and np.allclose(o.pose.R_world_to_cam_opensfm, stored.R_world_to_cam_opensfm, atol=1e-7))
            if same:
                sim, label = src.read(i, "sim"), src.read(i, "label")
                depth = sim[6:7].astype(np.float32)
                normal = sim[3:6].astype(np.float32)
                sky = mask[0:1]
                report.copied += 1
            else:
                passes = _render(scene, o.pose, W, backend, city_model_path, Path(tmp.name), threads)
                sim, label, depth, normal = passes.sim7(), passes.label, passes.depth_m, passes.normal
                sky = passes.sky_mask.astype(np.uint8)
                report.refined += 1
            sc = score_pair(real, label, depth, normal, o.pose.R_world_to_cam_opensfm, score_cfg)
            new_row = {k: v for k, v in row.items() if k not in _WRITER_COLUMNS and k not in _POSE_COLUMNS}
            new_row.update(o.index_columns())
            new_row["pose"] = o.pose
            new_row["alignment_score"] = float(sc.score) if sc.usable else None
            writer.write_sample(o.image_id, sim, label, real, sky, mask[1:2], new_row, exist_ok=True)
            report.status[o.status] = report.status.get(o.status, 0) + 1
            if progress is not None:
                progress(o)

        try:
            if refine:
                align_images(items, edges, scene, config, progress=write)
            else:
                for it in items:
                    write(AlignOutcome(it.image_id, it.sequence_id, "not_refined", (), it.reported, row_pose(by_id[it.image_id]),
                                       row_pose(by_id[it.image_id]), None, None))
        finally:
            tmp.cleanup()
            scene.close()
    compact(out_url)
    report.samples = len(rows)
    report.verified = bool(verify(out_url).ok)
    report.seconds = time.perf_counter() - t0
    return report


def _render(scene: Any, pose: Pose, width: int, backend: str, city_model_path: str | Path, tmp: Path, threads: int):
    if backend == "raycast":
        return scene.render(pose, width)
    from ..render import RenderSettings, load_sim_passes, render_poses

    res = render_poses(city_model_path, [pose], tmp, RenderSettings(width=width, threads=threads), progress=False)[0]
    if res.path is None:
        raise RuntimeError(f"Blender could not render {pose.image_id}: {res.reason}")
    passes = load_sim_passes(res.path)
    res.path.unlink(missing_ok=True)
    return passes
