"""The steps of ``build-dataset`` as plain functions (no Prefect): each composes ``s2r_data``
calls and checks its outputs first, so any step can be rerun and is testable on its own.

:mod:`flows.build_dataset` wraps these in tasks; nothing here imports prefect except
:func:`harvest_tile`, which reads the token via :mod:`flows.mapillary_token` (Secret block).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from s2r_data.cities import CityConfig, city_with_area, load_city
from s2r_data.mapillary import tile_part_complete, tile_part_path
from s2r_data.poses import Pose, PoseError, pose_from_mapillary

from .mapillary_token import load_mapillary_token

try:  # the dataset version enters cache keys and idempotency keys
    from s2r_data.store.schema import DATASET_VERSION
except ImportError:  # pragma: no cover - store package not installed yet
    DATASET_VERSION = "1"

__all__ = [
    "DATASET_VERSION",
    "PermanentHarvestError",
    "HarvestNetworkError",
    "HarvestOutcome",
    "SampleSpec",
    "check_harvest_overrides",
    "city_for_task",
    "MapillaryEndpoints",
    "mapillary_endpoints",
    "city_model",
    "tile_part_complete",
    "tile_part_stamp",
    "harvest_tile",
    "collect_harvest",
    "record_from_row",
    "harvested_rows",
    "poses_from_harvest",
    "sample_specs",
    "ALIGNMENT_VERSION",
    "alignment_batches",
    "align_batch",
    "alignment_summary",
    "load_photo_native",
    "pair_alignment_score",
    "render_path",
    "load_photo",
    "store_exists",
    "ids_in_store",
    "store_spec",
    "allocate_store_slots",
    "render_and_write_batch",
    "close_idle_render_workers",
    "finalize_store",
    "preview_pairs",
    "alignment_report_pairs",
    "summarize",
    "count_reasons",
]


log = logging.getLogger(__name__)


class PermanentHarvestError(RuntimeError):
    """A harvest failure that retrying cannot fix (bad token, blocked host, bad settings)."""


class HarvestNetworkError(RuntimeError):
    """The Mapillary API could not be reached or kept failing (retrying may help)."""


# ---------------------------------------------------------------------------------------------
# city model


def city_model(city: CityConfig, out_dir: Path) -> Path:
    """Build the city model from OSM, or reuse the cached one; returns ``city_model.npz``.

    Beside it: ``summary.json`` (counts, bbox, reference point) and a top-down ``preview.png``
    (redrawn whenever the model is newer than it).
    """
    from s2r_data.citymodel import CityModel
    from s2r_data.osm import build_or_load_city_model
    from s2r_data.preview import render_topdown_png

    path = Path(build_or_load_city_model(city, out_dir))
    preview = path.with_name("preview.png")
    if not preview.is_file() or preview.stat().st_mtime_ns < path.stat().st_mtime_ns:
        render_topdown_png(CityModel.load(path), preview)
    return path


# ---------------------------------------------------------------------------------------------
# harvest


def check_harvest_overrides(overrides: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """Validate extra HarvestConfig fields early (before any task runs); returns a plain dict.

    ``fields`` are HarvestConfig fields given as flow parameters (the rate limits); None means
    "not given". Setting one both ways with different values is an error."""
    from s2r_data.mapillary.config import HarvestConfig

    reserved = {"graph_url", "tiles_url", "incremental", "progress"}
    clash = sorted(reserved & set(overrides))
    if clash:
        raise ValueError(f"harvest_overrides may not set {clash}: they are flow parameters (graph_url, tiles_url, incremental)")
    merged = dict(overrides)
    for name, value in fields.items():
        if value is None:
            continue
        if name in merged and merged[name] != value:
            raise ValueError(f"{name} is given twice: {value!r} as a parameter, {merged[name]!r} in harvest_overrides")
        merged[name] = value
    HarvestConfig.from_dict(merged)  # unknown keys / bad values raise with the field name
    return merged


def city_for_task(city: str, registry: str | None = None, area_lonlat: Sequence[Sequence[float]] | None = None) -> CityConfig:
    """The flow's city inside a task: the registry entry, restricted to the custom area if any."""
    cfg = load_city(city, Path(registry) if registry else None)
    return city_with_area(cfg, area_lonlat) if area_lonlat else cfg


@dataclass(frozen=True)
class MapillaryEndpoints:
    graph_url: str
    tiles_url: str
    replay: bool  # a local replay server started for this run (its own token, not the user's)


@contextlib.contextmanager
def mapillary_endpoints(city: CityConfig, graph_url: str | None, tiles_url: str | None) -> Iterator[MapillaryEndpoints]:
    """Where to harvest from: the URLs given; else, for a city with embedded replay content
    (``replay:`` in the registry), a replay server on 127.0.0.1 (a free port) for the life of the
    block; else Mapillary's hosts. Tasks must run in this process to reach the replay server."""
    from s2r_data.mapillary.config import DEFAULT_GRAPH_URL, DEFAULT_TILES_URL
    from s2r_data.mapillary.replay import REPLAY_TOKEN, ReplayServer

    if graph_url is None and tiles_url is None and city.replay_content:
        with ReplayServer(city.replay_content, REPLAY_TOKEN, host="127.0.0.1", port=0) as srv:
            yield MapillaryEndpoints(srv.graph_url, srv.tiles_url, replay=True)
        return
    yield MapillaryEndpoints(graph_url or DEFAULT_GRAPH_URL, tiles_url or DEFAULT_TILES_URL, replay=False)


def tile_part_stamp(harvest_dir: Path, tile_id: str) -> str | None:
    """``size-mtime`` of the tile's complete part file, or None if the tile is not done."""
    if not tile_part_complete(harvest_dir, tile_id):
        return None
    st = tile_part_path(harvest_dir, tile_id).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def _status_counts_of_part(path: Path) -> dict[str, int]:
    from s2r_data.mapillary.table import read_table

    t = read_table(path)
    return dict(Counter(str(s) for s in t.column("status").to_pylist()))


def harvest_tile(
    city: CityConfig,
    tile_id: str,
    harvest_dir: Path,
    *,
    graph_url: str,
    tiles_url: str,
    incremental: bool,
    overrides: Mapping[str, Any],
    replay: bool = False,
) -> dict[str, Any]:
    """Harvest one z14 tile into ``harvest_dir/tiles/<z>_<x>_<y>.parquet`` (+ images).

    A finished part is the proof of work: without ``incremental`` the tile is skipped without
    touching the network (or the token). Errors are re-raised with the tile, the API base and
    the fix in the message; the token never appears. ``replay``: the endpoints are a replay
    server started by the flow, which takes its own local token.
    """
    from s2r_data.mapillary import harvest_tiles
    from s2r_data.mapillary.config import HarvestConfig
    from s2r_data.mapillary.errors import MapillaryAuthError, MapillaryBlockedError, MapillaryError
    from s2r_data.mapillary.replay import REPLAY_TOKEN

    part = tile_part_path(harvest_dir, tile_id)
    retry_quarantined = bool(overrides.get("retry_quarantined", False))
    if not incremental and tile_part_complete(
        harvest_dir, tile_id, polygon_lonlat=city.polygon, retry_quarantined=retry_quarantined
    ):
        return {"tile": tile_id, "skipped": True, "statuses": _status_counts_of_part(part), "new": 0}
    before = _status_counts_of_part(part) if part.is_file() else {}
    token = REPLAY_TOKEN if replay else load_mapillary_token()
    cfg = HarvestConfig(graph_url=graph_url, tiles_url=tiles_url, incremental=incremental, progress=False, **dict(overrides))
    try:
        report = harvest_tiles(city, [tile_id], harvest_dir, cfg, token)
    except MapillaryAuthError as e:
        raise PermanentHarvestError(
            f"Mapillary rejected the access token while harvesting tile {tile_id} from {graph_url}: {e}. "
            "Check $MAPILLARY_TOKEN or the Prefect Secret block 'mapillary-token' (a client token 'MLY|...')"
        ) from e
    except MapillaryBlockedError as e:  # the library's message carries the advice (one wait time)
        raise PermanentHarvestError(f"the coverage tile host {tiles_url} is blocking this machine (tile {tile_id}): {e}") from e
    except MapillaryError as e:
        raise HarvestNetworkError(f"harvest of tile {tile_id} failed talking to {graph_url} / {tiles_url}: {e}") from e
    except OSError as e:  # connection refused, DNS, ...
        raise HarvestNetworkError(f"cannot reach the Mapillary API at {graph_url} / {tiles_url} for tile {tile_id}: {e}") from e
    if tile_id in report.tile_errors:
        raise HarvestNetworkError(
            f"could not fetch coverage tile {tile_id} from {tiles_url} ({report.tile_errors[tile_id]}); "
            "is the Mapillary API reachable from this machine? Rerun to retry (finished tiles are kept)"
        )
    after = _status_counts_of_part(part) if part.is_file() else {}
    new = sum(after.values()) - sum(before.values())
    return {"tile": tile_id, "skipped": False, "statuses": after, "new": max(new, 0), "report": _plain(report)}


def _plain(obj: Any) -> Any:
    """A JSON-able view of a library report object (dataclass, mapping or other)."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


@dataclass(frozen=True)
class HarvestOutcome:
    table_path: Path
    images_dir: Path
    statuses: dict[str, int]
    reasons: dict[str, int]
    tiles_skipped: int
    n_new: int

    @property
    def n_usable(self) -> int:
        return int(self.statuses.get("harvested", 0))

    def describe_rows(self) -> str:
        if not self.statuses:
            return "no images in the coverage tiles"
        return ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))


def collect_harvest(harvest_dir: Path, tile_reports: Sequence[Mapping[str, Any]], tiles: Sequence[str]) -> HarvestOutcome:
    """Merge the tile parts into ``harvest.parquet`` and count the rows of ``tiles`` by status
    and reason (rows of other tiles, from earlier runs, are kept but not counted)."""
    from s2r_data.mapillary.table import merge_harvest_tables, read_table

    table_path = merge_harvest_tables(harvest_dir)
    t = read_table(table_path)
    wanted = set(tiles)
    rows = [(s, r) for s, r, tl in zip(t.column("status").to_pylist(), t.column("reason").to_pylist(), t.column("tile").to_pylist()) if tl in wanted]
    statuses = Counter(str(s) for s, _ in rows)
    reasons = Counter(f"{s}:{(r or '').split(':')[0] or '-'}" for s, r in rows if s != "harvested")
    return HarvestOutcome(
        table_path=Path(table_path),
        images_dir=Path(harvest_dir),
        statuses=dict(statuses),
        reasons=dict(reasons),
        tiles_skipped=sum(1 for r in tile_reports if r.get("skipped")),
        n_new=sum(int(r.get("new", 0)) for r in tile_reports),
    )


# ---------------------------------------------------------------------------------------------
# poses


def record_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A harvest-table row → the Graph-record fields :func:`pose_from_mapillary` reads."""
    rec: dict[str, Any] = {"id": str(row["image_id"])}
    if row.get("lon") is not None and row.get("lat") is not None:
        key = "computed_geometry" if row.get("position_source") == "computed" else "geometry"
        rec[key] = {"type": "Point", "coordinates": [float(row["lon"]), float(row["lat"])]}
    for k in ("computed_rotation", "computed_compass_angle", "compass_angle", "atomic_scale", "computed_altitude", "altitude"):
        if row.get(k) is not None:
            rec[k] = list(row[k]) if k == "computed_rotation" else row[k]
    return rec


def harvested_rows(table_path: Path, tiles: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Rows with status ``harvested`` (image on disk), by image id; only of ``tiles`` if given."""
    from s2r_data.mapillary.table import read_table, table_rows

    wanted = None if tiles is None else set(tiles)
    return {
        str(r["image_id"]): r
        for r in table_rows(read_table(table_path))
        if r["status"] == "harvested" and (wanted is None or r["tile"] in wanted)
    }


def poses_from_harvest(
    table_path: Path, city: CityConfig, *, limit: int | None = None, tiles: Sequence[str] | None = None
) -> tuple[list[Pose], dict[str, int]]:
    """Poses of the harvested panoramas (of ``tiles``, if given), sorted by image id, at most
    ``limit``; and the pose failures counted by reason."""
    mount_height_m = float(city.defaults.get("mount_height_m", 2.5))
    poses: list[Pose] = []
    failures: Counter[str] = Counter()
    for image_id, row in sorted(harvested_rows(table_path, tiles).items()):
        try:
            poses.append(pose_from_mapillary(record_from_row(row), city.frame, mount_height_m=mount_height_m))
        except PoseError as e:
            failures[f"pose:{e.reason}"] += 1
        if limit is not None and len(poses) >= limit:
            break
    return poses, dict(failures)


# ---------------------------------------------------------------------------------------------
# render + write (one task per batch: one Blender process, then its samples go into the store)


@dataclass(frozen=True)
class SampleSpec:
    """What a render batch needs per panorama (JSON-able through :meth:`to_dict`)."""

    pose: Pose  # the pose to render: the reported one, or the refined one after align_batch
    photo_path: str  # absolute path of the harvested JPEG
    tile: str | None = None
    captured_at_ms: int | None = None
    sequence_id: str | None = None
    zarr_index: int | None = None  # the slot the flow allocated before dispatching (allocate_store_slots)
    alignment: dict[str, Any] | None = None  # s2r_data.align.AlignOutcome.to_dict() when aligned

    def to_dict(self) -> dict[str, Any]:
        return {"pose": self.pose.to_dict(), "photo_path": self.photo_path, "tile": self.tile,
                "captured_at_ms": self.captured_at_ms, "sequence_id": self.sequence_id, "zarr_index": self.zarr_index,
                "alignment": self.alignment}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SampleSpec":
        return cls(Pose.from_dict(d["pose"]), d["photo_path"], d.get("tile"), d.get("captured_at_ms"), d.get("sequence_id"),
                   d.get("zarr_index"), d.get("alignment"))


def sample_specs(poses: Sequence[Pose], harvest_dir: Path, table_path: Path) -> list[SampleSpec]:
    rows = harvested_rows(table_path)
    out = []
    for p in poses:
        r = rows[p.image_id]
        out.append(SampleSpec(p, str((Path(harvest_dir) / r["image_path"]).resolve()), r.get("tile"), r.get("captured_at"), r.get("sequence_id")))
    return out


# ---------------------------------------------------------------------------------------------
# pose alignment (s2r_data.align): refine the reported poses against the city model before rendering

ALIGNMENT_VERSION = "3"  # bump when a change alters refined poses (invalidates the per-image cache)


def alignment_batches(specs: Sequence[SampleSpec], max_images: int) -> list[list[SampleSpec]]:
    """Whole sequences per batch (the sequence prior needs them together), about ``max_images``
    images each; images without a sequence go alone."""
    groups: dict[str, list[SampleSpec]] = {}
    for s in specs:
        groups.setdefault(s.sequence_id or f"\0{s.pose.image_id}", []).append(s)
    batches: list[list[SampleSpec]] = []
    cur: list[SampleSpec] = []
    for key in sorted(groups):
        if cur and len(cur) + len(groups[key]) > max_images:
            batches.append(cur)
            cur = []
        cur.extend(groups[key])
    if cur:
        batches.append(cur)
    return batches


def _alignment_key(model_key: str, pose: Pose) -> str:
    return hashlib.sha1(json.dumps([ALIGNMENT_VERSION, model_key, pose.to_dict()], sort_keys=True).encode()).hexdigest()[:16]


def load_photo_native(path: str | Path) -> np.ndarray:
    """The harvested panorama at its own width (2:1), (H, W, 3) uint8, for alignment."""
    from PIL import Image

    with Image.open(path) as im:
        return _native_photo_array(im.convert("RGB"))


def align_batch(city_model_path: Path, samples: Sequence[Mapping[str, Any]], align_dir: Path, *, threads: int = 0) -> dict[str, Any]:
    """Refine the poses of a batch of whole sequences (s2r_data.align) and decide per image whether
    the refined pose is adopted (never worse by the alignment score). Results are cached per image
    in ``align_dir/<image_id>.json`` (keyed by the city model, the reported pose and
    :data:`ALIGNMENT_VERSION`): a rerun redoes nothing. Returns the specs with the adopted poses."""
    from s2r_data.align import AlignConfig, AlignInput, AlignOutcome, align_images, extract_model_edges
    from s2r_data.atomic import atomic_write_text
    from s2r_data.checksums import file_sha256
    from s2r_data.citymodel import CityModel
    from s2r_data.render.raycast import RaycastScene

    specs = [SampleSpec.from_dict(s) for s in samples]
    t0 = time.perf_counter()
    model = CityModel.load(city_model_path)
    model_key = str(model.meta.get("cache_key") or file_sha256(Path(city_model_path)))
    outcomes: dict[str, AlignOutcome] = {}
    keys = {}
    todo = []
    for s in specs:
        keys[s.pose.image_id] = key = _alignment_key(model_key, s.pose)
        path = Path(align_dir) / f"{s.pose.image_id}.json"
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
                if doc.get("key") == key:
                    outcomes[s.pose.image_id] = AlignOutcome.from_dict(doc["outcome"])
                    continue
            except (ValueError, KeyError, TypeError):
                pass  # unreadable cache entry: align again
        todo.append(s)
    if todo:
        edges = extract_model_edges(model)

        def save(o: AlignOutcome) -> None:
            outcomes[o.image_id] = o
            doc = {"key": keys[o.image_id], "outcome": o.to_dict()}
            atomic_write_text(Path(align_dir) / f"{o.image_id}.json", json.dumps(doc, default=float))

        items = [AlignInput(s.pose.image_id, s.pose, (lambda p=s.photo_path: load_photo_native(p)), s.sequence_id, s.captured_at_ms)
                 for s in todo]
        with RaycastScene(model, threads=threads) as scene:
            align_images(items, edges, scene, AlignConfig(), progress=save)
    out_specs = []
    items_out = []
    for s in specs:
        o = outcomes[s.pose.image_id]
        out_specs.append(dataclasses.replace(s, pose=o.pose, alignment=o.to_dict()))
        items_out.append({"image_id": o.image_id, "status": o.status, "flags": list(o.flags),
                          "score_before": o.score_before.score if o.score_before else None,
                          "score_after": o.score_after.score if o.score_after else None, "time_s": o.time_s})
    return {"samples": [s.to_dict() for s in out_specs], "items": items_out, "aligned_now": len(todo),
            "align_s": time.perf_counter() - t0}


def alignment_summary(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and flag, and score quantiles before/after (for the build report)."""
    from s2r_data.align.index_summary import score_quantiles

    status = Counter(str(it["status"]) for it in items)
    flags = Counter(f for it in items for f in it.get("flags", []))
    return {"images": len(items), "status": dict(status), "flags": dict(flags),
            "score_before": score_quantiles(it.get("score_before") for it in items),
            "score_after": score_quantiles(it.get("score_after") for it in items),
            "s_per_image": round(float(np.mean([it.get("time_s", 0.0) for it in items])), 2) if items else 0.0}


def render_path(renders_dir: Path, image_id: str) -> Path:
    return Path(renders_dir) / f"{image_id}.npz"


def load_photo(path: str | Path, width: int) -> np.ndarray:
    """The harvested equirectangular JPEG resized to ``width × width/2``: uint8 (3, H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        return _photo_array(im.convert("RGB"), width)


def load_photo_and_native(path: str | Path, width: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_photo` and :func:`load_photo_native` of one file, decoded once."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return _photo_array(rgb, width), _native_photo_array(rgb)


def _native_photo_array(rgb: Any) -> np.ndarray:
    """A decoded RGB PIL image at its own width (made even; height = width/2): uint8 (H, W, 3)."""
    return _photo_array(rgb, rgb.width - rgb.width % 2).transpose(1, 2, 0)


def _photo_array(rgb: Any, width: int) -> np.ndarray:
    """A decoded RGB PIL image resized (Lanczos) to ``width × width/2`` unless it is that size: uint8 (3, H, W)."""
    from PIL import Image

    if rgb.size != (width, width // 2):
        rgb = rgb.resize((width, width // 2), Image.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def store_exists(store_url: str) -> bool:
    from s2r_data.store.urls import ZARR_DIR, location

    return location(store_url).exists(f"{ZARR_DIR}/zarr.json")


def ids_in_store(store_url: str) -> set[str]:
    """Image ids committed to the store (empty if it does not exist yet)."""
    from s2r_data.store.index import read_index
    from s2r_data.store.urls import location

    if not store_exists(store_url):
        return set()
    return {str(x) for x in read_index(location(store_url)).column("image_id").to_pylist()}


def store_spec(city: str, width: int):
    """The store's settings as the flow's writers create it (:class:`s2r_data.store.StoreSpec`)."""
    from s2r_data.store import StoreSpec

    return StoreSpec(width // 2, width, city)


def allocate_store_slots(store_url: str, specs: Sequence[SampleSpec], *, city: str, width: int, owner: str) -> list[SampleSpec]:
    """The coordinator's step before dispatching writers: create the store if needed, allocate
    the slots of these samples in the store's slot manifest (one segment, in the specs' order:
    deterministic, and consistent with any other flow run doing the same at once) and size the
    arrays for them. Returns the specs with their ``zarr_index``."""
    from s2r_data.store.writer import allocate_slots

    if not specs:
        return []
    slots = allocate_slots(store_url, [s.pose.image_id for s in specs], spec=store_spec(city, width), owner=owner)
    return [dataclasses.replace(s, zarr_index=slots[s.pose.image_id]) for s in specs]


def pair_alignment_score(photo: np.ndarray, passes: Any, pose: Pose) -> float | None:
    """The alignment score (s2r_data.align.score, [0, 1]) of a pair: the photo at its own resolution
    (edges at the score's 1024-px working width, as the align stage scores), the render's passes at
    the dataset's; None if unusable. Renders narrower than 1024 px locate their edges more coarsely."""
    from s2r_data.align import ScoreConfig, score_pair

    a = np.asarray(photo)
    photo_width = a.shape[1] if a.shape[-1] == 3 else a.shape[-1]  # (H, W, 3) or (3, H, W)
    try:
        cfg = ScoreConfig(width_px=min(ScoreConfig().width_px, int(photo_width)))
        sc = score_pair(a, passes.label, passes.depth_m, passes.normal, pose.R_world_to_cam_opensfm, cfg)
    except Exception as e:  # noqa: BLE001 - a score must never sink the sample
        log.warning("alignment score of %s failed: %s", pose.image_id, e)
        return None
    return float(sc.score) if sc.usable else None


def render_and_write_batch(
    city_model_path: Path,
    samples: Sequence[Mapping[str, Any]],
    renders_dir: Path,
    store_url: str,
    *,
    city: str,
    width: int,
    threads: int,
    backend: str = "blender",
    owner: str | None = None,
) -> dict[str, Any]:
    """Render a batch with ``backend`` through this process's render handle for the city model
    (the model and its Blender worker or ray-cast BVH stay loaded for the next batch:
    :mod:`s2r_data.render.handles`; render files with a matching content key are reused), then
    commit each rendered sample to the store into the slot the flow allocated (ids already there
    are left alone). ``owner``: who holds the write leases (the flow run). Returns per-image outcomes."""
    from s2r_data.render import RenderSettings, load_sim_passes
    from s2r_data.render.handles import render_handle
    from s2r_data.store.writer import DatasetWriter, SampleBusyError

    specs = [SampleSpec.from_dict(s) for s in samples]
    settings = RenderSettings(width=width, threads=threads, backend=backend)
    t0 = time.perf_counter()
    with render_handle(city_model_path, settings) as handle:
        results = handle.render([s.pose for s in specs], renders_dir)
    render_s = time.perf_counter() - t0
    items: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with DatasetWriter(store_url, height=settings.height, width=width, city=city, owner=owner) as writer:
        for spec, r in zip(specs, results):
            item = {"image_id": r.image_id, "render": r.status, "reason": r.reason, "store": "not_written"}
            if r.status in ("ok", "skipped_existing") and r.path is not None:
                if writer.has(r.image_id):
                    item["store"] = "already_in_store"
                else:
                    try:
                        passes = load_sim_passes(r.path)
                        if spec.alignment is None:  # scored below on the photo at its own width
                            real, native = load_photo_and_native(spec.photo_path, width)
                        else:
                            real = load_photo(spec.photo_path, width)
                        row = {
                            "pose": spec.pose,
                            "tile": spec.tile,
                            "captured_at": spec.captured_at_ms,
                            "sequence_id": spec.sequence_id,
                            "harvest_status": "harvested",
                            "render_status": r.status,
                            "outside_bounds": bool(r.flags.get("outside_bounds", False)),
                            "inside_building": bool(r.flags.get("inside_building", False)),
                            "render_time_s": passes.meta.get("render_time_s", r.render_time_s),
                        }
                        if spec.alignment is not None:  # scored by the align stage, at this very pose
                            from s2r_data.align import AlignOutcome

                            outcome = AlignOutcome.from_dict(spec.alignment)
                            row.update(outcome.index_columns())
                            after = outcome.score_after
                            row["alignment_score"] = float(after.score) if after is not None and after.usable else None
                        else:
                            row["alignment_score"] = pair_alignment_score(native, passes, spec.pose)
                        writer.write_sample(
                            r.image_id, passes.sim7(), passes.label, real, passes.sky_mask,
                            np.ones_like(passes.sky_mask), row, exist_ok=True, slot=spec.zarr_index,
                        )
                        item["store"] = "written"
                    except SampleBusyError as e:  # another flow run is committing it right now
                        item["store"] = "busy_elsewhere"
                        item["reason"] = str(e)
                    except Exception as e:  # noqa: BLE001 - one bad sample must not sink the batch
                        item["store"] = "failed"
                        item["reason"] = f"{type(e).__name__}: {e}"
            items.append(item)
    return {"items": items, "render_s": render_s, "write_s": time.perf_counter() - t0}


def close_idle_render_workers() -> int:
    """Stop the idle render handles (live Blender workers) of this process; returns how many. Dask
    workers keep theirs for the next batches and runs, and stop them when they exit."""
    from s2r_data.render.handles import close_all

    return close_all()


# ---------------------------------------------------------------------------------------------
# index, splits, verify, preview, summary


def finalize_store(store_url: str, *, splits: Sequence[float | int], seed: int, full_verify: bool = False) -> dict[str, Any]:
    """Compact the index, assign train/val/vis splits by sequence, verify the store.

    The store and the index are always checked; the samples' content only with ``full_verify``:
    the writer verified each new sample when it wrote it, so a rerun reads no old sample."""
    import dataclasses

    from s2r_data.store import compact, verify
    from s2r_data.store.index import read_index
    from s2r_data.store.urls import location
    from s2r_train.splits import SplitSpec, assign_splits, split_groups

    compact(store_url)
    spec = SplitSpec.from_list(list(splits))
    # a small dataset may have fewer val samples than requested visualisation samples: use all
    index = read_index(location(store_url))
    val_split, _ = split_groups(index.column("image_id").to_pylist(), index.column("sequence_id").to_pylist(),
                                dataclasses.replace(spec, vis=0), seed)
    n_val = val_split.count("val")
    warnings = []
    if spec.vis > n_val:
        warnings.append(f"only {n_val} val samples: {n_val} visualisation samples instead of {spec.vis}")
        spec = dataclasses.replace(spec, vis=n_val)
    split_counts = assign_splits(store_url, spec, seed=seed)
    report = verify(store_url, samples=None if full_verify else ())
    ids = sorted(ids_in_store(store_url))
    return {
        "fingerprint": hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16],
        "verified": bool(report.ok),
        "problems": [str(p) for p in report.problems][:20],
        "warnings": (warnings + list(report.warnings))[:20],
        "samples": int(report.n_samples),
        "verify": "full" if full_verify else "store and index (samples verified when written)",
        "samples_content_checked": int(report.n_checked),
        "splits": dict(split_counts),
    }


def preview_pairs(store_url: str, count: int) -> list[Any]:
    """The first ``count`` samples of the store as :class:`flows.report.PreviewPair`."""
    from s2r_data.store.reader import open_dataset

    from .report import PreviewPair

    ds = open_dataset(store_url)
    n = min(count, len(ds))
    return [PreviewPair(ds.image_ids[i], ds.read(i, "sim"), ds.read(i, "real")) for i in range(n)]


def alignment_report_pairs(store_url: str, city_model_path: Path, count: int, *, width: int = 1024) -> list[Any]:
    """The ``count`` worst and ``count`` best scored pairs of the store as
    :class:`flows.report.AlignmentPair`: the photo with the model's edges at the reported pose
    (before) and at the stored pose (after), both ray-cast at ``width``."""
    from s2r_data.align.dataset import row_pose, row_reported_pose
    from s2r_data.align.overlay import edge_overlay
    from s2r_data.citymodel import CityModel
    from s2r_data.render.raycast import RaycastScene
    from s2r_data.store.reader import open_dataset

    from .report import AlignmentPair

    ds = open_dataset(store_url)
    rows = ds.index.to_pylist()
    scored = sorted((r["alignment_score"], i) for i, r in enumerate(rows) if r.get("alignment_score") is not None)
    if not scored or count < 1:
        return []
    picks = [("worst", i) for _, i in scored[:count]] + [("best", i) for _, i in scored[::-1][:count]]
    seen: set[int] = set()
    out = []
    with RaycastScene(CityModel.load(city_model_path)) as scene:
        for which, i in picks:
            if i in seen:
                continue
            seen.add(i)
            row = rows[i]
            before_pose, after_pose = row_reported_pose(row), row_pose(row)
            real = ds.read(i, "real")
            panels = []
            for pose in (before_pose, after_pose):
                p = scene.render(pose, width)
                panels.append(edge_overlay(real, p.label, p.depth_m, p.normal, width_px=width))
            out.append(AlignmentPair(str(row["image_id"]), which, row.get("alignment_score_before"), row.get("alignment_score"),
                                     str(row.get("alignment_status") or "not_aligned"), panels[0], panels[1]))
    return out


def summarize(
    *,
    city: str,
    width: int,
    store_url: str,
    tiles: Sequence[str],
    harvest: HarvestOutcome,
    pose_failures: Mapping[str, int],
    n_poses: int,
    n_in_store_before: int,
    batch_reports: Sequence[Mapping[str, Any]],
    final: Mapping[str, Any],
    timings: Mapping[str, float],
    alignment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable build summary (``report.json``, the flow's return value)."""
    items = [it for b in batch_reports for it in b["items"]]
    render = Counter(it["render"] for it in items)
    store = Counter(it["store"] for it in items)
    failures: Counter[str] = Counter()
    failures.update({k: v for k, v in harvest.reasons.items()})
    failures.update(dict(pose_failures))
    for it in items:
        if it["render"] in ("failed", "skipped_flagged"):
            failures[f"render:{(it['reason'] or '-').split(':')[0]}"] += 1
        if it["store"] == "failed":
            failures[f"store:{(it['reason'] or '-').split(':')[0]}"] += 1
    from s2r_data.store.urls import location

    return {
        "city": city,
        "width": width,
        "height": width // 2,
        "store_url": store_url,
        "index_path": location(store_url).path("index.parquet"),
        "harvest_table": str(harvest.table_path),
        "tiles": list(tiles),
        "samples_in_store": int(final["samples"]),
        "verified": bool(final["verified"]),
        "verify_scope": final.get("verify"),
        "splits": dict(final.get("splits", {})),
        "warnings": list(final.get("warnings", [])),
        "dataset_fingerprint": final.get("fingerprint"),
        "counts": {
            "tiles": len(tiles),
            "tiles_already_done": harvest.tiles_skipped,
            "panoramas_harvested": harvest.n_usable,
            "panoramas_new_this_run": harvest.n_new,
            "poses": n_poses,
            "already_in_store": n_in_store_before,
            "rendered_now": render.get("ok", 0),
            "render_reused": render.get("skipped_existing", 0),
            "written_now": store.get("written", 0),
            "samples_in_store": int(final["samples"]),
        },
        "failures": dict(sorted(failures.items())),
        "timings_s": {k: round(float(v), 2) for k, v in timings.items()},
        "render_s_per_batch": [round(float(b.get("render_s", 0.0)), 2) for b in batch_reports],
        "write_s_per_batch": [round(float(b.get("write_s", 0.0)), 2) for b in batch_reports],
        "alignment": dict(alignment) if alignment is not None else None,
    }


def count_reasons(batch_reports: Sequence[Mapping[str, Any]]) -> str:
    c = Counter(f"{it['render']}/{it['store']}: {(it.get('reason') or '-')[:80]}" for b in batch_reports for it in b["items"])
    return "; ".join(f"{n}× {k}" for k, n in c.most_common(5)) or "no batches ran"
