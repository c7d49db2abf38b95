"""Harvest a city's Mapillary panoramas: coverage tiles → Graph metadata → 2048-px images.

Per z14 tile: fetch the coverage tile, keep ``is_pano`` points inside the city polygon, fetch
metadata in batches of ≤ 200 ids, download each image right after its metadata (signed URLs
expire and may be single-use; they are never stored, and every retry after a received body asks
Graph for a fresh one), validate it, journal its row at once (:mod:`.progress`), and when the tile
is done write its rows atomically to ``tiles/<z>_<x>_<y>.parquet``. :func:`harvest_city` does
every tile, then folds the parts into ``harvest.parquet``. Rerunning skips finished tiles without
a single request, and finished images of an interrupted tile without a request for them;
``incremental`` re-reads coverage and fetches only ids not yet in the table; ``retry_quarantined``
looks again at quarantined ids.

Statuses: ``harvested`` (image on disk with the recorded sha256), ``quarantined`` (not a usable
panorama, or the CDN keeps sending something that is not a decodable JPEG: the reason says which),
``no_pose``, ``missing`` (gone upstream) and ``failed`` (transient; retried by the next run). All
but ``failed`` are final, so their tile counts as complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import shapely
from shapely.geometry.base import BaseGeometry
from tqdm.auto import tqdm

from ..checksums import file_sha256
from ..cities import CityConfig
from ..tiles import parse_tile_id, tile_polygon_lonlat, tiles_for_polygon
from .client import (
    ImageContentError,
    ImageInvalidError,
    ImageStaleError,
    MapillaryClient,
    validate_jpeg,
)
from .config import GRAPH_FIELDS, HarvestConfig
from .coverage import CoveragePoint, decode_coverage_tile, select_panos
from .errors import MapillaryAuthError, MapillaryBlockedError, MapillaryError, MapillaryRequestError
from .progress import TileJournal, journal_path, read_journal
from .redact import Redactor
from .records import DONE_STATUSES, make_row, pano_problem, pose_problem
from .table import (
    HARVEST_TABLE,
    TILES_DIR,
    merge_harvest_tables,
    merge_rows,
    read_table,
    rows_to_table,
    table_rows,
    tile_part_path,
    tile_rows_on_disk,
    write_table,
)
from .tempfiles import harvest_session

__all__ = ["HarvestReport", "harvest_city", "harvest_tiles", "resolve_token", "tile_part_complete", "TOKEN_ENV", "IMAGES_DIR"]

log = logging.getLogger("s2r_data.mapillary")
TOKEN_ENV = "MAPILLARY_TOKEN"
IMAGES_DIR = "images"


@dataclass
class HarvestReport:
    city: str
    out_dir: Path
    tiles_total: int = 0
    tiles_skipped: int = 0  # finished earlier, not requested again
    tiles_harvested: int = 0
    tiles_failed: int = 0  # coverage tile unavailable after retries (rerun to retry)
    failed_tiles: list[str] = field(default_factory=list)
    tile_errors: dict[str, str] = field(default_factory=dict)  # failed tile → the cause (redacted)
    points_in_polygon: int = 0  # pano points of the processed tiles inside the polygon
    ids_processed: int = 0  # ids that needed work in this run
    status_counts: dict[str, int] = field(default_factory=dict)  # rows of the processed tiles
    images_downloaded: int = 0
    images_reused: int = 0  # already on disk and verified
    bytes_downloaded: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    elapsed_s: float = 0.0
    table_path: Path | None = None

    @property
    def n_usable(self) -> int:
        """Panoramas of these tiles with an image on disk (status ``harvested``)."""
        return int(self.status_counts.get("harvested", 0))

    def empty_region_message(self) -> str | None:
        """A sentence when every tile was read and none holds a usable panorama, else None."""
        if self.tiles_failed or self.n_usable:
            return None
        if not self.status_counts:
            return (
                f"no panoramas in this region: the {self.tiles_total} coverage tile(s) of {self.city} hold no 360° "
                "images inside its area (Mapillary has no panorama coverage there; pick another area)"
            )
        found = ", ".join(f"{v} {k}" for k, v in sorted(self.status_counts.items()))
        return f"no usable panoramas in this region: {found} (see the 'reason' column of the harvest table)"

    def summary(self) -> str:
        st = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "no rows"
        return (
            f"{self.city}: {self.tiles_total} tiles ({self.tiles_skipped} already done, {self.tiles_failed} failed), "
            f"{self.ids_processed} ids processed, {self.images_downloaded} images downloaded "
            f"({self.bytes_downloaded / 1e6:.1f} MB), {self.images_reused} reused; rows: {st}; "
            f"requests {dict(self.requests)}, {self.retries} retries, {self.elapsed_s:.1f} s"
        )


def resolve_token(token: str | None) -> str:
    """The token passed in, else ``$MAPILLARY_TOKEN``; a clear error if neither is set."""
    tok = token if token else os.environ.get(TOKEN_ENV, "")
    tok = tok.strip()
    if not tok:
        raise MapillaryAuthError(
            f"no Mapillary access token: pass token=... or set {TOKEN_ENV} (a client token 'MLY|…' from "
            "https://www.mapillary.com/dashboard/developers; flows load the 'mapillary-token' Prefect Secret)"
        )
    return tok


def _now_ms() -> int:
    return int(time.time() * 1000)


def _load_existing_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    table = out_dir / HARVEST_TABLE
    if table.is_file():
        rows = table_rows(read_table(table))
    rows = merge_rows(rows, tile_rows_on_disk(out_dir))
    return {r["image_id"]: r for r in rows}


def _row_is_done(row: Mapping[str, Any], out_dir: Path, retry_quarantined: bool = False) -> bool:
    """Terminal status, and for harvested rows the image exists with the recorded sha256.
    With ``retry_quarantined`` a quarantined row is not done (it is looked at again)."""
    if row["status"] not in DONE_STATUSES or (retry_quarantined and row["status"] == "quarantined"):
        return False
    if row["status"] != "harvested":
        return True
    p = out_dir / (row.get("image_path") or "")
    return bool(row.get("image_path")) and p.is_file() and file_sha256(p) == row.get("image_sha256")


def _area_covers(area_wkt: bytes | None, polygon_lonlat: BaseGeometry, tile: str) -> bool:
    """Did the harvest that completed a part cover ``polygon ∩ tile``? Parts written before the
    area was recorded were harvested for their city's polygon: taken as covering."""
    if area_wkt is None:
        return True
    done = shapely.from_wkt(area_wkt.decode())
    wanted = polygon_lonlat.intersection(tile_polygon_lonlat(parse_tile_id(tile)))
    return done.buffer(1e-9).covers(wanted)


def tile_part_complete(
    out_dir: str | Path, tile: str, *, polygon_lonlat: BaseGeometry | None = None, retry_quarantined: bool = False
) -> bool:
    """The output check of one tile: its part is marked complete, every row has a terminal
    status, and every harvested image is on disk with its recorded sha256. With a polygon, the
    completed harvest must also have covered the polygon's part of the tile (a part finished for
    a smaller custom area is not complete for the whole city)."""
    out_dir = Path(out_dir)
    part = tile_part_path(out_dir, tile)
    if not part.is_file():
        return False
    try:
        t = read_table(part)
    except ValueError:
        return False
    md = t.schema.metadata or {}
    if md.get(b"complete") != b"true":
        return False
    if polygon_lonlat is not None and not _area_covers(md.get(b"area_wkt"), polygon_lonlat, tile):
        return False
    return all(_row_is_done(r, out_dir, retry_quarantined) for r in table_rows(t))


class _TileHarvester:
    """State of one run (shared by all tile tasks of ``harvest_tiles``)."""

    def __init__(self, city: CityConfig, out_dir: Path, config: HarvestConfig, client: MapillaryClient, report: HarvestReport):
        self.city = city
        self.frame = city.frame
        self.polygon = city.polygon
        self.out_dir = out_dir
        self.images_dir = out_dir / IMAGES_DIR
        self.config = config
        self.client = client
        self.report = report
        self.existing = _load_existing_rows(out_dir)
        self.claimed: set[str] = set()  # ids taken by a tile of this run (dedupe across tiles)
        self.fields = GRAPH_FIELDS
        self.img_bar = tqdm(total=0, desc="images", unit="img", disable=not config.progress, leave=False)

    def _done(self, image_id: str) -> bool:
        r = self.existing.get(image_id)
        return r is not None and _row_is_done(r, self.out_dir, self.config.retry_quarantined)

    async def harvest_tile(self, tile: str) -> None:
        t = parse_tile_id(tile)
        part = tile_part_path(self.out_dir, tile)
        if not self.config.incremental and await asyncio.to_thread(
            tile_part_complete, self.out_dir, tile, polygon_lonlat=self.polygon, retry_quarantined=self.config.retry_quarantined
        ):
            self.report.tiles_skipped += 1
            return
        try:
            data = await self.client.fetch_tile(t)
        except MapillaryRequestError as e:  # retries exhausted: leave the tile for the next run
            self.report.tiles_failed += 1
            self.report.failed_tiles.append(tile)
            self.report.tile_errors[tile] = str(e)
            log.warning("%s", e)
            return
        points = select_panos(decode_coverage_tile(data, t), self.polygon)
        self.report.points_in_polygon += len(points)
        # verifying finished images hashes files: off the event loop
        done = await asyncio.to_thread(lambda: {p.image_id for p in points if self._done(p.image_id)})
        todo: list[CoveragePoint] = []
        for p in points:
            if p.image_id in self.claimed or p.image_id in done:
                continue
            self.claimed.add(p.image_id)
            todo.append(p)
        self.report.ids_processed += len(todo)
        self.img_bar.total += len(todo)
        self.img_bar.refresh()
        new_rows: list[dict[str, Any]] = []
        bs = self.config.batch_size
        with TileJournal(journal_path(part)) as journal:  # each finished image at once (kills keep it)
            for i in range(0, len(todo), bs):
                new_rows.extend(await self._harvest_batch(tile, todo[i : i + bs], journal))
        await asyncio.to_thread(self._write_part, part, new_rows)
        for r in new_rows:
            self.existing[r["image_id"]] = r
        self.report.tiles_harvested += 1

    def _write_part(self, part: Path, new_rows: list[dict[str, Any]]) -> None:
        """Fold the old part, the tile's journal (this run's rows and a killed run's) and the new
        rows into the part (atomic), then drop the journal."""
        jpath = journal_path(part)
        old_md: dict[bytes, bytes] = {}
        old_rows: list[dict[str, Any]] = []
        if part.is_file():
            t = read_table(part)
            old_md, old_rows = dict(t.schema.metadata or {}), table_rows(t)
        rows = merge_rows(merge_rows(old_rows, read_journal(jpath)), new_rows)
        complete = all(r["status"] != "failed" for r in rows)
        area = self.polygon
        if old_md.get(b"complete") == b"true" and old_md.get(b"area_wkt"):
            area = area.union(shapely.from_wkt(old_md[b"area_wkt"].decode()))
        meta = {
            "layer": self.config.layer,
            "image_size": self.config.image_size,
            "complete": "true" if complete else "false",
            "area_wkt": shapely.to_wkt(area, rounding_precision=9),
        }
        write_table(rows_to_table(rows, meta), part)
        jpath.unlink(missing_ok=True)

    async def _harvest_batch(self, tile: str, batch: Sequence[CoveragePoint], journal: TileJournal) -> list[dict[str, Any]]:
        ids = [p.image_id for p in batch]
        try:
            records = await self.client.fetch_images(ids, self.fields)
        except MapillaryRequestError as e:
            if e.reason != "not_found":
                return [self._row(p, tile, "failed", f"metadata: {e.reason}") for p in batch]
            records = {}  # the batch was rejected for an unknown id: ask one by one

        async def one(p: CoveragePoint) -> dict[str, Any]:
            row = await self._harvest_one(tile, p, records.get(p.image_id))
            journal.append(row)
            return row

        return list(await asyncio.gather(*(one(p) for p in batch)))

    def _row(self, p: CoveragePoint, tile: str, status: str, reason: str | None, record: Mapping[str, Any] | None = None, **kw) -> dict[str, Any]:
        self.img_bar.update(1)
        return make_row(
            image_id=p.image_id,
            tile=tile,
            status=status,
            reason=reason,
            harvested_at_ms=_now_ms(),
            record=record,
            fallback_lonlat=(p.lon_deg, p.lat_deg),
            **kw,
        )

    async def _harvest_one(self, tile: str, p: CoveragePoint, record: dict[str, Any] | None) -> dict[str, Any]:
        try:
            if record is None:  # left out of the batch answer: ask for it alone
                record = await self.client.fetch_image(p.image_id, self.fields)
                if record is None:
                    return self._row(p, tile, "missing", "not_found: Graph code 100 (image deleted or private)")
            problem = pano_problem(record)
            if problem:
                return self._row(p, tile, "quarantined", problem, record)
            confidence, pose_reason = pose_problem(record, self.frame)
            if pose_reason:
                return self._row(p, tile, "no_pose", pose_reason, record)
            return await self._fetch_image(tile, p, record, confidence)
        except (MapillaryAuthError, MapillaryBlockedError):
            raise
        except MapillaryRequestError as e:
            return self._row(p, tile, "failed", f"metadata: {e.reason}", record)

    async def _reuse_on_disk(self, dest: Path, image_id: str) -> tuple[str, tuple[int, int]] | None:
        """(sha256, (w, h)) of an image an earlier run left on disk, if it may be kept: it decodes
        as a 2:1 JPEG and, when the table recorded a checksum for it, has exactly that checksum
        (a different picture under the same name is never adopted). Else the file is removed."""
        sha = await asyncio.to_thread(file_sha256, dest)
        old = self.existing.get(image_id) or {}
        recorded = old.get("image_sha256") if old.get("status") == "harvested" else None
        if recorded and sha != recorded:
            log.warning(
                "image %s on disk has sha256 %s…, the harvest table recorded %s…: a different file; downloading it again",
                image_id, sha[:12], recorded[:12],
            )
            dest.unlink(missing_ok=True)
            return None
        try:
            wh = await asyncio.to_thread(validate_jpeg, dest, require_2to1=True)
        except ImageInvalidError:
            dest.unlink(missing_ok=True)
            return None
        return sha, wh

    async def _fetch_image(self, tile: str, p: CoveragePoint, record: dict[str, Any], confidence: str | None) -> dict[str, Any]:
        dest = self.images_dir / f"{p.image_id}.jpg"
        rel = f"{IMAGES_DIR}/{p.image_id}.jpg"
        kw = dict(pose_confidence=confidence, image_path=rel, image_size=self.config.image_size)
        if dest.is_file():  # downloaded by an interrupted run: reuse if it verifies
            kept = await self._reuse_on_disk(dest, p.image_id)
            if kept is not None:
                self.report.images_reused += 1
                return self._row(p, tile, "harvested", None, record, image_sha256=kept[0], image_wh=kept[1], **kw)
        field_name = self.config.thumb_field
        url = record.get(field_name)
        what = f"image {p.image_id}"
        refreshed_after_stale = False
        n_not_jpeg = n_corrupt = 0  # answers that were not a JPEG at all / cut or undecodable JPEGs
        while True:
            if not url:  # none in the answer, or the last one is spent: a fresh one from Graph
                fresh = await self.client.fetch_image(p.image_id, ("id", field_name))
                if fresh is None:
                    return self._row(p, tile, "missing", "not_found: Graph code 100 on URL refresh", record)
                url = fresh.get(field_name)
                if not url:
                    return self._row(p, tile, "missing", f"no {field_name} in the Graph answer", record)
            try:
                img = await self.client.download_image(url, dest, what=what)
            except ImageStaleError:
                if refreshed_after_stale:
                    return self._row(p, tile, "failed", "image_url_stale: CDN refused a freshly signed URL too", record)
                refreshed_after_stale, url = True, None  # signed URL expired: one fresh one from Graph
                continue
            except ImageContentError as e:  # 200 but an HTML page or the like: once more, then quarantine
                n_not_jpeg += 1
                if n_not_jpeg > 1:
                    return self._row(p, tile, "quarantined", e.reason, record)
                log.debug("%s; retry with a fresh URL", e)
                await self.client.backoff(n_not_jpeg - 1)
                url = None
                continue
            except ImageInvalidError as e:
                if e.reason.startswith("not_2to1"):
                    return self._row(p, tile, "quarantined", f"{e.reason}: {e}", record)
                n_corrupt += 1
                if n_corrupt > self.config.max_retries:
                    if e.reason == "image_transfer":  # the connection kept breaking: transient
                        return self._row(p, tile, "failed", f"image: {e.reason}", record)
                    return self._row(p, tile, "quarantined", f"{e.reason}: {e}", record)
                log.debug("%s; retry with a fresh URL", e)
                await self.client.backoff(n_corrupt - 1)
                url = None  # the URL may be single-use and is spent: never send it again
                continue
            except MapillaryRequestError as e:
                if e.reason == "not_found":
                    return self._row(p, tile, "missing", "image: CDN 404", record)
                return self._row(p, tile, "failed", f"image: {e.reason}", record)
            self.report.images_downloaded += 1
            return self._row(
                p, tile, "harvested", None, record, image_sha256=img.sha256, image_wh=(img.width, img.height), **kw
            )


def _unwrap(exc: BaseException) -> BaseException:
    """First MapillaryAuthError, else MapillaryBlockedError, else the first exception of a group."""
    if isinstance(exc, BaseExceptionGroup):
        flat: list[BaseException] = []

        def walk(e: BaseException) -> None:
            if isinstance(e, BaseExceptionGroup):
                for x in e.exceptions:
                    walk(x)
            else:
                flat.append(e)

        walk(exc)
        for kind in (MapillaryAuthError, MapillaryBlockedError, MapillaryError):
            for e in flat:
                if isinstance(e, kind):
                    return e
        return flat[0] if flat else exc
    return exc


async def _harvest_async(city: CityConfig, tiles: Sequence[str], out_dir: Path, config: HarvestConfig, token: str, report: HarvestReport) -> None:
    async with MapillaryClient(config, token) as client:
        h = _TileHarvester(city, out_dir, config, client, report)
        bar = tqdm(total=len(tiles), desc=f"tiles {city.name}", unit="tile", disable=not config.progress)

        async def one(tile: str) -> None:
            await h.harvest_tile(tile)
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as tg:
                for tile in tiles:
                    tg.create_task(one(tile))
        except BaseExceptionGroup as eg:
            raise _unwrap(eg) from None
        finally:
            bar.close()
            h.img_bar.close()
            report.requests = dict(client.stats.requests)
            report.retries = client.stats.retries
            report.rate_limited = client.stats.rate_limited
            report.bytes_downloaded = client.stats.bytes_downloaded


def _run_coroutine(coro) -> None:
    """asyncio.run, also from a thread that already runs an event loop (e.g. inside a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    th = threading.Thread(target=target, name="mapillary-harvest")
    th.start()
    th.join()
    if "e" in box:
        raise box["e"]


def _status_counts(out_dir: Path, tiles: Iterable[str]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for tile in tiles:
        part = tile_part_path(out_dir, tile)
        if part.is_file():
            col = read_table(part).column("status").cast(pa.string()).to_pylist()
            c.update(col)
    return dict(c)


def harvest_tiles(
    city: CityConfig,
    tile_ids: Sequence[str],
    out_dir: str | Path,
    config: HarvestConfig,
    token: str | None = None,
) -> HarvestReport:
    """Harvest the given z14 tiles (``"14/x/y"``) of ``city`` into ``out_dir``: images in
    ``images/<id>.jpg``, one table per tile in ``tiles/<z>_<x>_<y>.parquet``. Resumable and
    idempotent. Raises :class:`MapillaryAuthError` (bad token) or :class:`MapillaryBlockedError`
    (tiles host block) and stops at once; rows of finished tiles and finished images are kept.
    Coverage tiles that still fail after the retries are listed in ``report.tile_errors``."""
    out_dir = Path(out_dir)
    tiles = [str(t) for t in tile_ids]
    for t in tiles:
        tt = parse_tile_id(t)
        if tt.z != 14:
            raise ValueError(f"tile {t!r}: Mapillary coverage tiles carry image points only at zoom 14")
    tok = resolve_token(token)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    report = HarvestReport(city=city.name, out_dir=out_dir, tiles_total=len(tiles))
    redact_filter = Redactor(tok).logging_filter()
    log.addFilter(redact_filter)
    t0 = time.perf_counter()
    try:
        with harvest_session(out_dir):  # removes killed runs' temp files when no other run is active
            _run_coroutine(_harvest_async(city, tiles, out_dir, config, tok, report))
    finally:
        report.elapsed_s = time.perf_counter() - t0
        report.status_counts = _status_counts(out_dir, tiles)
        log.removeFilter(redact_filter)
    log.info("%s", report.summary())
    return report


def harvest_city(city: CityConfig, out_dir: str | Path, config: HarvestConfig, token: str | None = None) -> HarvestReport:
    """All z14 tiles of the city polygon, then ``harvest.parquet`` (merged, atomic)."""
    out_dir = Path(out_dir)
    tiles = tiles_for_polygon(city.polygon)
    try:
        report = harvest_tiles(city, tiles, out_dir, config, token)
    finally:
        if (out_dir / TILES_DIR).is_dir():
            merge_harvest_tables(out_dir, {"city": city.name})
    report.table_path = out_dir / HARVEST_TABLE
    return report
