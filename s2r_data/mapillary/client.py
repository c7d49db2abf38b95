"""Async HTTP client for the three Mapillary endpoints: coverage tiles, Graph, thumbnail CDN.

Every request goes through one retry loop: a token bucket per endpoint (sent at most at the
configured rate), bounded concurrency, exponential back-off with jitter for timeouts, 5xx, 429,
Graph code 4 and malformed bodies. Code 190 / HTTP 401 raises :class:`MapillaryAuthError`
(the caller stops the whole run); a tile redirect or HTML page raises
:class:`MapillaryBlockedError`. The token goes in the ``Authorization: OAuth`` header for Graph
and in ``access_token`` only for tiles; no message, exception or log line carries it (nor a signed
thumbnail URL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import aiohttp
import mercantile
from PIL import Image

from ..atomic import atomic_path
from .config import HarvestConfig
from .errors import (
    MapillaryAuthError,
    MapillaryBlockedError,
    MapillaryRequestError,
    Outcome,
    classify_graph_response,
    classify_image_response,
    classify_tile_response,
    image_body_problem,
    tiles_block_advice,
)
from .ratelimit import TokenBucket
from .redact import Redactor

__all__ = [
    "MapillaryClient",
    "ClientStats",
    "DownloadedImage",
    "ImageContentError",
    "ImageInvalidError",
    "ImageStaleError",
    "validate_jpeg",
]

log = logging.getLogger("s2r_data.mapillary")

_USER_AGENT = "s2r-harvester/0.1 (+https://github.com/; Mapillary API v4)"


class ImageInvalidError(MapillaryRequestError):
    """The downloaded bytes are not a complete, decodable JPEG (or not 2:1 when required)."""


class ImageContentError(ImageInvalidError):
    """The CDN answered 200 with something that is not a JPEG at all (an HTML page, JSON, empty)."""


class ImageStaleError(MapillaryRequestError):
    """The CDN refused the signed URL (403/410): it expired; fetch fresh metadata."""


@dataclass(frozen=True)
class DownloadedImage:
    path: Path
    sha256: str
    width: int
    height: int
    n_bytes: int


@dataclass
class ClientStats:
    requests: dict[str, int] = field(default_factory=lambda: {"tile": 0, "graph": 0, "image": 0})
    retries: int = 0
    bytes_downloaded: int = 0
    rate_limited: int = 0  # 429 / code 4 answers seen


def validate_jpeg(path: Path, *, require_2to1: bool) -> tuple[int, int]:
    """Decode the whole JPEG (at 1/8 scale: every entropy-coded byte is still read) and return
    (width, height). Raises :class:`ImageInvalidError` with the reason."""
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                raise ImageInvalidError(f"{path.name}: not a JPEG ({im.format})", reason="image_not_jpeg")
            w, h = im.size
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except ImageInvalidError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ...
        raise ImageInvalidError(f"{path.name}: undecodable JPEG ({type(e).__name__}: {e})", reason="image_undecodable") from None
    if require_2to1 and w != 2 * h:
        raise ImageInvalidError(f"{path.name}: {w}x{h} is not 2:1", reason=f"not_2to1: image {w}x{h}")
    return w, h


class MapillaryClient:
    """Use as ``async with MapillaryClient(config, token) as client: ...``."""

    def __init__(self, config: HarvestConfig, token: str, *, rng: random.Random | None = None):
        if not token:
            raise MapillaryAuthError("empty Mapillary token; pass token= or set MAPILLARY_TOKEN")
        self.config = config
        self._token = token
        self.redact = Redactor(token)
        self._rng = rng or random.Random(config.seed)
        self.stats = ClientStats()
        self._graph_bucket = TokenBucket(config.graph_rate_per_min / 60.0, config.graph_burst)
        self._tile_bucket = TokenBucket(
            config.tiles_rate_per_min / 60.0, config.tiles_burst, jitter=config.tiles_jitter, rng=random.Random(self._rng.random())
        )
        self._image_bucket = (
            TokenBucket(config.image_rate_per_min / 60.0, config.image_burst) if config.image_rate_per_min else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self._tile_sem: asyncio.Semaphore | None = None

    def __repr__(self) -> str:  # never show the token
        return f"MapillaryClient(graph_url={self.config.graph_url!r}, tiles_url={self.config.tiles_url!r})"

    async def __aenter__(self) -> "MapillaryClient":
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.config.max_concurrency + 2),
            headers={"User-Agent": _USER_AGENT},
            raise_for_status=False,
        )
        self._sem = asyncio.Semaphore(self.config.max_concurrency)
        self._tile_sem = asyncio.Semaphore(max(1, min(2, self.config.max_concurrency)))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- retry plumbing ------------------------------------------------------------------
    async def backoff(self, attempt: int) -> None:
        """Sleep the jittered back-off of retry ``attempt`` (0-based) and count the retry."""
        self.stats.retries += 1
        await asyncio.sleep(self._backoff_s(attempt))

    def _backoff_s(self, attempt: int, retry_after: str | None = None) -> float:
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**attempt))
        delay = cap / 2 + self._rng.uniform(0, cap / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.config.backoff_max_s))
            except ValueError:
                pass
        return delay

    async def _get(
        self,
        kind: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        bucket: TokenBucket | None,
        sem: asyncio.Semaphore,
        allow_redirects: bool,
    ) -> tuple[int, str, bytes, Mapping[str, str]] | str:
        """One GET: (status, content type, body, headers), or a redacted description of the
        network error (timeouts, refused connections, resets)."""
        assert self._session is not None, "use `async with MapillaryClient(...)`"
        async with sem:
            if bucket is not None:
                await bucket.acquire()
            self.stats.requests[kind] += 1
            try:
                async with self._session.get(url, headers=headers, allow_redirects=allow_redirects) as resp:
                    body = await resp.read()
                    return resp.status, resp.headers.get("Content-Type", ""), body, resp.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                detail = "" if isinstance(e, aiohttp.ClientResponseError) else f": {e}"  # the former quotes the URL
                return self.redact(f"{type(e).__name__}{detail}")

    async def _api_call(self, kind: str, url: str, *, what: str, headers, bucket, sem, allow_redirects: bool, classify) -> Any:
        """GET + classify + retry; returns parsed JSON (Graph) or raw bytes (tiles)."""
        last_reason, last_status, last_answer = "unknown", None, "no answer"
        for attempt in range(self.config.max_retries + 1):
            got = await self._get(kind, url, headers=headers, bucket=bucket, sem=sem, allow_redirects=allow_redirects)
            if isinstance(got, str):  # network error: retry like a 5xx
                last_reason, last_status, last_answer = "network", None, got
                if attempt < self.config.max_retries:
                    self.stats.retries += 1
                    log.debug("%s: %s; retry %d", what, got, attempt + 1)
                    await asyncio.sleep(self._backoff_s(attempt))
                continue
            status, ctype, body, rh = got
            outcome, err = classify(status, ctype, body)
            msg = f"{what}: HTTP {status}" + (f", code {err.code}: {err.message}" if err else "")
            last_answer = f"HTTP {status}" + (
                f", code {err.code}: {err.message[:120]}" if err else f" ({ctype or 'no content type'})"
            )
            if outcome is Outcome.AUTH:
                raise MapillaryAuthError(
                    self.redact(
                        f"{msg}. Mapillary rejected the access token (code 190 / HTTP 401): the whole run stops. "
                        "Get a client token from https://www.mapillary.com/dashboard/developers and pass it as "
                        "token= or MAPILLARY_TOKEN (Prefect: the 'mapillary-token' Secret block), then rerun; "
                        "finished work is kept."
                    )
                )
            if outcome is Outcome.BLOCKED:
                raise MapillaryBlockedError(
                    self.redact(
                        f"{what}: tiles host answered HTTP {status} ({ctype or 'no content type'}) instead of a vector "
                        f"tile: this IP is blocked by tiles.mapillary.com's undocumented throttle. {tiles_block_advice()}"
                    )
                )
            if outcome is Outcome.OK:
                if kind == "tile":
                    return body
                try:
                    doc = json.loads(body)
                    if not isinstance(doc, dict):
                        raise ValueError("top level is not an object")
                    return doc
                except (ValueError, UnicodeDecodeError) as e:
                    last_reason, last_status = "malformed_json", status
                    msg = f"{what}: malformed JSON ({type(e).__name__})"
                    last_answer = f"HTTP {status} with malformed JSON"
            elif outcome is Outcome.NOT_FOUND:
                raise MapillaryRequestError(self.redact(msg), reason="not_found", status=status)
            elif outcome is Outcome.PERMANENT:
                detail = f": code {err.code}: {err.message[:120]}" if err else ""
                raise MapillaryRequestError(self.redact(msg), reason=self.redact(f"http_{status}{detail}"), status=status)
            else:  # RETRY
                if status == 429 or (err is not None and err.code == 4):
                    self.stats.rate_limited += 1
                last_reason, last_status = (f"code_{err.code}" if err and err.code else f"http_{status}"), status
            if attempt < self.config.max_retries:
                self.stats.retries += 1
                log.debug("%s; retry %d", self.redact(msg), attempt + 1)
                await asyncio.sleep(self._backoff_s(attempt, rh.get("Retry-After") if outcome is Outcome.RETRY else None))
        raise MapillaryRequestError(
            self.redact(f"{what}: gave up after {self.config.max_retries + 1} attempts; last answer: {last_answer}"),
            reason=f"{last_reason} after {self.config.max_retries + 1} attempts",
            status=last_status,
        )

    # ---- endpoints ---------------------------------------------------------------------------
    async def fetch_tile(self, tile: mercantile.Tile) -> bytes:
        """Raw MVT bytes of one coverage tile (redirects off: a redirect means a block)."""
        url = f"{self.config.tiles_url}/maps/vtp/{self.config.layer}/2/{tile.z}/{tile.x}/{tile.y}?access_token={self._token}"
        return await self._api_call(
            "tile",
            url,
            what=f"coverage tile {tile.z}/{tile.x}/{tile.y}",
            headers=None,
            bucket=self._tile_bucket,
            sem=self._tile_sem,
            allow_redirects=False,
            classify=classify_tile_response,
        )

    def _graph_headers(self) -> dict[str, str]:
        return {"Authorization": f"OAuth {self._token}"}

    async def fetch_images(self, image_ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``GET /images?image_ids=…`` (≤ 200 ids) → {id (str): record}; ids the API leaves out are
        absent. Raises MapillaryRequestError(reason='not_found') if the API rejects the batch."""
        if not 1 <= len(image_ids) <= 200:
            raise ValueError(f"fetch_images takes 1..200 ids, got {len(image_ids)}")
        url = f"{self.config.graph_url}/images?image_ids={','.join(map(str, image_ids))}&fields={','.join(fields)}"
        doc = await self._graph(url, what=f"Graph images ({len(image_ids)} ids)")
        data = doc.get("data")
        if not isinstance(data, list):
            raise MapillaryRequestError(f"Graph images: answer has no 'data' list (keys {sorted(doc)[:5]})", reason="bad_answer")
        wanted = {str(i) for i in image_ids}
        out: dict[str, dict[str, Any]] = {}
        for rec in data:
            if isinstance(rec, dict) and str(rec.get("id")) in wanted:
                rec = dict(rec)
                rec["id"] = str(rec["id"])
                out[rec["id"]] = rec
        return out

    async def fetch_image(self, image_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        """``GET /{id}?fields=…``; None when the id does not exist (code 100)."""
        url = f"{self.config.graph_url}/{image_id}?fields={','.join(fields)}"
        try:
            doc = await self._graph(url, what=f"Graph image {image_id}")
        except MapillaryRequestError as e:
            if e.reason == "not_found":
                return None
            raise
        doc = dict(doc)
        doc["id"] = str(doc.get("id", image_id))
        return doc

    async def _graph(self, url: str, *, what: str) -> dict[str, Any]:
        return await self._api_call(
            "graph",
            url,
            what=what,
            headers=self._graph_headers(),
            bucket=self._graph_bucket,
            sem=self._sem,
            allow_redirects=True,
            classify=lambda status, _ctype, body: classify_graph_response(status, body),
        )

    async def download_image(self, url: str, dest: Path, *, what: str, require_2to1: bool = True) -> DownloadedImage:
        """Stream a signed thumbnail URL to ``dest`` (temp file + rename) and validate it.

        Answers without a body (5xx, 429, refused connections) are retried here with the same URL.
        Once a body was received the URL may be spent (signed URLs can be single-use), so every
        problem with the body is raised for the caller to retry with a *fresh* URL:
        :class:`ImageContentError` (200 but not a JPEG: an HTML page ...), :class:`ImageInvalidError`
        (truncated, cut transfer, undecodable, wrong shape). Also raises :class:`ImageStaleError`
        (403/410) and :class:`MapillaryRequestError` (404: ``not_found``; other failures).
        """
        assert self._session is not None
        for attempt in range(self.config.max_retries + 1):
            try:
                return await self._download_once(url, dest, what=what, require_2to1=require_2to1)
            except (ImageInvalidError, ImageStaleError):
                raise
            except MapillaryRequestError as e:
                if e.reason == "not_found" or (e.reason.startswith("http_4") and e.reason != "http_429"):
                    raise
                if attempt == self.config.max_retries:
                    raise
                log.debug("%s; retry %d", e, attempt + 1)
                await self.backoff(attempt)
        raise AssertionError("unreachable")

    async def _download_once(self, url: str, dest: Path, *, what: str, require_2to1: bool) -> DownloadedImage:
        async with self._sem:
            if self._image_bucket is not None:
                await self._image_bucket.acquire()
            self.stats.requests["image"] += 1
            h = hashlib.sha256()
            chunks: list[bytes] = []
            try:
                async with self._session.get(url, allow_redirects=True) as resp:
                    outcome = classify_image_response(resp.status)
                    if outcome is Outcome.STALE_URL:
                        raise ImageStaleError(f"{what}: CDN HTTP {resp.status} (signed URL expired)", reason="image_url_stale", status=resp.status)
                    if outcome is Outcome.NOT_FOUND:
                        raise MapillaryRequestError(f"{what}: CDN HTTP 404", reason="not_found", status=404)
                    if outcome is not Outcome.OK:
                        if resp.status == 429:
                            self.stats.rate_limited += 1
                        raise MapillaryRequestError(f"{what}: CDN HTTP {resp.status}", reason=f"http_{resp.status}", status=resp.status)
                    expected = resp.content_length
                    content_type = resp.headers.get("Content-Type", "")
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        chunks.append(chunk)
                        h.update(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                if not chunks:  # nothing received: the URL is not spent
                    raise MapillaryRequestError(f"{what}: {type(e).__name__}", reason="network") from None
                raise ImageInvalidError(f"{what}: transfer failed ({type(e).__name__})", reason="image_transfer") from None
            except aiohttp.ClientError as e:
                raise MapillaryRequestError(f"{what}: {type(e).__name__}", reason="network") from None
        n = sum(len(c) for c in chunks)
        if expected is not None and n != expected:
            raise ImageInvalidError(f"{what}: truncated ({n} of {expected} bytes)", reason="image_truncated")
        problem = image_body_problem(content_type, b"".join(chunks[:8])[:64])
        if problem:
            raise ImageContentError(f"{what}: CDN answered 200 with {problem.split(': ', 1)[1]}", reason=problem)
        # temp file, fsync, decode check, rename: blocking work, off the event loop
        w, hgt = await asyncio.to_thread(_write_validated, dest, chunks, require_2to1)
        self.stats.bytes_downloaded += n
        return DownloadedImage(dest, h.hexdigest(), w, hgt, n)


def _write_validated(dest: Path, chunks: list[bytes], require_2to1: bool) -> tuple[int, int]:
    """Write ``dest`` atomically, but only if the bytes decode as a (2:1) JPEG."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            for c in chunks:
                fh.write(c)
        return validate_jpeg(tmp, require_2to1=require_2to1)
