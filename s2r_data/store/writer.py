"""Crash- and concurrency-safe sample writer (protocol in :mod:`s2r_data.store`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .checks import sample_problems
from .create import StoreMismatchError, ensure_store, record_committed_count
from .index import compact_index, make_index_row, read_index, row_table, valid_image_id, write_index_table
from .pyramid import downsample_sample
from .schema import DEFAULT_CODEC, CodecChoice, StoreSpec
from .urls import StoreLocation, location

__all__ = [
    "DatasetWriter",
    "SampleValidationError",
    "SampleExistsError",
    "SampleWriteError",
    "StoreMismatchError",
    "store_lock",
    "compact",
]

_BUSY_BUCKETS = 256


class SampleValidationError(ValueError):
    """A sample handed to :meth:`DatasetWriter.write_sample` is malformed; nothing was written."""


class SampleExistsError(FileExistsError):
    pass


class SampleWriteError(OSError):
    """A sample's arrays did not read back as written (storage fault); it was not committed."""


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def store_lock(loc: StoreLocation):
    """The store-wide lock (capacity growth, slot allocation, compaction, split assignment)."""
    if not loc.is_local:
        raise NotImplementedError(
            f"{loc.url}: writing needs a local path (fcntl locks); build locally and copy the "
            "directory to object storage when done"
        )
    return _flock(Path(loc.path("_s2r/lock")))


def _parse_slot_lines(text: str, slots: dict[str, int]) -> None:
    """Lines ``"<image_id> <slot> ;"``; anything else (a torn line left by a crash) is ignored."""
    for line in text.split("\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[2] == ";" and parts[1].isdigit():
            slots.setdefault(parts[0], int(parts[1]))


def _read_slot_log(loc: StoreLocation) -> dict[str, int]:
    """image_id → zarr_index from the append-only allocation log."""
    slots: dict[str, int] = {}
    _parse_slot_lines((loc.read_bytes("_s2r/slots.log") or b"").decode("utf-8", "replace"), slots)
    return slots


class _SlotLog:
    """Incremental reader/appender of ``_s2r/slots.log`` (call only under the store lock)."""

    def __init__(self, loc: StoreLocation):
        self.path = Path(loc.path("_s2r/slots.log"))
        self.slots: dict[str, int] = {}
        self.next_slot = 0
        self._offset = 0

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # parse complete lines only
        _parse_slot_lines(data[:end].decode("utf-8", "replace"), self.slots)
        self._offset += end
        self.next_slot = max(self.slots.values(), default=-1) + 1

    def append(self, image_id: str, slot: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            prefix = b""
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    prefix = b"\n"  # end a torn line left by a crash (it stays ignored)
            fh.write(prefix + f"{image_id} {slot} ;\n".encode())
            fh.flush()
            os.fsync(fh.fileno())
        self.refresh()


def compact(url: str | os.PathLike) -> int:
    """Merge index fragments into ``index.parquet`` under the store lock, so that it alone lists
    every committed sample, and record that count in the group attributes; returns it."""
    return _compact(location(url))


def _compact(loc: StoreLocation) -> int:
    with store_lock(loc):
        n = compact_index(loc)
        record_committed_count(loc, n)
        return n


def _as_chw(name: str, a: Any, channels: int, H: int, W: int, image_id: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise SampleValidationError(f"image {image_id}: {name} must be a numpy array, got {type(a).__name__}")
    if a.ndim == 2 and channels == 1:
        a = a[None]
    if a.shape != (channels, H, W):
        raise SampleValidationError(
            f"image {image_id}: {name} has shape {a.shape}, expected {(channels, H, W)} (channels first)"
        )
    return a


class DatasetWriter:
    """Writes samples into the dataset at ``url`` (created on first use).

    ``height``/``width``: full-resolution panorama size (2:1); ``city``: stored in the attributes
    and every index row; ``pyramid_levels``: extra half-resolution levels stored per sample;
    ``chunk_px``: inner chunk side (the read unit of crops); ``initial_capacity``: first
    sample-axis size (grown geometrically under the store lock); ``verify_writes``: read every
    sample back after writing and commit it only if it equals what was written (the write-time
    verification that lets ``build-dataset`` skip re-reading old samples).
    Several processes may hold writers on the same local store at once.
    """

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        height: int,
        width: int,
        city: str,
        pyramid_levels: int = 1,
        chunk_px: int = 256,
        codec: CodecChoice = DEFAULT_CODEC,
        initial_capacity: int = 64,
        verify_writes: bool = True,
    ):
        self.spec = StoreSpec(int(height), int(width), str(city), int(pyramid_levels), int(chunk_px), codec)
        self.loc = location(url)
        self.height, self.width, self.city = self.spec.height, self.spec.width, self.spec.city
        self.levels, self.chunk_px, self.codec = self.spec.pyramid_levels, self.spec.chunk_px, codec
        self.verify_writes = bool(verify_writes)
        self._specs = self.spec.arrays()
        self._arrays: dict[str, Any] = {}
        self._committed: set[str] = set()
        self._index_mtime: float | None = None
        self._capacity = 0
        self._slot_log = _SlotLog(self.loc)
        self._ensure_store(initial_capacity)

    # -- setup -------------------------------------------------------------------------------
    def _ensure_store(self, capacity: int) -> None:
        with store_lock(self.loc):
            ensure_store(self.loc, self.spec, capacity)

    def _array(self, name: str, min_len: int):
        import zarr

        a = self._arrays.get(name)
        if a is None or a.shape[0] < min_len:  # stale handle after another process grew it
            a = zarr.open_array(self.loc.zarr_store(read_only=False), path=name, mode="r+")
            self._arrays[name] = a
        if a.shape[0] < min_len:
            raise RuntimeError(f"{name}: capacity {a.shape[0]} < {min_len} after growth (store modified?)")
        return a

    def _grow_locked(self, needed: int) -> None:
        import zarr

        if self._capacity >= needed:  # capacities only ever grow: a cached value is a lower bound
            return
        caps = []
        for spec in self._specs:
            a = zarr.open_array(self.loc.zarr_store(read_only=False), path=spec.name, mode="r+")
            if a.shape[0] < needed:
                a.resize((max(needed, 2 * a.shape[0]),) + a.shape[1:])
            caps.append(a.shape[0])
            self._arrays[spec.name] = a
        self._capacity = min(caps)

    def _allocate(self, image_id: str) -> int:
        with store_lock(self.loc):
            self._slot_log.refresh()
            slot = self._slot_log.slots.get(image_id)  # a crashed earlier attempt: reuse its slot
            if slot is None:
                slot = self._slot_log.next_slot
                self._slot_log.append(image_id, slot)
            self._grow_locked(slot + 1)
        return slot

    # -- queries -----------------------------------------------------------------------------
    def _refresh_committed(self) -> None:
        p = Path(self.loc.path("index.parquet"))
        mtime = p.stat().st_mtime if p.exists() else None
        if mtime != self._index_mtime:
            self._committed = set(read_index(self.loc).column("image_id").to_pylist())
            self._index_mtime = mtime

    def has(self, image_id: str) -> bool:
        """True when ``image_id`` is committed (fully written and indexed)."""
        image_id = valid_image_id(image_id)
        if self.loc.exists(f"index.d/{image_id}.parquet"):
            return True
        self._refresh_committed()
        return image_id in self._committed

    def existing_ids(self) -> set[str]:
        """All committed image ids (any writer)."""
        return set(read_index(self.loc).column("image_id").to_pylist())

    # -- writing -----------------------------------------------------------------------------
    def _validate(self, image_id, sim, label, real, sky_mask, valid_mask):
        H, W = self.height, self.width
        sim = _as_chw("sim", sim, 7, H, W, image_id)
        label = _as_chw("label", label, 1, H, W, image_id)
        real = _as_chw("real", real, 3, H, W, image_id)
        sky_mask = _as_chw("sky_mask", sky_mask, 1, H, W, image_id)
        valid_mask = _as_chw("valid_mask", valid_mask, 1, H, W, image_id)
        if not np.issubdtype(sim.dtype, np.floating):
            raise SampleValidationError(f"image {image_id}: sim must be floating point (stored float16), got {sim.dtype}")
        if not np.isfinite(sim).all():
            bad = [i for i in range(7) if not np.isfinite(sim[i]).all()]
            raise SampleValidationError(f"image {image_id}: sim has non-finite values in channels {bad} (0-2 DiffCol, 3-5 normal, 6 depth)")
        with np.errstate(over="ignore"):
            sim16 = sim.astype(np.float16)
        if not np.isfinite(sim16).all():
            raise SampleValidationError(f"image {image_id}: sim overflows float16 (|value| > 65504; depth in metres?)")
        if not np.issubdtype(label.dtype, np.integer):
            raise SampleValidationError(f"image {image_id}: label must be an integer class index array, got {label.dtype}")
        if label.min(initial=0) < 0 or label.max(initial=0) > 255:
            raise SampleValidationError(f"image {image_id}: label values outside 0..255")
        if real.dtype != np.uint8:
            raise SampleValidationError(f"image {image_id}: real must be uint8 RGB, got {real.dtype}")
        masks = []
        for name, m in (("sky_mask", sky_mask), ("valid_mask", valid_mask)):
            if m.dtype != np.bool_:
                if not np.issubdtype(m.dtype, np.integer) or m.min(initial=0) < 0 or m.max(initial=0) > 1:
                    raise SampleValidationError(f"image {image_id}: {name} must be bool or 0/1 integers, got {m.dtype}")
            masks.append(m.astype(np.uint8))
        label8 = label.astype(np.uint8)
        real8 = np.ascontiguousarray(real)
        mask = np.concatenate(masks, axis=0)
        problems = sample_problems(sim16, label8, real8, mask)
        if problems:
            raise SampleValidationError(f"image {image_id}: " + "; ".join(problems))
        return sim16, label8, real8, mask

    @contextlib.contextmanager
    def _busy(self, image_id: str):
        bucket = int(hashlib.sha1(image_id.encode()).hexdigest()[:8], 16) % _BUSY_BUCKETS
        with _flock(Path(self.loc.path(f"_s2r/busy/{bucket:03d}.lock"))):
            yield

    def write_sample(
        self,
        image_id: str,
        sim: np.ndarray,
        label: np.ndarray,
        real: np.ndarray,
        sky_mask: np.ndarray,
        valid_mask: np.ndarray,
        row: Mapping[str, Any] | None = None,
        *,
        exist_ok: bool = False,
    ) -> int:
        """Validate, write and commit one sample; returns its ``zarr_index``.

        ``sim`` (7,H,W) float (DiffCol 3, world normal 3, depth m 1, sky = 0), ``label`` (1,H,W)
        class index, ``real`` (3,H,W) uint8, ``sky_mask``/``valid_mask`` (1,H,W) bool or 0/1;
        ``row``: index columns (``schema.ROW_FIELDS_FROM_CALLER``, and optionally ``pose``).
        An already committed id raises :class:`SampleExistsError` unless ``exist_ok`` (then it is
        left as is). Nothing is visible to readers until the index fragment is renamed into place.
        """
        image_id = valid_image_id(image_id)
        sim16, label8, real8, mask8 = self._validate(image_id, sim, label, real, sky_mask, valid_mask)
        with self._busy(image_id):
            if self.has(image_id):
                if exist_ok:
                    self._refresh_committed()
                    t = read_index(self.loc)
                    ids = t.column("image_id").to_pylist()
                    return int(t.column("zarr_index")[ids.index(image_id)].as_py())
                raise SampleExistsError(f"image {image_id} is already in {self.loc.url} (pass exist_ok=True to skip)")
            # validate the index row before touching the arrays
            make_index_row(image_id=image_id, city=self.city, zarr_index=0, row=row or {})
            slot = self._allocate(image_id)
            levels = [(sim16, label8, real8, mask8)]
            for _ in range(self.levels):
                levels.append(downsample_sample(*levels[-1]))
            written = []
            for level, (s, l, r, m) in enumerate(levels):
                sfx = "" if level == 0 else f"_l{level}"
                for name, data in (("sim", s), ("label", l), ("real", r), ("mask", m)):
                    self._array(name + sfx, slot + 1)[slot] = data  # one whole shard per write
                    written.append((name + sfx, data))
            if self.verify_writes:
                self._read_back(image_id, slot, written)
            full = make_index_row(image_id=image_id, city=self.city, zarr_index=slot, row=row or {})
            write_index_table(self.loc, f"index.d/{image_id}.parquet", row_table([full]))  # commit
            self._committed.add(image_id)
        return slot

    def _read_back(self, image_id: str, slot: int, written: list[tuple[str, np.ndarray]]) -> None:
        """Write-time verification: every array's row ``slot`` must decode to exactly what was
        written. With the in-memory checks of :meth:`_validate` (``checks.sample_problems``) and a
        pyramid computed from level 0, this covers what :func:`s2r_data.store.verify` checks per
        sample, so a committed sample needs no second read to be known good."""
        for name, data in written:
            try:
                got = self._array(name, slot + 1)[slot]
            except Exception as e:  # noqa: BLE001 - decode errors, missing shards, I/O errors
                raise SampleWriteError(
                    f"image {image_id}: {name} at zarr_index {slot} in {self.loc.url} cannot be read back "
                    f"({type(e).__name__}: {e}); not committed — check the storage and rerun"
                ) from e
            if got.shape != data.shape or not np.array_equal(got, data):
                n_bad = int((got != data).sum()) if got.shape == data.shape else got.size
                raise SampleWriteError(
                    f"image {image_id}: {name} at zarr_index {slot} in {self.loc.url} reads back different "
                    f"from what was written ({n_bad} values); not committed — check the storage and rerun"
                )

    # -- lifecycle ---------------------------------------------------------------------------
    def compact(self) -> int:
        """See :func:`compact`."""
        return _compact(self.loc)

    def close(self) -> None:
        self._arrays.clear()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
