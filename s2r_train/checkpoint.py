"""Training checkpoints: atomic writes, keep-last-K, auto-resume, ``weights_only`` loads.

A checkpoint is one ``torch.save``d dict of state_dicts, tensors, ints and strings only
(RNG states as uint8 tensors, the config as YAML text), so ``torch.load(weights_only=True)``
reads it. Files are ``<run_dir>/checkpoints/checkpoint-step<step:09d>.pt``, named by the
optimizer step, the unit of ``--max-steps``, TensorBoard and the logs (the images seen are inside,
``nimg``); the newest is the one with the highest step. Checkpoints of older runs, named by images
seen (``checkpoint-<nimg:012d>.pt``), are still found and count as older than any step-named one.
Written to a temp sibling and renamed (``s2r_data.atomic``), so a crash mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from s2r_data.atomic import atomic_path

__all__ = ["CheckpointManager", "save_checkpoint", "load_checkpoint", "checkpoint_name", "CHECKPOINT_RE",
           "LEGACY_CHECKPOINT_RE"]

CHECKPOINT_RE = re.compile(r"^checkpoint-step(\d{9,})\.pt$")
LEGACY_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{12})\.pt$")  # named by images seen (before step names)


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint written after optimizer step ``step``."""
    return f"checkpoint-step{step:09d}.pt"


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
        found = []
        for p in self.dir.iterdir():
            if m := CHECKPOINT_RE.match(p.name):
                found.append(((1, int(m.group(1))), p))
            elif m := LEGACY_CHECKPOINT_RE.match(p.name):
                found.append(((0, int(m.group(1))), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        items = self.list()
        return items[-1] if items else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` as the checkpoint of optimizer step ``step``; keep the newest ``keep_last``."""
        path = save_checkpoint(self.dir / checkpoint_name(step), state)
        for old in self.list()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path
