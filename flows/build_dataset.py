"""Flow ``build-dataset``: a city name → a verified sim/real panorama dataset.

The flow only sequences library calls (``s2r_data``, via the plain functions of
:mod:`flows.stages`); each task wraps one coarse step:

    resolve city ─► city model (OSM → meshes, cached) ────────────────────┐
                └─► tiles ─► harvest-tile × tiles (network: retries, back-off) ─► merge ─► poses
                                                                                   │
        align-poses × sequence batches (refine each reported pose against the model ◄┘
                                        with the ray caster; kept only if it scores better)
                                                                                   │
        render-and-write × batches (one Blender process per batch, then its samples ◄┘
                                    are committed to the Zarr store + index fragments, scored)
                  ─► index-and-verify (compact index, splits, verify) ─► report artifacts
                  ─► (optional) run the train deployment

Resumability: every step checks its outputs first (finished tile parts, per-pose render files,
sample ids already committed to the store); Prefect's cache is only a second, cheaper skip for
harvested tiles. A rerun after a crash redoes nothing that finished and writes no duplicates.

Concurrency: tasks run on a bounded ``ThreadPoolTaskRunner`` (``$S2R_TASK_WORKERS``, default 2;
Blender children release the GIL, so threads suffice), or on Dask worker processes
(``task_runner="dask"`` or a scheduler address: :mod:`flows.runners`). Before dispatching render
batches the flow allocates every new sample's slot in the store (deterministic, lock-free:
:mod:`s2r_data.store.slots`), so the store may be any fsspec URL (``s3://…``) written by many
workers at once. Harvest tasks carry the tag ``mapillary-api`` and render tasks ``blender``:
``prefect concurrency-limit create mapillary-api 2`` caps API use across all runs of a server.
Several machines: docs/deployments.md.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from s2r_data.cities import CityConfig, load_city_or_area
from s2r_data.mapillary.config import DEFAULT_GRAPH_URL, DEFAULT_TILES_URL
from s2r_data.store.urls import location
from s2r_data.tiles import parse_tile_id, tiles_for_polygon

from . import runners, stages
from .mapillary_token import MissingTokenError
from .storage_credentials import use_storage_block
from .report import (
    city_model_report,
    report_markdown,
    write_alignment_png,
    write_preview_png,
    write_report_files,
    write_score_histogram_png,
)

__all__ = ["build_dataset", "BuildLayout", "EmptyRegionError", "DEFAULT_GRAPH_URL", "DEFAULT_TILES_URL", "TASK_WORKERS"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} must be an integer") from None
    if value < 1:
        raise ValueError(f"${name}={raw!r} must be >= 1")
    return value


# Tasks at once in one flow run (render batches = Blender processes). Read at import so a work
# pool sets it per machine through job_variables.env; the Python API can pass a runner instead:
# build_dataset.with_options(task_runner=ThreadPoolTaskRunner(max_workers=4)).
TASK_WORKERS = _env_int("S2R_TASK_WORKERS", 2)


class EmptyRegionError(RuntimeError):
    """The requested tiles hold no usable panoramas."""


class BadParameterError(ValueError):
    """A flow parameter is out of range; the message names it and the fix."""


@dataclass(frozen=True)
class BuildLayout:
    """Where one city's build lives (``out_dir/<city>/...``); derived, never configured twice."""

    city_dir: Path
    store_url: str

    @classmethod
    def create(cls, out_dir: str | os.PathLike, city: str, store_url: str | None) -> "BuildLayout":
        city_dir = Path(out_dir).resolve() / city
        return cls(city_dir=city_dir, store_url=store_url or str(city_dir / "dataset.zarr"))

    @property
    def city_model_dir(self) -> Path:
        return self.city_dir / "city_model"

    @property
    def harvest_dir(self) -> Path:
        return self.city_dir / "harvest"

    def renders_dir(self, width: int) -> Path:
        return self.city_dir / "renders" / f"w{width}"

    @property
    def align_dir(self) -> Path:
        return self.city_dir / "alignment"

    @property
    def report_dir(self) -> Path:
        return self.city_dir / "report"


# ---------------------------------------------------------------------------------------------
# tasks: thin wrappers of stages.* (plain functions, testable without Prefect)


@task(name="city-model", tags=["cpu"])
def city_model_task(city: str, out_dir: str, registry: str | None = None, area_lonlat: list[list[float]] | None = None) -> str:
    return str(stages.city_model(stages.city_for_task(city, registry, area_lonlat), Path(out_dir)))


def _harvest_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache only what the output check already proves done: a finished tile part on disk.

    The key includes the part's size and mtime, so a deleted or rewritten part misses the
    cache; incremental runs never use it (they must re-read the coverage).
    """
    if parameters.get("incremental") or (parameters.get("harvest_overrides") or {}).get("retry_quarantined"):
        return None
    stamp = stages.tile_part_stamp(Path(parameters["harvest_dir"]), parameters["tile_id"])
    if stamp is None:
        return None
    return "harvest-{v}-{city}-{tile}-{stamp}".format(
        v=stages.DATASET_VERSION, city=parameters["city"], tile=parameters["tile_id"].replace("/", "_"), stamp=stamp
    )


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry the network step only for errors that can heal (not token, block or bad input)."""
    try:
        state.result()
    except (MissingTokenError, stages.PermanentHarvestError):
        return False
    except Exception:  # noqa: BLE001 - anything else (connection reset, 5xx after retries) may heal
        return True
    return False


def _harvest_run_name(parameters: dict[str, Any]) -> str:
    return f"harvest-tile-{parameters['tile_id']}"


def _batch_label(samples: Sequence[dict[str, Any]]) -> str:
    """``"<first id>..<last id> (n)"``: the image ids a render batch covers, in batch order."""
    ids = [str(s["pose"]["image_id"]) for s in samples]
    if not ids:
        return "empty (0)"
    return f"{ids[0]} ({len(ids)})" if len(ids) == 1 else f"{ids[0]}..{ids[-1]} ({len(ids)})"


def _render_run_name(parameters: dict[str, Any]) -> str:
    return f"render-and-write-{_batch_label(parameters['samples'])}"


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing"


@task(
    name="harvest-tile",
    task_run_name=_harvest_run_name,
    tags=["mapillary-api"],
    cache_key_fn=_harvest_cache_key,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
    persist_result=True,
)
def harvest_tile_task(
    city: str,
    tile_id: str,
    harvest_dir: str,
    graph_url: str,
    tiles_url: str,
    incremental: bool,
    harvest_overrides: dict[str, Any],
    registry: str | None = None,
    area_lonlat: list[list[float]] | None = None,
    replay: bool = False,
) -> dict[str, Any]:
    log = get_run_logger()
    log.info("tile %s: harvesting from %s%s", tile_id, graph_url, " (incremental)" if incremental else "")
    t0 = time.perf_counter()
    rep = stages.harvest_tile(
        stages.city_for_task(city, registry, area_lonlat),
        tile_id,
        Path(harvest_dir),
        graph_url=graph_url,
        tiles_url=tiles_url,
        incremental=incremental,
        overrides=harvest_overrides,
        replay=replay,
    )
    done = "already complete, skipped" if rep.get("skipped") else f"{rep.get('new', 0)} new"
    log.info("tile %s: %s; images: %s (%.1f s)", tile_id, done, _count_text(rep.get("statuses", {})), time.perf_counter() - t0)
    return rep


@task(name="align-poses", tags=["cpu"])
def align_poses_task(city_model_path: str, samples: list[dict[str, Any]], align_dir: str, threads: int) -> dict[str, Any]:
    return stages.align_batch(Path(city_model_path), samples, Path(align_dir), threads=threads)


@task(name="render-and-write", task_run_name=_render_run_name, tags=["blender"])
def render_and_write_task(
    city_model_path: str, samples: list[dict[str, Any]], renders_dir: str, store_url: str, city: str, width: int, threads: int,
    renderer: str = "blender",
    storage_block: str | None = None,
) -> dict[str, Any]:
    log = get_run_logger()
    label = _batch_label(samples)
    threads = runners.render_threads_here(threads)
    use_storage_block(store_url, storage_block)
    log.info("batch %s: rendering %d panoramas (%s backend, %d threads)", label, len(samples), renderer, threads)
    rep = stages.render_and_write_batch(
        Path(city_model_path), samples, Path(renders_dir), store_url, city=city, width=width, threads=threads,
        backend=renderer, owner=runners.flow_run_owner(),
    )
    items = rep.get("items", [])
    log.info(
        "batch %s: render %s; store %s (%.1f s render, %.1f s write)", label,
        _count_text(dict(Counter(str(i.get("render")) for i in items))),
        _count_text(dict(Counter(str(i.get("store")) for i in items))), rep.get("render_s", 0.0), rep.get("write_s", 0.0),
    )
    return rep


@task(name="index-and-verify")
def finalize_store_task(store_url: str, splits: list[float | int], seed: int, full_verify: bool = False) -> dict[str, Any]:
    return stages.finalize_store(store_url, splits=splits, seed=seed, full_verify=full_verify)


# ---------------------------------------------------------------------------------------------
# the flow


def _resolve_tiles(city: CityConfig, tiles: Sequence[str] | None) -> list[str]:
    all_tiles = tiles_for_polygon(city.polygon)
    if not tiles:
        return all_tiles
    wanted = []
    for t in tiles:
        parse_tile_id(t)  # raises with the expected format
        wanted.append(str(t))
    outside = sorted(set(wanted) - set(all_tiles))
    if outside:
        raise BadParameterError(
            f"tiles {outside} do not intersect city {city.name!r}; its z14 tiles are: {', '.join(all_tiles)}"
        )
    return sorted(set(wanted), key=all_tiles.index)


def _batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _validate(width: int | None, limit: int | None, batch_size: int, network_retries: int) -> None:
    if width is not None and (width < 16 or width % 2):
        raise BadParameterError(f"width={width}: must be an even number of pixels >= 16 (height = width / 2)")
    if limit is not None and limit < 1:
        raise BadParameterError(f"limit={limit}: must be >= 1, or null for all panoramas")
    if batch_size < 1:
        raise BadParameterError(f"batch_size={batch_size}: must be >= 1 poses per Blender batch")
    if network_retries < 0:
        raise BadParameterError(f"network_retries={network_retries}: must be >= 0")


@flow(
    name="build-dataset",
    task_runner=ThreadPoolTaskRunner(max_workers=TASK_WORKERS),
    description="City name → verified paired sim/real panorama dataset (Zarr + Parquet index).",
)
def build_dataset(
    city: str = "sample",
    width: int | None = None,
    tiles: list[str] | None = None,
    limit: int | None = None,
    incremental: bool = False,
    out_dir: str = "outputs",
    store_url: str | None = None,
    graph_url: str | None = None,
    tiles_url: str | None = None,
    batch_size: int = 8,
    renderer: str = "blender",
    refine_poses: bool = True,
    network_retries: int = 3,
    harvest_overrides: dict[str, Any] | None = None,
    preview_count: int = 4,
    preview_base_url: str | None = None,
    splits: list[float | int] = [0.8, 0.2, 5],
    split_seed: int = 0,
    full_verify: bool = False,
    train_after: bool = False,
    train_config: str | None = None,
    train_deployment: str = "train/train-gpu",
    registry: str | None = None,
    polygon: str | dict[str, Any] | None = None,
    bbox: list[float] | None = None,
    graph_rate_per_min: float | None = None,
    graph_burst: int | None = None,
    tiles_rate_per_min: float | None = None,
    tiles_burst: int | None = None,
    train_dataset_url: str | None = None,
    task_runner: str = "threads",
    dask_workers: int | None = None,
    storage_block: str | None = None,
) -> dict[str, Any]:
    """Build (or extend) the dataset of one city.

    Args:
        city: a name in data/cities.yaml (e.g. ``sample``, ``paris``).
        width: panorama width in pixels (height = width/2); default: the city's ``render_width``.
        tiles: z14 tile ids ``"14/x/y"`` to restrict the build to (default: all tiles of the city).
        limit: at most this many panoramas (the first by image id); default all.
        incremental: re-read Mapillary coverage of finished tiles and add only new images.
        out_dir: root of all outputs; the city lives in ``out_dir/<city>/``.
        store_url: the Zarr store (default ``out_dir/<city>/dataset.zarr``).
        graph_url, tiles_url: Mapillary API bases; default Mapillary's, or, for a city whose registry
            entry names replay content (``sample``), a replay server this run starts on 127.0.0.1.
        batch_size: poses per render task (one Blender process renders a batch).
        renderer: ``"blender"`` (Cycles, the reference) or ``"raycast"`` (Embree ray caster: the
            same label passes, several times faster; one BVH per worker process).
        refine_poses: refine each reported pose against the city model before rendering
            (s2r_data.align: heading, pitch, roll, position, camera height; per-sequence prior;
            the refined pose is kept only if its alignment score is higher). Off: render the
            reported poses (every pair is still scored).
        network_retries: task-level retries of a tile's harvest (exponential back-off).
        harvest_overrides: extra HarvestConfig fields (e.g. ``{"max_concurrency": 4}``).
        preview_count: pairs shown in the preview PNG.
        preview_base_url: URL under which ``out_dir`` is served, to get a Prefect image artifact.
        splits: ``[train, val, vis]``: fractions (or counts) of samples for training and
            validation, whole Mapillary sequences per split, and how many val samples to keep
            for visualisation (s2r_train.splits).
        split_seed: seed of the split assignment.
        full_verify: re-read and check every sample at the end (``s2r store verify``); by default
            only the store and index are checked, since each sample is verified when written.
        train_after: trigger the ``train_deployment`` when the dataset verifies.
        train_config: training config (path or preset name) passed to the train deployment.
        train_deployment: ``flow/deployment`` name of the training deployment.
        registry: city registry YAML instead of data/cities.yaml.
        polygon, bbox: build only this area of the city (a GeoJSON file path or text, or
            ``[W, S, E, N]`` degrees), in the city's frame; it lives in ``out_dir/<city>-area-<hash>/``.
        graph_rate_per_min, graph_burst, tiles_rate_per_min, tiles_burst: harvest rate limits
            (default: HarvestConfig's).
        train_dataset_url: the store as the training worker sees it; default: the store's path
            relative to this run's project directory (each worker resolves it in its own
            ``$S2R_PROJECT_DIR``), a remote URL unchanged (:func:`dataset_location_for_training`).
        task_runner: ``"threads"`` (default), ``"dask"`` (a local Dask cluster of ``dask_workers``
            processes, default one per core) or a Dask scheduler address ``"tcp://host:8786"``;
            harvest tiles and render batches then run on the Dask workers (:mod:`flows.runners`).
        dask_workers: worker processes of the local Dask cluster (``task_runner="dask"`` only).
        storage_block: name of a Prefect Secret block holding the fsspec storage options (keys,
            endpoint) of a remote ``store_url``; default: the workers' environment
            (:mod:`flows.storage_credentials`).

    The Mapillary token is read inside the harvest task from ``$MAPILLARY_TOKEN`` or the Secret
    block ``mapillary-token``; it is never a parameter.
    """
    runner = runners.task_runner_to_delegate(task_runner, dask_workers)  # bad values fail here, by name
    if runner is not None:  # Prefect fixes a flow's runner at decoration: run this flow on that runner
        get_run_logger().info("task_runner=%s: running the build on %s", task_runner,
                              runners.parse_task_runner(task_runner, dask_workers).describe())
        return build_dataset.with_options(task_runner=runner)(**runners.current_parameters())
    log = get_run_logger()
    timings: dict[str, float] = {}
    t_flow = time.perf_counter()
    _validate(width, limit, batch_size, network_retries)
    if renderer not in ("blender", "raycast"):
        raise BadParameterError(f"renderer={renderer!r}: must be 'blender' (the reference) or 'raycast' (fast, labels only)")
    use_storage_block(store_url or "", storage_block)
    overrides = stages.check_harvest_overrides(
        harvest_overrides or {}, graph_rate_per_min=graph_rate_per_min, graph_burst=graph_burst,
        tiles_rate_per_min=tiles_rate_per_min, tiles_burst=tiles_burst,
    )

    # UnknownCityError lists the known names; a custom area keeps the city's frame, in its own dir
    city_cfg = load_city_or_area(city, registry=registry, polygon=polygon, bbox=bbox)
    area = [list(v) for v in city_cfg.boundary_lonlat] if polygon is not None or bbox is not None else None
    width_px = int(width or city_cfg.defaults.get("render_width", 1024))
    layout = BuildLayout.create(out_dir, city_cfg.name, store_url)
    tile_ids = _resolve_tiles(city_cfg, tiles)
    log.info("city %s: %d tile(s), width %d px, outputs in %s", city_cfg.name, len(tile_ids), width_px, layout.city_dir)

    # the city model builds while tiles are harvested
    t0 = time.perf_counter()
    model_future = city_model_task.submit(city, str(layout.city_model_dir), registry, area)
    harvest_task = harvest_tile_task.with_options(retries=network_retries)
    with stages.mapillary_endpoints(city_cfg, graph_url, tiles_url) as api:
        if api.replay:
            log.info("no graph_url/tiles_url: serving %s's replay content %s at %s", city, city_cfg.replay_content, api.graph_url)
        tile_futures = harvest_task.map(
            city=unmapped(city),
            tile_id=tile_ids,
            harvest_dir=unmapped(str(layout.harvest_dir)),
            graph_url=unmapped(api.graph_url),
            tiles_url=unmapped(api.tiles_url),
            incremental=unmapped(incremental),
            harvest_overrides=unmapped(overrides),
            registry=unmapped(registry),
            area_lonlat=unmapped(area),
            replay=unmapped(api.replay),
        )
        tile_reports = [f.result() for f in tile_futures]  # the first failed tile fails the flow, by name
    timings["harvest"] = time.perf_counter() - t0
    harvest = stages.collect_harvest(layout.harvest_dir, tile_reports, tile_ids)
    log.info(
        "harvest: %d tile(s) (%d done before), %d panoramas usable, %d new this run",
        len(tile_ids), harvest.tiles_skipped, harvest.n_usable, harvest.n_new,
    )
    if harvest.n_usable == 0:
        raise EmptyRegionError(
            f"no usable panoramas in city {city_cfg.name!r} (tiles {', '.join(tile_ids)}) at {api.tiles_url}: "
            f"Mapillary has no 360° coverage there ({harvest.describe_rows()}); pick other tiles or another city"
        )

    t0 = time.perf_counter()
    city_model_path = model_future.result()
    timings["city_model_wait"] = time.perf_counter() - t0

    poses, pose_failures = stages.poses_from_harvest(harvest.table_path, city_cfg, limit=limit, tiles=tile_ids)
    in_store = stages.ids_in_store(layout.store_url)
    todo = [p for p in poses if p.image_id not in in_store]
    log.info(
        "%d poses (%d harvested panoramas without a pose); %d already in the store, %d to render and write",
        len(poses), sum(pose_failures.values()), len(poses) - len(todo), len(todo),
    )
    specs = stages.sample_specs(todo, layout.harvest_dir, harvest.table_path)
    alignment = None
    if refine_poses and specs:
        t0 = time.perf_counter()
        align_batches = stages.alignment_batches(specs, max(batch_size, 16))
        n_align = max(1, min(TASK_WORKERS, len(align_batches)))
        align_futures = align_poses_task.map(
            city_model_path=unmapped(city_model_path),
            samples=[[s.to_dict() for s in b] for b in align_batches],
            align_dir=unmapped(str(layout.align_dir)),
            threads=unmapped(max(1, (os.cpu_count() or 1) // n_align)),
        )
        align_reports = [f.result() for f in align_futures]
        specs = [stages.SampleSpec.from_dict(d) for rep in align_reports for d in rep["samples"]]
        alignment = stages.alignment_summary([it for rep in align_reports for it in rep["items"]])
        timings["align"] = time.perf_counter() - t0
        log.info("pose refinement: %d images, %s", alignment["images"], alignment["status"])
    specs = stages.allocate_store_slots(layout.store_url, specs, city=city_cfg.name, width=width_px, owner=runners.flow_run_owner())
    batches = _batches([s.to_dict() for s in specs], batch_size)
    n_parallel = max(1, min(TASK_WORKERS, len(batches)))
    threads = max(1, (os.cpu_count() or 1) // n_parallel)  # Blender threads per concurrent batch

    t0 = time.perf_counter()
    batch_futures = render_and_write_task.map(
        city_model_path=unmapped(city_model_path),
        samples=batches,
        renders_dir=unmapped(str(layout.renders_dir(width_px))),
        store_url=unmapped(layout.store_url),
        city=unmapped(city_cfg.name),
        width=unmapped(width_px),
        threads=unmapped(threads),
        renderer=unmapped(renderer),
        storage_block=unmapped(storage_block),
    )
    batch_reports = []
    for fut in as_completed(list(batch_futures)):
        rep = fut.result()
        batch_reports.append(rep)
        done = sum(len(r["items"]) for r in batch_reports)
        log.info("render+write: %d / %d panoramas (%d batches of %d)", done, len(specs), len(batches), batch_size)
    timings["render_and_write"] = time.perf_counter() - t0
    stages.close_idle_render_workers()  # this process's Blender workers (thread runner): not needed past this run

    t0 = time.perf_counter()
    if not stages.ids_in_store(layout.store_url):
        raise RuntimeError(
            f"nothing was written to {layout.store_url}: all {len(poses)} renders failed "
            f"({stages.count_reasons(batch_reports)}); see the render-and-write task logs"
        )
    final = finalize_store_task(layout.store_url, list(splits), split_seed, full_verify)
    timings["index_and_verify"] = time.perf_counter() - t0
    for w in final.get("warnings", []):
        log.warning("%s", w)
    if not final["verified"]:
        raise RuntimeError(f"dataset {layout.store_url} failed verification: {final['problems']}")

    timings["total"] = time.perf_counter() - t_flow
    summary = stages.summarize(
        city=city_cfg.name,
        width=width_px,
        store_url=layout.store_url,
        tiles=tile_ids,
        harvest=harvest,
        pose_failures=pose_failures,
        n_poses=len(poses),
        n_in_store_before=len(poses) - len(todo),
        batch_reports=batch_reports,
        final=final,
        timings=timings,
        alignment=alignment,
    )
    summary["city_model"] = city_model_report(city_model_path)  # layer areas + road-share sanity check
    for w in summary["city_model"]["warnings"]:
        log.warning("%s", w)
    if train_after:
        summary["train_flow_run"] = _trigger_training(
            train_deployment, layout.store_url, train_config, final, dataset_url=train_dataset_url
        )
    _publish_report(summary, layout, preview_count, preview_base_url, out_dir, city_model_path)
    log.info("dataset %s: %d samples, verified", layout.store_url, final["samples"])
    return summary


def _publish_report(summary: dict[str, Any], layout: BuildLayout, preview_count: int, preview_base_url: str | None, out_dir: str,
                    city_model_path: str) -> None:
    log = get_run_logger()
    preview_path = None
    if preview_count > 0:
        pairs = stages.preview_pairs(summary["store_url"], preview_count)
        if pairs:
            preview_path = write_preview_png(pairs, layout.report_dir / "preview.png")
            summary["preview_png"] = str(preview_path)
    preview_url = None
    if preview_path is not None and preview_base_url:
        rel = preview_path.relative_to(Path(out_dir).resolve()).as_posix()
        preview_url = preview_base_url.rstrip("/") + "/" + rel
    if preview_count > 0:
        _alignment_figures(summary, layout, Path(city_model_path), preview_count)
    markdown = report_markdown(summary, preview_path=str(preview_path) if preview_path else None, preview_url=preview_url)
    md_path, json_path = write_report_files(summary, layout.report_dir, markdown)
    summary["report_md"], summary["report_json"] = str(md_path), str(json_path)
    key = f"build-dataset-{summary['city']}".lower().replace("_", "-")
    create_markdown_artifact(markdown, key=key, description=f"dataset build report for {summary['city']}")
    create_table_artifact(
        [{"stage": k, "count": v} for k, v in summary["counts"].items()],
        key=f"{key}-counts",
        description="per-stage counts",
    )
    if preview_url:
        create_image_artifact(image_url=preview_url, key=f"{key}-preview", description="DiffCol | normal | depth | photo")
    log.info("report: %s (preview %s)", md_path, preview_path)


def dataset_location_for_training(store_url: str, project_dir: Path) -> str:
    """The store as another worker (the GPU machine) can name it: a remote URL (``s3://…``)
    unchanged; a local store inside ``project_dir`` as a path relative to it, which the training
    worker resolves in its own checkout (``$S2R_PROJECT_DIR``); any other local path absolute
    (it must be the same path there: a shared file system)."""
    loc = location(store_url)
    if not loc.is_local:
        return store_url
    try:
        return Path(loc.root).relative_to(Path(project_dir).resolve()).as_posix()
    except ValueError:
        return loc.root


def _alignment_figures(summary: dict[str, Any], layout: BuildLayout, city_model_path: Path, count: int) -> None:
    """Score histogram and worst/best before|after overlays (PNG) beside the report."""
    from s2r_data.store.index import read_index

    index = read_index(location(summary["store_url"]))
    after = index.column("alignment_score").to_pylist()
    if not any(v is not None for v in after):
        return
    before = index.column("alignment_score_before").to_pylist()
    summary["alignment_histogram_png"] = str(write_score_histogram_png(before, after, layout.report_dir / "alignment_scores.png"))
    pairs = stages.alignment_report_pairs(summary["store_url"], city_model_path, max(1, count // 2))
    if pairs:
        summary["alignment_png"] = str(write_alignment_png(pairs, layout.report_dir / "alignment_pairs.png"))


def _trigger_training(
    deployment: str, store_url: str, train_config: str | None, final: dict[str, Any], *, dataset_url: str | None = None
) -> str:
    """Start the training deployment detached (returns at once); the idempotency key makes a
    retried build of the same dataset content start training only once."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    dataset = dataset_url or dataset_location_for_training(store_url, Path.cwd())
    if dataset_url is None and Path(dataset).is_absolute():
        get_run_logger().warning(
            "training gets the absolute store path %s (outside the project directory %s): the %s worker must see "
            "the store at that path, else pass train_dataset_url", dataset, Path.cwd(), deployment,
        )
    params: dict[str, Any] = {"dataset": dataset}
    if train_config:
        params["config"] = train_config
    key = f"train-{stages.DATASET_VERSION}-{final.get('fingerprint', final['samples'])}-{store_url}"
    try:
        run = run_deployment(deployment, parameters=params, timeout=0, as_subflow=False, idempotency_key=key)
    except ObjectNotFound:
        raise RuntimeError(
            f"the dataset is built, but the training deployment {deployment!r} does not exist on this Prefect server: "
            "deploy it (prefect --no-prompt deploy --all) or pass train_deployment=<flow>/<deployment>, or train_after=false"
        ) from None
    get_run_logger().info("training deployment %s: flow run %s (%s), dataset %s", deployment, run.name, run.id, dataset)
    return str(run.id)


if __name__ == "__main__":  # a quick local run: python -m flows.build_dataset sample
    import sys

    from .prefect_env import use_local_prefect

    use_local_prefect()
    print(json.dumps(build_dataset(city=sys.argv[1] if len(sys.argv) > 1 else "sample"), indent=2, default=str))
