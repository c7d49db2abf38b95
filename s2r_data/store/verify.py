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


_GROUPS: dict[str, object] = {}  # per-process cache of opened zarr groups (verify workers)


def _check_sample(url: str, image_id: str, z: int, levels: int, check_pyramid: bool) -> list[Problem]:
    """All content checks of one sample (runs in a worker process when ``workers`` > 1)."""
    import zarr

    loc = location(url)
    group = _GROUPS.get(url)
    if group is None:
        group = _GROUPS[url] = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    names = ("sim", "label", "real", "mask")
    out: list[Problem] = []
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
            out.append(Problem(image_id, f"level {level}: cannot read: {type(e).__name__}: {e}"))
            break
        if level == 0 and not loc.exists(f"{ZARR_DIR}/real/c/{z}/0/0/0"):
            out.append(Problem(image_id, "real: shard missing (photo never written)"))
        for msg in sample_problems(data["sim"], data["label"], data["real"], data["mask"]):
            out.append(Problem(image_id, f"level {level}: {msg}"))
        if check_pyramid and prev is not None:
            exp = downsample_sample(prev["sim"], prev["label"], prev["real"], prev["mask"])
            for name, e in zip(names, exp):
                got = data[name]
                if name == "sim":
                    same = np.allclose(got.astype(np.float32), e.astype(np.float32), atol=2e-3, rtol=2e-3)
                elif name == "real":
                    same = int(np.abs(got.astype(np.int16) - e.astype(np.int16)).max(initial=0)) <= 1
                else:
                    same = np.array_equal(got, e)
                if not same:
                    out.append(Problem(image_id, f"{level_name(name, level)} ≠ downsampled level {level - 1}"))
        prev = data
    return out


def verify(
    url: str | os.PathLike, *, check_pyramid: bool = True, progress: bool = False, workers: int = 1
) -> VerifyReport:
    """Check every committed sample (shapes, finite values, value ranges, sky ⇔ label 0 ⇔ depth 0,
    pyramid levels = downsampled level 0), index ↔ store agreement and duplicates.
    ``workers`` > 1 checks samples in that many processes."""
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

    jobs = [(reader.image_ids[i], reader.zarr_index(i)) for i in range(len(reader))]
    for image_id, z in jobs:
        if image_id in slots and slots[image_id] != z:
            report.problems.append(Problem(image_id, f"index says zarr_index {z}, slot log says {slots[image_id]}"))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="verify", unit="sample")
    if workers <= 1 or len(jobs) < 2:
        for image_id, z in jobs:
            report.problems += _check_sample(loc.url, image_id, z, levels, check_pyramid)
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_check_sample, loc.url, image_id, z, levels, check_pyramid) for image_id, z in jobs]
            for f in futures:  # in index order: deterministic reports
                report.problems += f.result()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()

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
