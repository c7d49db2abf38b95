"""Keep the access token out of every log line, exception, progress bar and file.

Tile URLs carry the token as ``access_token=``; ``requests``/``aiohttp`` exception strings and
naive URL logging leak it (the notes list several public tools that did). Everything the harvester
prints or raises goes through :class:`Redactor`.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["Redactor", "redact_url", "MASK"]

MASK = "***"
_QUERY_SECRET = re.compile(r"(?i)(access_token|token|oh|oe|signature|sig)=([^&\s'\"<>]+)")
# "OAuth MLY|…" / "Bearer …": a credential-looking word (contains '|' or is long), not "OAuth 2.0"
_AUTH_HEADER = re.compile(r"(?i)\b(OAuth|Bearer)\s+(?=[^\s'\",}]*\||[^\s'\",}]{16,})[^\s'\",}]+")


def redact_url(url: str) -> str:
    """``scheme://host/path`` with every query value masked (signed CDN URLs are not kept either)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return MASK
    if not parts.query:
        return str(url)
    q = "&".join(f"{kv.split('=', 1)[0]}={MASK}" if "=" in kv else kv for kv in parts.query.split("&"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, q, ""))


class Redactor:
    """Replaces the given secrets (raw and percent-encoded) and token-looking fragments."""

    def __init__(self, *secrets: str | None):
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms.update({s, quote(s, safe=""), quote(s), s.replace("|", "%7c")})
        self._forms = sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for f in self._forms:
            out = out.replace(f, MASK)
        out = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", out)
        return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", out)

    def logging_filter(self) -> logging.Filter:
        """A filter that rewrites records in place (message and args) before any handler sees them."""
        red = self

        class _Filter(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                try:
                    msg = record.getMessage()
                except Exception:  # noqa: BLE001 - a broken format string must not leak args
                    msg = str(record.msg)
                record.msg, record.args = red(msg), None
                if record.exc_info and record.exc_info[1] is not None:
                    record.exc_text = red(logging.Formatter().formatException(record.exc_info))
                    record.exc_info = None
                return True

        return _Filter()
