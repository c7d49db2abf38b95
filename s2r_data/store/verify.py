"""Full consistency check of a dataset: every committed sample, the index and the store agree."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .checks import sample_problems
from .index import read_index
from .pyramid import downsample_sample
from .reader import DatasetReader
from .schema import level_name
from .urls import ZARR_DIR, location

__all__ = ["verify", "VerifyReport", "Problem"]


@dataclass(frozen=True)
class Problem:
    image_id: str  # "" for store-level problems
    message: str

    def __str__(self) -> str:
        return f"{self.image_id or '<store>'}: {self.message}"


@dataclass
class VerifyReport:
    url: str
    n_samples: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_ids(self) -> set[str]:
        return {p.image_id for p in self.problems if p.image_id}

    def summary(self) -> str:
        lines = [f"{self.url}: {self.n_samples} samples, {len(self.problems)} problems, {len(self.warnings)} warnings"]
        lines += [f"  PROBLEM {p}" for p in self.problems]
        lines += [f"  warning {w}" for w in self.warnings]
        return "\n".join(lines)


def verify(url: str | os.PathLike, *, check_pyramid: bool = True, progress: bool = False) -> VerifyReport:
    """Check every committed sample (shapes, finite values, value ranges, sky ⇔ label 0 ⇔ depth 0,
    pyramid levels = downsampled level 0), index ↔ store agreement and duplicates."""
    loc = location(url)
    report = VerifyReport(url=loc.url)
    if not loc.exists(f"{ZARR_DIR}/zarr.json"):
        report.problems.append(Problem("", f"no Zarr group at {loc.path(ZARR_DIR)}"))
        return report

    raw = read_index(loc, dedupe=False)
    ids = raw.column("image_id").to_pylist()
    zidx = raw.column("zarr_index").to_pylist()
    by_id: dict[str, set[int]] = {}
    for i, z in zip(ids, zidx):
        by_id.setdefault(i, set()).add(z)
    for i, zs in by_id.items():
        if len(zs) > 1:
            report.problems.append(Problem(i, f"listed with several zarr_index values {sorted(zs)}"))
    reader = DatasetReader(url)
    zcount = Counter(reader.index.column("zarr_index").to_pylist())
    for i, z in zip(reader.image_ids, reader.index.column("zarr_index").to_pylist()):
        if zcount[z] > 1:
            report.problems.append(Problem(i, f"shares zarr_index {z} with another image"))

    from .writer import _read_slot_log  # noqa: PLC0415 (shared private helper)

    slots = _read_slot_log(loc)
    attrs = reader.attrs
    levels = int(attrs.get("pyramid_levels", 0))
    H, W = int(attrs["height"]), int(attrs["width"])
    group = reader.group
    names = ("sim", "label", "real", "mask")
    for level in range(levels + 1):
        for name in names:
            arr = group[level_name(name, level)]
            want = (H >> level, W >> level)
            if tuple(arr.shape[2:]) != want:
                report.problems.append(Problem("", f"{arr.path}: spatial shape {arr.shape[2:]} ≠ {want}"))
    report.n_samples = len(reader)

    it = range(len(reader))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="verify", unit="sample")
    for i in it:
        image_id = reader.image_ids[i] if i < len(reader.image_ids) else str(i)
        z = reader.zarr_index(i)
        if image_id in slots and slots[image_id] != z:
            report.problems.append(Problem(image_id, f"index says zarr_index {z}, slot log says {slots[image_id]}"))
        prev = None
        for level in range(levels + 1):
            data = {}
            try:
                for name in names:
                    arr = group[level_name(name, level)]
                    if z >= arr.shape[0]:
                        raise IndexError(f"{arr.path}: zarr_index {z} ≥ capacity {arr.shape[0]}")
                    data[name] = arr[z]
            except Exception as e:  # decode errors, truncated shards, …
                report.problems.append(Problem(image_id, f"level {level}: cannot read: {type(e).__name__}: {e}"))
                break
            if level == 0 and not loc.exists(f"{ZARR_DIR}/real/c/{z}/0/0/0"):
                report.problems.append(Problem(image_id, "real: shard missing (photo never written)"))
            for msg in sample_problems(data["sim"], data["label"], data["real"], data["mask"]):
                report.problems.append(Problem(image_id, f"level {level}: {msg}"))
            if check_pyramid and prev is not None:
                exp = downsample_sample(prev["sim"], prev["label"], prev["real"], prev["mask"])
                for name, e in zip(names, exp):
                    got = data[name]
                    if name == "sim":
                        same = np.allclose(got.astype(np.float32), e.astype(np.float32), atol=2e-3, rtol=2e-3, equal_nan=False)
                    elif name == "real":
                        same = int(np.abs(got.astype(np.int16) - e.astype(np.int16)).max(initial=0)) <= 1
                    else:
                        same = np.array_equal(got, e)
                    if not same:
                        report.problems.append(Problem(image_id, f"{level_name(name, level)} ≠ downsampled level {level - 1}"))
            prev = data

    committed = set(reader.image_ids)
    orphans = sorted(set(slots) - committed)
    if orphans:
        report.warnings.append(
            f"{len(orphans)} allocated but uncommitted slots (writes in flight or crashed; a rerun reuses them): {orphans[:10]}"
        )
    if loc.is_local:
        partial = []
        for dirpath, _dirs, files in os.walk(loc.path()):
            partial += [f for f in files if f.endswith(".partial") or ".partial." in f]
        if partial:
            report.warnings.append(f"{len(partial)} leftover temporary files from interrupted writes (harmless)")
    return report
