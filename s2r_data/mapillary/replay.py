"""A faithful local stand-in for Mapillary (real HTTP on 127.0.0.1) with seeded fault injection.

Serves, from a content directory (``images.json`` = Graph image records + ``images/<id>.jpg``):

* coverage tiles ``/maps/vtp/{mly1_public|mly1_computed_public}/2/{z}/{x}/{y}?access_token=`` as
  real Mapbox Vector Tiles (layers ``image`` and ``sequence``, extent 4096; ``image`` only at z14);
* Graph ``/images?image_ids=…&fields=…`` → ``{"data": [...]}`` and ``/{id}?fields=…``: string ids,
  only the requested fields, absent fields omitted, ``Authorization: OAuth <token>``;
* signed, expiring thumbnail URLs (``…?stp=…&oh=<signature>&oe=<hex expiry>``) pointing back here;
* Mapillary's error envelopes: code 4 on HTTP 403 (rate limit), code 190 (bad token, HTTP 401),
  code 100 / subcode 33 on HTTP 400 (unknown id or field).

Faults (:class:`FaultConfig`) are decided by a hash of (seed, request, how many times that request
was seen), so a run is reproducible whatever the request order. Server-side token buckets refuse
requests beyond the configured limits (Graph: 403 code 4; tiles: 429 or a 302 "block") and every
arrival time is recorded so a benchmark can check the client never exceeded them.

Content-only keys in ``images.json`` (stripped from answers): ``_replay_deleted`` (in the tiles,
gone from Graph), ``_replay_corrupt_image`` (the CDN always sends a truncated JPEG),
``_replay_html_image`` (the CDN always answers 200 with an HTML page), ``_replay_no_image`` (no
thumbnail URLs), ``organization_id`` (tiles only).

CLI: ``python -m s2r_data.mapillary.replay --content data/sample/replay --port 0 --token T``
prints ``REPLAY_URL http://127.0.0.1:<port>`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import random
import secrets
import string
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import mercantile
from aiohttp import web

from .coverage import encode_coverage_tile

__all__ = ["FaultConfig", "ReplayServer", "load_content", "KNOWN_IMAGE_FIELDS", "REPLAY_TOKEN", "main"]

# The token a replay server accepts unless told otherwise (a stand-in: it opens nothing upstream).
REPLAY_TOKEN = "MLY|replay|local"

KNOWN_IMAGE_FIELDS = frozenset(
    {
        "id", "altitude", "atomic_scale", "camera_parameters", "camera_type", "captured_at",
        "compass_angle", "computed_altitude", "computed_compass_angle", "computed_geometry",
        "computed_rotation", "creator", "exif_orientation", "geometry", "height", "is_pano", "make",
        "model", "thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url",
        "merge_cc", "mesh", "quality_score", "sequence", "sfm_cluster", "width", "detections",
        "organization",
    }
)  # fmt: skip
_THUMB_FIELDS = {"thumb_256_url": "256", "thumb_1024_url": "1024", "thumb_2048_url": "2048", "thumb_original_url": "original"}
_LAYERS = ("mly1_public", "mly1_computed_public")
_FAULT_KEY = web.RequestKey("replay_fault", object)
_AUTH_KEY = web.RequestKey("replay_auth", object)
_IDS_KEY = web.RequestKey("replay_ids", object)


def _fbtrace() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=11))


def _envelope(message: str, code: int, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": "MLYApiException", **extra, "code": code, "fbtrace_id": _fbtrace()}}


def _err_rate_limit() -> dict[str, Any]:
    return _envelope("Application request limit reached", 4, is_transient=True)


def _err_token() -> dict[str, Any]:
    return {"error": {"message": "Invalid OAuth 2.0 Access Token", "type": "MLYApiException", "code": 190, "error_data": {}, "fbtrace_id": _fbtrace()}}


def _err_unknown_id(image_id: str) -> dict[str, Any]:
    return _envelope(
        f"Unsupported get request. Object with ID '{image_id}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation",
        100,
        error_subcode=33,
    )


def _err_unknown_field(name: str) -> dict[str, Any]:
    return _envelope(f"Tried accessing nonexisting field ({name}) on node type (Image)", 100)


_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
_HTML_PAGE = "<!DOCTYPE html><html><head><title>Mapillary</title></head><body>Something went wrong.</body></html>"


def _html_502() -> web.Response:
    return web.Response(status=502, text=_HTML_502, content_type="text/html")


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Seeded fault injection and limits. Probabilities are per request of the kinds named."""

    seed: int = 0
    latency_s: float = 0.0  # added to every answer (asyncio sleep, so answers overlap)
    latency_jitter_s: float = 0.0  # + uniform(0, jitter)
    p_http_500: float = 0.0  # graph, tiles, images
    p_http_429: float = 0.0  # graph, tiles
    p_code_4: float = 0.0  # graph: HTTP 403 + code 4 envelope
    p_code_190: float = 0.0  # graph: HTTP 500 + code 190 envelope (as JOSM's fixture)
    p_malformed_json: float = 0.0  # graph: 200 with a cut-off JSON body
    p_truncated_image: float = 0.0  # images: first half of the JPEG only
    p_expired_url: float = 0.0  # images: 403 "URL signature expired" (first download of an image only)
    p_html_502: float = 0.0  # graph, tiles, images: 502 with an HTML error page (a proxy in between)
    p_html_image: float = 0.0  # images: 200 with an HTML page instead of the JPEG
    single_use_urls: bool = False  # a signed thumbnail URL serves one body; reusing it → 403
    graph_rate_per_s: float | None = None  # server-side token bucket; None = unlimited
    graph_burst: int = 10
    tiles_rate_per_s: float | None = None
    tiles_burst: int = 1
    images_rate_per_s: float | None = None  # CDN limit (429 beyond); undocumented upstream
    images_burst: int = 16
    tiles_block_on_limit: bool = False  # over the tile limit → 302 to an HTML login page (IP block)
    block_tiles: bool = False  # every tile request → 302 (a blocked IP)
    url_ttl_s: float = 3600.0  # signed thumbnail URL lifetime
    retry_after_s: int = 0  # Retry-After header on 429

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_"):
                v = getattr(self, f.name)
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"FaultConfig.{f.name}={v!r} must be a probability in [0, 1]")
        if self.latency_s < 0 or self.latency_jitter_s < 0:
            raise ValueError("FaultConfig latency must be >= 0")
        for kind in ("graph", "tiles", "images"):
            total = sum(self._probs(kind).values())
            if total > 1.0:
                raise ValueError(f"FaultConfig: fault probabilities for {kind} requests sum to {total} > 1")

    @classmethod
    def mixed(cls, rate: float, *, seed: int = 0, **kw: Any) -> "FaultConfig":
        """``rate`` of every request kind fails, spread over the recoverable kinds (no 190)."""
        return cls(
            seed=seed,
            p_http_500=rate / 4,
            p_http_429=rate / 4,
            p_code_4=rate / 4,
            p_malformed_json=rate / 4,
            p_truncated_image=rate / 2,
            p_expired_url=rate / 4,
            **kw,
        )

    def _probs(self, kind: str) -> dict[str, float]:
        # new kinds go last: a zero probability leaves the seeded choice of the others unchanged
        if kind == "graph":
            return {"500": self.p_http_500, "429": self.p_http_429, "code4": self.p_code_4, "190": self.p_code_190,
                    "malformed": self.p_malformed_json, "html502": self.p_html_502}  # fmt: skip
        if kind == "tiles":
            return {"500": self.p_http_500, "429": self.p_http_429, "html502": self.p_html_502}
        return {"500": self.p_http_500, "truncated": self.p_truncated_image, "expired": self.p_expired_url,
                "html502": self.p_html_502, "html": self.p_html_image}  # fmt: skip


class _Bucket:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.tokens, self.last = float(burst), time.perf_counter()

    def allow(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def load_content(content_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """``images.json`` (a list, or ``{"images": [...]}``) and ``images/<id>.jpg`` bytes."""
    content_dir = Path(content_dir)
    path = content_dir / "images.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"replay content {content_dir} has no images.json; generate it with "
            "`python -m s2r_data.mapillary.sample_content --out {content_dir}`"
        )
    doc = json.loads(path.read_text())
    records = doc["images"] if isinstance(doc, dict) else doc
    images: dict[str, bytes] = {}
    shared: dict[str, bytes] = {}  # identical files (benchmarks reuse a few photos) share memory
    for rec in records:
        p = content_dir / "images" / f"{rec['id']}.jpg"
        if p.is_file():
            data = p.read_bytes()
            images[str(rec["id"])] = shared.setdefault(hashlib.sha256(data).hexdigest(), data)
    return records, images


class ReplayServer:
    """In-process server: ``with ReplayServer(content_dir, token, faults) as srv: srv.graph_url``.

    ``content_dir`` may be None (start empty and :meth:`add_images`)."""

    def __init__(
        self,
        content_dir: str | Path | None,
        token: str,
        faults: FaultConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if not token:
            raise ValueError("ReplayServer needs the token it will accept")
        self.token = token
        self.faults = faults or FaultConfig()
        self.host, self._port = host, port
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._images: dict[str, bytes] = {}
        self._thumb_cache: dict[tuple[str, str], bytes] = {}
        self._tile_cache: dict[tuple[str, str, int], bytes] = {}
        self._version = 0
        self._seen: dict[str, int] = {}
        self._used_urls: set[str] = set()  # signatures of single-use URLs already served
        self._log: list[dict[str, Any]] = []  # {t, kind, status, fault}
        self._graph_bucket = _Bucket(self.faults.graph_rate_per_s, self.faults.graph_burst) if self.faults.graph_rate_per_s else None
        self._tiles_bucket = _Bucket(self.faults.tiles_rate_per_s, self.faults.tiles_burst) if self.faults.tiles_rate_per_s else None
        self._images_bucket = _Bucket(self.faults.images_rate_per_s, self.faults.images_burst) if self.faults.images_rate_per_s else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        if content_dir is not None:
            recs, imgs = load_content(content_dir)
            self.add_images(recs, imgs)

    # ---- content ----------------------------------------------------------------------------
    def add_images(self, records: Sequence[Mapping[str, Any]], images: Mapping[str, bytes] | None = None) -> None:
        """Add (or replace) image records and their JPEG bytes; safe while serving."""
        with self._lock:
            for rec in records:
                r = dict(rec)
                r["id"] = str(r["id"])
                self._records[r["id"]] = r
            for k, v in (images or {}).items():
                self._images[str(k)] = bytes(v)
            self._version += 1
            self._tile_cache.clear()
            self._thumb_cache.clear()

    @property
    def image_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    # ---- observation --------------------------------------------------------------------------
    def request_log(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log if kind is None or e["kind"] == kind]

    def request_counts(self) -> dict[str, int]:
        c: dict[str, int] = {"tile": 0, "graph": 0, "image": 0}
        for e in self.request_log():
            if e["kind"] in c:
                c[e["kind"]] += 1
        return c

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, kind: str, status: int, fault: str | None, t: float, extra: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._log.append({"t": t, "kind": kind, "status": status, "fault": fault, **(extra or {})})

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def graph_url(self) -> str:
        return self.base_url

    @property
    def tiles_url(self) -> str:
        return self.base_url

    def start(self) -> "ReplayServer":
        if self._thread is not None:
            return self
        ready = threading.Event()
        err: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as e:  # noqa: BLE001 - reported to start()
                err.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="mapillary-replay", daemon=True)
        self._thread.start()
        ready.wait(30)
        if err:
            self._thread = None
            raise err[0]
        return self

    async def _start_site(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/maps/vtp/{layer}/2/{z}/{x}/{y}", self._h_tile)
        app.router.add_get("/images", self._h_images)
        app.router.add_get("/cdn/{image_id}/{size}.jpg", self._h_cdn)
        app.router.add_get("/login", self._h_login)
        app.router.add_get("/_replay/stats", self._h_stats)
        app.router.add_post("/_replay/images", self._h_add)
        app.router.add_post("/_replay/reset", self._h_reset)
        app.router.add_get("/{image_id}", self._h_image)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- helpers ----------------------------------------------------------------------------
    def _fault(self, kind: str, key: str) -> str | None:
        name, _ = self._fault_n(kind, key)
        return name

    def _fault_n(self, kind: str, key: str) -> tuple[str | None, int]:
        """(fault or None, how many times ``key`` was seen before)."""
        with self._lock:
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
        h = hashlib.sha256(f"{self.faults.seed}|{key}|{n}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        acc = 0.0
        for name, p in self.faults._probs(kind).items():
            acc += p
            if u < acc:
                return name, n
        return None, n

    async def _latency(self) -> None:
        d = self.faults.latency_s + (random.uniform(0, self.faults.latency_jitter_s) if self.faults.latency_jitter_s else 0.0)
        if d > 0:
            await asyncio.sleep(d)

    def _json(self, kind: str, t: float, status: int, doc: Any, fault: str | None = None, **extra) -> web.Response:
        self._record(kind, status, fault, t, extra)
        return web.json_response(doc, status=status)

    def _sign(self, image_id: str, size: str, expiry: int, nonce: str) -> str:
        return hmac.new(self._secret, f"{image_id}/{size}/{expiry}/{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def _thumb_url(self, image_id: str, size: str) -> str:
        expiry = int(time.time() + self.faults.url_ttl_s)
        stp = "s2048x1024" if size == "2048" else ("original" if size == "original" else f"s{size}x{int(size) // 2}")
        nonce = secrets.token_hex(4)  # every answer signs a new URL (as the CDN does)
        sig = self._sign(image_id, size, expiry, nonce)
        return f"{self.base_url}/cdn/{image_id}/{size}.jpg?stp={stp}&_nc_sid=replay&_nc_ohc={nonce}&ccb=10-5&oh={sig}&oe={expiry:X}"

    def _thumb_bytes(self, image_id: str, size: str) -> bytes | None:
        data = self._images.get(image_id)
        if data is None or size in ("2048", "original"):
            return data
        key = (image_id, size)
        if key not in self._thumb_cache:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                w = int(size)
                out = io.BytesIO()
                im.convert("RGB").resize((w, max(1, round(im.height * w / im.width)))).save(out, "JPEG", quality=85)
            self._thumb_cache[key] = out.getvalue()
        return self._thumb_cache[key]

    def _shape(self, rec: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": str(rec["id"])}
        for f in wanted:
            if f == "id":
                continue
            if f in _THUMB_FIELDS:
                if not rec.get("_replay_no_image") and str(rec["id"]) in self._images:
                    out[f] = self._thumb_url(str(rec["id"]), _THUMB_FIELDS[f])
            elif f in rec and rec[f] is not None:
                out[f] = rec[f]
        return out

    def _graph_auth_ok(self, request: web.Request) -> tuple[bool, str]:
        auth = request.headers.get("Authorization", "")
        if auth:
            return auth == f"OAuth {self.token}", "header"
        q = request.query.get("access_token")
        if q is not None:  # Graph accepts it too; the harvester must not use it (recorded)
            return q == self.token, "query"
        return False, "none"

    def _graph_gate(self, request: web.Request, t: float) -> web.Response | tuple[str, list[str]] | None:
        """Common Graph checks; returns an error response, or None to go on."""
        ok, how = self._graph_auth_ok(request)
        if not ok:
            return self._json("graph", t, 401, _err_token(), auth=how)
        if self._graph_bucket is not None:
            with self._lock:
                allowed = self._graph_bucket.allow(t)
            if not allowed:
                return self._json("graph", t, 403, _err_rate_limit(), "over_limit", auth=how)
        key = "graph|" + request.path_qs
        fault = self._fault("graph", key)
        if fault == "500":
            return self._json("graph", t, 500, _envelope("An unknown error has occurred.", 1, is_transient=True), fault, auth=how)
        if fault == "429":
            self._record("graph", 429, fault, t, {"auth": how})
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(self.faults.retry_after_s)})
        if fault == "code4":
            return self._json("graph", t, 403, _err_rate_limit(), fault, auth=how)
        if fault == "190":
            return self._json("graph", t, 500, _err_token(), fault, auth=how)
        if fault == "html502":
            self._record("graph", 502, fault, t, {"auth": how})
            return _html_502()
        request[_FAULT_KEY] = fault
        request[_AUTH_KEY] = how
        return None

    def _fields(self, request: web.Request) -> tuple[list[str], str | None]:
        raw = request.query.get("fields", "id")
        wanted = [f.strip() for f in raw.split(",") if f.strip()]
        for f in wanted:
            if f not in KNOWN_IMAGE_FIELDS:
                return wanted, f
        return wanted, None

    def _graph_ok(self, request: web.Request, t: float, doc: Any) -> web.Response:
        fault = request.get(_FAULT_KEY)
        if fault == "malformed":
            body = json.dumps(doc)
            self._record("graph", 200, fault, t, {"auth": request.get(_AUTH_KEY), "ids": request.get(_IDS_KEY)})
            return web.Response(status=200, text=body[: max(1, len(body) // 2)], content_type="application/json")
        return self._json("graph", t, 200, doc, auth=request.get(_AUTH_KEY), ids=request.get(_IDS_KEY))

    # ---- handlers ---------------------------------------------------------------------------
    async def _h_images(self, request: web.Request) -> web.StreamResponse:
        t = time.perf_counter()
        await self._latency()
        gate = self._graph_gate(request, t)
        if gate is not None:
            return gate
        wanted, bad = self._fields(request)
        if bad:
            return self._json("graph", t, 400, _err_unknown_field(bad), auth=request.get(_AUTH_KEY))
        ids = [s.strip() for s in request.query.get("image_ids", "").split(",") if s.strip()]
        with self._lock:
            recs = [self._records.get(i) for i in ids]
        data = [self._shape(r, wanted) for r in recs if r is not None and not r.get("_replay_deleted")]
        request[_IDS_KEY] = ids
        return self._graph_ok(request, t, {"data": data})

    async def _h_image(self, request: web.Request) -> web.StreamResponse:
        t = time.perf_counter()
        await self._latency()
        gate = self._graph_gate(request, t)
        if gate is not None:
            return gate
        image_id = request.match_info["image_id"]
        wanted, bad = self._fields(request)
        if bad:
            return self._json("graph", t, 400, _err_unknown_field(bad), auth=request.get(_AUTH_KEY))
        with self._lock:
            rec = self._records.get(image_id)
        if rec is None or rec.get("_replay_deleted"):
            return self._json("graph", t, 400, _err_unknown_id(image_id), auth=request.get(_AUTH_KEY))
        request[_IDS_KEY] = [image_id]
        return self._graph_ok(request, t, self._shape(rec, wanted))

    async def _h_tile(self, request: web.Request) -> web.StreamResponse:
        t = time.perf_counter()
        await self._latency()
        if self.faults.block_tiles:
            self._record("tile", 302, "blocked", t)
            raise web.HTTPFound(f"{self.base_url}/login?next=tiles")
        if request.query.get("access_token") != self.token:
            return self._json("tile", t, 401, _err_token())
        if self._tiles_bucket is not None:
            with self._lock:
                allowed = self._tiles_bucket.allow(t)
            if not allowed:
                if self.faults.tiles_block_on_limit:
                    self._record("tile", 302, "over_limit", t)
                    raise web.HTTPFound(f"{self.base_url}/login?next=tiles")
                self._record("tile", 429, "over_limit", t)
                return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(self.faults.retry_after_s)})
        layer = request.match_info["layer"]
        try:
            z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        except ValueError:
            return self._json("tile", t, 400, _envelope("Invalid tile coordinates", 100))
        if layer not in _LAYERS or not (0 <= x < 2**z and 0 <= y < 2**z):
            return self._json("tile", t, 404, _envelope(f"Unknown tile {layer}/{z}/{x}/{y}", 100))
        fault = self._fault("tiles", f"tile|{layer}/{z}/{x}/{y}")
        if fault == "500":
            return self._json("tile", t, 500, _envelope("An unknown error has occurred.", 1, is_transient=True), fault)
        if fault == "429":
            self._record("tile", 429, fault, t)
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(self.faults.retry_after_s)})
        if fault == "html502":
            self._record("tile", 502, fault, t)
            return _html_502()
        body = self._tile_bytes(layer, z, x, y)
        self._record("tile", 200, None, t)
        return web.Response(status=200, body=body, content_type="application/x-protobuf")

    def _tile_bytes(self, layer: str, z: int, x: int, y: int) -> bytes:
        with self._lock:
            key = (layer, f"{z}/{x}/{y}", self._version)
            if key in self._tile_cache:
                return self._tile_cache[key]
            records = list(self._records.values())
        if z != 14:  # only z14 carries the image layer
            body = encode_coverage_tile(mercantile.Tile(x, y, z), [], computed=layer == "mly1_computed_public")
        else:
            body = encode_coverage_tile(mercantile.Tile(x, y, z), records, computed=layer == "mly1_computed_public")
        with self._lock:
            self._tile_cache[key] = body
        return body

    async def _h_cdn(self, request: web.Request) -> web.StreamResponse:
        t = time.perf_counter()
        await self._latency()
        image_id, size = request.match_info["image_id"], request.match_info["size"]
        try:
            expiry = int(request.query.get("oe", ""), 16)
        except ValueError:
            expiry = -1
        if self._images_bucket is not None:
            with self._lock:
                allowed = self._images_bucket.allow(t)
            if not allowed:
                self._record("image", 429, "over_limit", t, {"id": image_id})
                return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(self.faults.retry_after_s)})
        sig = request.query.get("oh", "")
        if not hmac.compare_digest(sig, self._sign(image_id, size, expiry, request.query.get("_nc_ohc", ""))):
            self._record("image", 403, "bad_signature", t, {"id": image_id})
            return web.Response(status=403, text="Bad URL hash")
        if expiry < time.time():
            self._record("image", 403, "expired", t, {"id": image_id})
            return web.Response(status=403, text="URL signature expired")
        if self.faults.single_use_urls:
            with self._lock:
                reused = sig in self._used_urls
            if reused:
                self._record("image", 403, "reused", t, {"id": image_id})
                return web.Response(status=403, text="URL signature already used")
        with self._lock:
            rec = self._records.get(image_id)
            data = self._thumb_bytes(image_id, size)
        if rec is None or data is None:
            self._record("image", 404, None, t, {"id": image_id})
            return web.Response(status=404, text="Not Found")
        fault, n_seen = self._fault_n("images", f"image|{image_id}/{size}")
        if fault == "expired" and n_seen > 0:
            fault = None  # a URL goes stale between metadata and download; the fresh one works
        if rec.get("_replay_corrupt_image"):
            fault = "truncated"
        if rec.get("_replay_html_image"):
            fault = "html"
        if fault == "500":
            self._record("image", 500, fault, t, {"id": image_id})
            return web.Response(status=500, text="Internal Server Error")
        if fault == "html502":
            self._record("image", 502, fault, t, {"id": image_id})
            return _html_502()
        if fault == "expired":
            self._record("image", 403, fault, t, {"id": image_id})
            return web.Response(status=403, text="URL signature expired")
        if self.faults.single_use_urls:
            with self._lock:
                self._used_urls.add(sig)
        if fault == "html":
            self._record("image", 200, fault, t, {"id": image_id, "size": size})
            return web.Response(status=200, text=_HTML_PAGE, content_type="text/html")
        if fault == "truncated":
            data = data[: len(data) // 2]
        self._record("image", 200, fault, t, {"id": image_id, "size": size})
        return web.Response(status=200, body=data, content_type="image/jpeg")

    async def _h_login(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, text="<html><body>Log in to Mapillary</body></html>", content_type="text/html")

    def _admin_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"OAuth {self.token}"

    async def _h_stats(self, request: web.Request) -> web.StreamResponse:
        if not self._admin_ok(request):
            return web.json_response(_err_token(), status=401)
        return web.json_response({"counts": self.request_counts(), "log": self.request_log(), "faults": asdict(self.faults)})

    async def _h_add(self, request: web.Request) -> web.StreamResponse:
        if not self._admin_ok(request):
            return web.json_response(_err_token(), status=401)
        doc = await request.json()
        images = {k: base64.b64decode(v) for k, v in (doc.get("images_b64") or {}).items()}
        self.add_images(doc.get("records") or [], images)
        return web.json_response({"added": len(doc.get("records") or []), "total": len(self.image_ids)})

    async def _h_reset(self, request: web.Request) -> web.StreamResponse:
        if not self._admin_ok(request):
            return web.json_response(_err_token(), status=401)
        self.reset_log()
        return web.json_response({"ok": True})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s2r_data.mapillary.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--content", default="data/sample/replay", help="directory with images.json and images/")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port")
    ap.add_argument("--token", default=None, help=f"token to accept (default: $MAPILLARY_TOKEN, else {REPLAY_TOKEN!r})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0, help="mixed recoverable faults, fraction of requests")
    ap.add_argument("--graph-rate", type=float, default=None, help="Graph limit, requests/s (403 code 4 beyond)")
    ap.add_argument("--graph-burst", type=int, default=10)
    ap.add_argument("--tiles-rate", type=float, default=None, help="tile limit, requests/s (429 beyond)")
    ap.add_argument("--tiles-burst", type=int, default=1)
    ap.add_argument("--images-rate", type=float, default=None, help="CDN limit, requests/s (429 beyond)")
    ap.add_argument("--images-burst", type=int, default=16)
    args = ap.parse_args(argv)
    token = args.token or os.environ.get("MAPILLARY_TOKEN") or REPLAY_TOKEN
    faults = FaultConfig.mixed(
        args.fault_rate,
        seed=args.seed,
        latency_s=args.latency_ms / 1000.0,
        graph_rate_per_s=args.graph_rate,
        graph_burst=args.graph_burst,
        tiles_rate_per_s=args.tiles_rate,
        tiles_burst=args.tiles_burst,
        images_rate_per_s=args.images_rate,
        images_burst=args.images_burst,
    )
    srv = ReplayServer(args.content, token, faults, host=args.host, port=args.port).start()
    print(f"REPLAY_URL {srv.base_url}", flush=True)
    print(f"serving {len(srv.image_ids)} images from {args.content}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
