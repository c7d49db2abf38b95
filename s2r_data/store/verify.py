"""Full consistency check of a dataset: every committed sample, the index and the store agree."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .checks import sample_problems
from .create import GROUP_METADATA, creation_problems
from .index import read_index
from .pyramid import downsample_sample
from .reader import DatasetReader
from .schema import array_specs, level_name
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
    n_checked: int = 0  # samples whose content was read and checked
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_ids(self) -> set[str]:
        return {p.image_id for p in self.problems if p.image_id}

    def summary(self) -> str:
        checked = "" if self.n_checked == self.n_samples else f" ({self.n_checked} content-checked)"
        lines = [f"{self.url}: {self.n_samples} samples{checked}, {len(self.problems)} problems, {len(self.warnings)} warnings"]
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


def _open_checked(loc, report: VerifyReport) -> tuple[Any, dict[str, Any]] | None:
    """The group and its ``s2r_dataset`` attributes, or None after reporting why not."""
    import zarr

    if not loc.exists(GROUP_METADATA):
        report.problems += [Problem("", m) for m in creation_problems(loc, None)]
        return None
    try:
        group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
        attrs = dict(group.attrs).get("s2r_dataset")
    except Exception as e:  # noqa: BLE001 - corrupt or unreadable metadata
        report.problems.append(Problem("", f"cannot open the Zarr group {GROUP_METADATA}: {type(e).__name__}: {e}"))
        return None
    bad = None
    if not isinstance(attrs, dict):
        bad = "has no 's2r_dataset' attributes (not an s2r dataset, or its metadata was replaced)"
    else:
        try:
            H, W, levels = int(attrs["height"]), int(attrs["width"]), int(attrs.get("pyramid_levels", 0))
            if H <= 0 or W != 2 * H or levels < 0 or H % (1 << levels):
                bad = f"has inconsistent size attributes height={H}, width={W}, pyramid_levels={levels}"
        except (KeyError, TypeError, ValueError) as e:
            bad = f"has unusable 's2r_dataset' attributes ({type(e).__name__}: {e})"
    if bad:
        report.problems.append(Problem("", f"the group {GROUP_METADATA} {bad}"))
        return None
    return group, attrs


def _check_arrays(loc, group, attrs: dict[str, Any], report: VerifyReport) -> int | None:
    """Every expected array exists with its dtype, channels and spatial shape; returns the
    smallest capacity (slots) of the arrays that opened."""
    caps = []
    report.problems += [Problem("", m) for m in creation_problems(loc, attrs)]
    H, W, levels = int(attrs["height"]), int(attrs["width"]), int(attrs.get("pyramid_levels", 0))
    for spec in array_specs(H, W, levels, int(attrs.get("chunk_px", 256))):
        if not loc.exists(f"{ZARR_DIR}/{spec.name}/zarr.json"):
            continue  # reported above
        try:
            arr = group[spec.name]
        except Exception as e:  # noqa: BLE001
            report.problems.append(Problem("", f"array {spec.name}: cannot open its metadata: {type(e).__name__}: {e}"))
            continue
        caps.append(int(arr.shape[0]))
        want = (spec.channels, spec.height, spec.width)
        if len(arr.shape) != 4 or tuple(arr.shape[1:]) != want or str(arr.dtype) != spec.dtype:
            report.problems.append(Problem(
                "", f"array {spec.name}: shape {tuple(arr.shape)} dtype {arr.dtype}, expected (N, {want[0]}, {want[1]}, "
                f"{want[2]}) {spec.dtype}"))
    return min(caps, default=None)


def verify(
    url: str | os.PathLike,
    *,
    check_pyramid: bool = True,
    progress: bool = False,
    workers: int = 1,
    samples: Iterable[str] | None = None,
) -> VerifyReport:
    """Check the store and its committed samples; report problems, never raise on a damaged store.

    Always: the store is complete (group metadata, every array with its shape and dtype), every
    index file reads, no image is listed twice or shares a ``zarr_index``, the index agrees with
    the slot manifest (:mod:`.slots`). Per sample (all committed samples, or only the ids in
    ``samples``): shapes, finite values, value ranges, sky ⇔ label 0 ⇔ depth 0, pyramid levels =
    downsampled level 0.
    ``samples=()`` checks no sample content (the writer verified each sample when it wrote it).
    ``workers`` > 1 checks samples in that many processes."""
    loc = location(url)
    report = VerifyReport(url=loc.url)
    try:
        _verify_into(report, loc, check_pyramid, progress, workers, None if samples is None else set(samples))
    except Exception as e:  # noqa: BLE001 - a damaged store must give a report, not a traceback
        report.problems.append(Problem("", f"verify could not finish: {type(e).__name__}: {e}"))
    return report


def _verify_into(report: VerifyReport, loc, check_pyramid: bool, progress: bool, workers: int,
                 wanted: set[str] | None) -> None:
    opened = _open_checked(loc, report)
    if opened is None:
        return
    group, attrs = opened
    capacity = _check_arrays(loc, group, attrs, report)

    def unreadable(rel_path: str, e: Exception) -> None:
        image_id = rel_path[len("index.d/"):-len(".parquet")] if rel_path.startswith("index.d/") else ""
        report.problems.append(Problem(image_id, f"index file {rel_path} is unreadable: {type(e).__name__}: {e}"))

    raw = read_index(loc, dedupe=False, on_error=unreadable)
    ids = raw.column("image_id").to_pylist()
    zidx = raw.column("zarr_index").to_pylist()
    by_id: dict[str, set[int]] = {}
    for i, z in zip(ids, zidx):
        by_id.setdefault(i, set()).add(z)
    for i, zs in by_id.items():
        if len(zs) > 1:
            report.problems.append(Problem(i, f"listed with several zarr_index values {sorted(zs)}"))
    reader = DatasetReader(loc.url, index=read_index(loc, on_error=lambda *_: None))
    zcount = Counter(reader.index.column("zarr_index").to_pylist())
    for i, z in zip(reader.image_ids, reader.index.column("zarr_index").to_pylist()):
        if zcount[z] > 1:
            report.problems.append(Problem(i, f"shares zarr_index {z} with another image"))

    from .slots import SlotManifest, SlotManifestError

    manifest = SlotManifest(loc)
    manifest._legacy_checked = True  # verify reads; it never imports (writes) a legacy slot log
    try:
        slots = manifest.refresh().slots
    except (SlotManifestError, ValueError) as e:
        report.problems.append(Problem("", f"slot manifest unreadable: {e}"))
        slots = {}
    if not slots and manifest.n_segments == 0:
        from .slots import LEGACY_SLOT_LOG, _parse_legacy_lines

        _parse_legacy_lines((loc.read_bytes(LEGACY_SLOT_LOG) or b"").decode("utf-8", "replace"), slots)
    levels = int(attrs.get("pyramid_levels", 0))
    report.n_samples = len(reader)

    jobs = [(reader.image_ids[i], reader.zarr_index(i)) for i in range(len(reader))]
    for image_id, z in jobs:
        if capacity is not None and not 0 <= z < capacity:
            report.problems.append(Problem(image_id, f"zarr_index {z} is outside the arrays' {capacity} slots"))
        if image_id in slots and slots[image_id] != z:
            report.problems.append(Problem(image_id, f"index says zarr_index {z}, slot manifest says {slots[image_id]}"))
        elif manifest.n_segments and image_id not in slots:
            report.problems.append(Problem(image_id, f"committed in zarr_index {z}, but the slot manifest never allocated it"))
    if wanted is not None:
        unknown = sorted(wanted - set(reader.image_ids))
        if unknown:
            report.problems += [Problem(i, "asked to check it, but it is not committed") for i in unknown]
        jobs = [(i, z) for i, z in jobs if i in wanted]
    report.n_checked = len(jobs)
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
