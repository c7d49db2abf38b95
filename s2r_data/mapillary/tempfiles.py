"""The harvester's temporary files: which names are its own, and removing those of killed runs.

Every file the harvester writes goes through :func:`s2r_data.atomic.atomic_path`, which writes a
sibling ``.<name>.<uuid hex>.partial[.suffix]`` and renames it. A kill leaves the temp behind:
``images/.<id>.jpg.<hex>.partial``, ``tiles/.14_x_y.parquet.<hex>.partial.parquet``,
``.harvest.parquet.<hex>.partial.parquet``. Listings of finished files skip every temp name
(:func:`s2r_data.atomic.is_temp_name`); :func:`harvest_session` removes this harvester's own stale
temps at the start of a run, but only when no other harvest works in the same directory (a flow
harvests several tiles at once: their temps are live). Runs announce themselves with a shared
``flock`` on ``<out_dir>/.harvest.lock``; the cleanup needs it exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "harvest_session", "remove_stale_temps", "own_temp_files"]

log = logging.getLogger("s2r_data.mapillary")
LOCK_NAME = ".harvest.lock"
_HEX = r"[0-9a-f]{32}"
# (sub-directory, temp names of the files the harvester writes there)
_OWN_TEMPS = (
    ("images", re.compile(rf"^\.\d+\.jpg\.{_HEX}\.partial$")),
    ("tiles", re.compile(rf"^\.\d+_\d+_\d+\.parquet\.{_HEX}\.partial\.parquet$")),
    (".", re.compile(rf"^\.harvest\.parquet\.{_HEX}\.partial\.parquet$")),
)


def own_temp_files(out_dir: Path) -> list[Path]:
    """Temp files of this harvester's writes under ``out_dir`` (nothing else matches)."""
    out: list[Path] = []
    for sub, pattern in _OWN_TEMPS:
        d = Path(out_dir) / sub
        if d.is_dir():
            out += [d / n for n in sorted(os.listdir(d)) if pattern.match(n)]
    return out


def remove_stale_temps(out_dir: Path) -> int:
    """Delete :func:`own_temp_files`; call only while no other harvest writes there."""
    n = 0
    for p in own_temp_files(out_dir):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    if n:
        log.info("removed %d temporary file(s) left by an interrupted harvest in %s", n, out_dir)
    return n


@contextlib.contextmanager
def harvest_session(out_dir: str | os.PathLike) -> Iterator[int]:
    """Hold a shared lock on ``out_dir`` while harvesting (or merging) there. Entering it first
    removes the stale temps of killed runs when no other session is active; yields how many."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        removed = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)  # another harvest works here: its temp files are live
        except OSError as e:  # a file system without locks: never guess who is alone
            log.warning("no file locks in %s (%s): temp files of killed runs are left alone", out_dir, e)
        else:
            removed = remove_stale_temps(out_dir)
            fcntl.flock(fd, fcntl.LOCK_SH)  # (converting may briefly drop the lock: nothing written yet)
        yield removed
    finally:
        os.close(fd)
