"""Training checkpoints: atomic writes, keep-last-K, auto-resume, ``weights_only`` loads.

A checkpoint is one ``torch.save``d dict of state_dicts, tensors, ints and strings only
(RNG states as uint8 tensors, the config as YAML text), so ``torch.load(weights_only=True)``
reads it. Files are ``<run_dir>/checkpoints/checkpoint-<nimg:012d>.pt``; the newest is the
one with the most images seen. Written to a temp sibling and renamed (``s2r_data.atomic``),
so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from s2r_data.atomic import atomic_path

__all__ = ["CheckpointManager", "save_checkpoint", "load_checkpoint", "checkpoint_name", "CHECKPOINT_RE"]

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{12})\.pt$")


def checkpoint_name(nimg: int) -> str:
    return f"checkpoint-{nimg:012d}.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointManager:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, *, keep_last: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first (temp files of a crashed save are ignored)."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        items = self.list()
        return items[-1] if items else None

    def save(self, nimg: int, state: dict[str, Any]) -> Path:
        path = save_checkpoint(self.dir / checkpoint_name(nimg), state)
        for old in self.list()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path
