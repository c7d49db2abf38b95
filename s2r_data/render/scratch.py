"""Scratch folders of the Blender backend (EXR / PNG files between Blender and the supervisor).

Named ``s2r-render-<pid>-<start>-<random>`` under /dev/shm (else the temp dir): ``pid`` and
``start`` (the process start time in clock ticks since boot, /proc/<pid>/stat field 22; 0 where
/proc is missing) identify the supervisor that owns the folder, so a later run can tell a dead
owner's leftovers (a ``kill -9`` mid-render leaves 25 MB EXRs behind) from a live one's folder.

:func:`clean_stale_scratch` removes only folders with this name pattern whose owner is gone (no
such pid, or the pid now belongs to a process started at another time), plus folders of the
older ``s2r-render-<8 random chars>`` pattern (no owner recorded) untouched for
:data:`LEGACY_STALE_AFTER_S`: a live run writes a file there every few seconds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["scratch_root", "new_scratch_dir", "clean_stale_scratch", "process_start_ticks", "PREFIX", "LEGACY_STALE_AFTER_S"]

log = logging.getLogger(__name__)

PREFIX = "s2r-render-"
LEGACY_STALE_AFTER_S = 24 * 3600.0
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-(\d+)-[A-Za-z0-9_]+$")
_LEGACY = re.compile(rf"^{re.escape(PREFIX)}[a-z0-9_]{{8}}$")  # tempfile.mkdtemp(prefix=PREFIX)


def scratch_root() -> Path:
    """/dev/shm when writable (EXRs never touch disk), else the system temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot); ``None`` if there is no such
    process; 0 if alive but /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if not _pid_exists(pid) else 0
    except OSError:
        return 0 if _pid_exists(pid) else None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 overall: starttime


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_scratch_dir(root: Path | None = None) -> Path:
    """A fresh scratch folder owned by this process."""
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{process_start_ticks(pid) or 0}-", dir=root or scratch_root()))


def _owner_alive(pid: int, start: int) -> bool:
    now = process_start_ticks(pid)
    if now is None:
        return False
    return start == 0 or now == 0 or now == start


def clean_stale_scratch(root: Path | None = None) -> list[Path]:
    """Remove scratch folders of dead owners under ``root``; returns what was removed."""
    root = root or scratch_root()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(PREFIX) or not e.is_dir(follow_symlinks=False):
            continue
        m = _OWNED.match(e.name)
        if m:
            stale = not _owner_alive(int(m.group(1)), int(m.group(2)))
        elif _LEGACY.match(e.name):
            try:
                stale = time.time() - e.stat(follow_symlinks=False).st_mtime > LEGACY_STALE_AFTER_S
            except OSError:
                continue
        else:
            continue
        if stale:
            shutil.rmtree(e.path, ignore_errors=True)
            if not os.path.exists(e.path):
                removed.append(Path(e.path))
    if removed:
        log.info("removed %d stale render scratch folder(s) of dead runs under %s", len(removed), root)
    return removed
