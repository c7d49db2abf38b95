"""Per-tile progress journal: the rows of a tile that is still being harvested, one JSON line each.

A tile's Parquet part is written once, when the tile is done. Until then every finished image
(harvested, quarantined, missing, no_pose, failed) is appended to ``tiles/<z>_<x>_<y>.progress.jsonl``
and flushed at once, so a run killed in the middle of a tile keeps that work: the next run reads
the journal and does not ask for those images again. When the part is written the journal is
deleted (its rows are in the part). A line cut by a kill is ignored.

Lines are flushed to the OS (enough for a killed process), not fsynced one by one: after a power
loss the last few lines may be missing, and those images are simply looked at again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["JOURNAL_SUFFIX", "TileJournal", "journal_path", "read_journal"]

log = logging.getLogger("s2r_data.mapillary")
JOURNAL_SUFFIX = ".progress.jsonl"


def journal_path(tile_part: Path) -> Path:
    """``tiles/14_x_y.parquet`` → ``tiles/14_x_y.progress.jsonl``."""
    return tile_part.with_name(tile_part.name.removesuffix(".parquet") + JOURNAL_SUFFIX)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The rows of a journal in the order written; a cut or unparsable line is skipped."""
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return rows
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if k < len(lines) - 1:  # the last line is cut by a kill; anything else is worth a word
                log.warning("%s: line %d is not JSON; skipped", path, k + 1)
            continue
        if isinstance(row, dict) and "image_id" in row and "status" in row:
            rows.append(row)
    return rows


class TileJournal:
    """Append-only writer; ``with TileJournal(path) as j: j.append(row)``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = None

    def __enter__(self) -> "TileJournal":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fh = os.fdopen(fd, "ab")
        if self._fh.tell() > 0:  # a killed run may have cut its last line: start on a new one
            self._fh.write(b"\n")
        return self

    def append(self, row: Mapping[str, Any]) -> None:
        assert self._fh is not None, "use `with TileJournal(path) as journal:`"
        self._fh.write(json.dumps(dict(row), separators=(",", ":")).encode() + b"\n")
        self._fh.flush()

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
