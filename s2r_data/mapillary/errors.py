"""Mapillary error envelopes and how the harvester reacts to each answer (pure functions).

Graph errors come as ``{"error": {"message", "type", "code", "error_subcode"?, "is_transient"?,
"fbtrace_id"}}``: code 4 (HTTP 403) = application request limit → back off; code 190 or HTTP
401 = bad/expired token → stop the whole run; code 100 (subcode 33, HTTP 400) = the object does
not exist → skip the image. The undocumented per-IP block of ``tiles.mapillary.com`` has its own
signature: a redirect (302 to a login page) or, once a redirect was followed, an HTML page with
status 200 → abort (retrying extends the block). Any 5xx, HTML or not, is a transient server error
→ retry with back-off.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

__all__ = [
    "MapillaryError",
    "MapillaryAuthError",
    "MapillaryBlockedError",
    "MapillaryRequestError",
    "ApiError",
    "Outcome",
    "parse_error_envelope",
    "classify_graph_response",
    "classify_tile_response",
    "classify_image_response",
    "image_body_problem",
    "TILES_BLOCK_WAIT_H",
    "tiles_block_advice",
]

# How long a blocked IP should wait before the next tile request (streetscape-tracker: the block
# cleared ~20-26 h after the last refused request). The one source for every message that says so.
TILES_BLOCK_WAIT_H = 24


def tiles_block_advice() -> str:
    """What to do about a tiles-host block (library errors and flow failures both say this)."""
    return (
        f"Stop now (retrying extends the block), wait ~{TILES_BLOCK_WAIT_H} h, lower tiles_rate_per_min "
        "(CLI --tiles-rate-per-min, flow parameter tiles_rate_per_min), then rerun (finished tiles are kept)."
    )


class MapillaryError(RuntimeError):
    """Base class; messages never contain the access token (URLs are redacted)."""


class MapillaryAuthError(MapillaryError):
    """Token rejected (code 190 / HTTP 401): the whole run stops; fix the token and rerun."""


class MapillaryBlockedError(MapillaryError):
    """tiles.mapillary.com answered with a redirect or an HTML page (status 200): a per-IP block."""

    wait_h = TILES_BLOCK_WAIT_H


class MapillaryRequestError(MapillaryError):
    """A request failed for good (retries exhausted or a permanent error)."""

    def __init__(self, message: str, *, reason: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ApiError:
    code: int | None
    subcode: int | None
    message: str
    type: str
    is_transient: bool


class Outcome(enum.Enum):
    OK = "ok"
    AUTH = "auth"  # stop everything
    BLOCKED = "blocked"  # tiles host block: abort
    RETRY = "retry"  # 5xx, 429, code 4, malformed/truncated body
    NOT_FOUND = "not_found"  # code 100 / 404: permanent for that id
    STALE_URL = "stale_url"  # CDN 403/410: signed URL expired → fresh metadata
    PERMANENT = "permanent"  # other 4xx


def parse_error_envelope(body: bytes | str | None) -> ApiError | None:
    """``{"error": {...}}`` → :class:`ApiError`; None if the body is not such an envelope."""
    if not body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None

    def _int(v):
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    return ApiError(
        code=_int(err.get("code")),
        subcode=_int(err.get("error_subcode")),
        message=str(err.get("message", "")),
        type=str(err.get("type", "")),
        is_transient=bool(err.get("is_transient", False)),
    )


def classify_graph_response(status: int, body: bytes | None) -> tuple[Outcome, ApiError | None]:
    """Decide what to do with a Graph API answer (status + raw body)."""
    err = parse_error_envelope(body) if status >= 400 else None
    code = err.code if err else None
    if status == 401 or code == 190:
        return Outcome.AUTH, err
    if code == 4 or code == 17 or code == 613 or status == 429:
        return Outcome.RETRY, err
    if status >= 500:
        return Outcome.RETRY, err
    if code == 100 and err is not None and "field" in err.message.lower() and err.subcode != 33:
        return Outcome.PERMANENT, err  # "Tried accessing nonexisting field": a client bug, not a gone image
    if code == 100 or status == 404:
        return Outcome.NOT_FOUND, err
    if err is not None and err.is_transient:
        return Outcome.RETRY, err
    if 300 <= status < 400 or status >= 400:
        return Outcome.PERMANENT, err
    return Outcome.OK, None


def classify_tile_response(status: int, content_type: str, body: bytes | None) -> tuple[Outcome, ApiError | None]:
    """Coverage tiles: a redirect, or an HTML page with a success status, is the block; every other
    answer (a 502 HTML error page included) is classified like Graph's (5xx → retry)."""
    if 300 <= status < 400:
        return Outcome.BLOCKED, None
    if 200 <= status < 300:
        return (Outcome.BLOCKED if "text/html" in (content_type or "").lower() else Outcome.OK), None
    return classify_graph_response(status, body)


def classify_image_response(status: int) -> Outcome:
    """CDN answers for a signed thumbnail URL."""
    if status == 200:
        return Outcome.OK
    if status in (403, 410):
        return Outcome.STALE_URL
    if status == 404:
        return Outcome.NOT_FOUND
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.PERMANENT


_JPEG_MAGIC = b"\xff\xd8\xff"


def image_body_problem(content_type: str, head: bytes) -> str | None:
    """Why a CDN answer with status 200 is not a JPEG at all (an HTML page, JSON, empty), or None.

    ``head`` is the first bytes of the body. Such content does not get better on retry with the
    same URL: the harvester quarantines the image (with this reason) after one fresh URL.
    """
    ct = (content_type or "").split(";")[0].strip().lower() or "no content type"
    if not head:
        return f"image_not_jpeg: empty body ({ct})"
    if head.startswith(_JPEG_MAGIC):
        return None
    text = head[:40].decode("latin-1").strip().replace("\n", " ")
    kind = "HTML page" if ("html" in ct or text.lower().startswith(("<!doctype html", "<html"))) else "not a JPEG"
    return f"image_not_jpeg: {kind} ({ct}, starts {text[:24]!r})"
