"""Crash- and concurrency-safe sample writer (protocol in :mod:`s2r_data.store`)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .checks import sample_problems
from .claims import DEFAULT_LEASE_S, flock, holds_lease, image_claim
from .create import StoreMismatchError, ensure_store, record_committed_count
from .index import compact_index, make_index_row, read_index, row_table, valid_image_id, write_index_table
from .pyramid import downsample_sample
from .schema import DEFAULT_CODEC, CodecChoice, StoreSpec
from .slots import SlotManifest, ensure_capacity
from .urls import StoreLocation, location

__all__ = [
    "DatasetWriter",
    "SampleValidationError",
    "SampleExistsError",
    "SampleWriteError",
    "SampleBusyError",
    "SlotMismatchError",
    "StoreMismatchError",
    "store_lock",
    "compact",
    "allocate_slots",
]


class SampleValidationError(ValueError):
    """A sample handed to :meth:`DatasetWriter.write_sample` is malformed; nothing was written."""


class SampleExistsError(FileExistsError):
    pass


class SampleWriteError(OSError):
    """A sample's arrays did not read back as written (storage fault); it was not committed."""


class SampleBusyError(RuntimeError):
    """Another writer (another owner's live lease) is writing this image right now; it was left to
    that writer (object stores only)."""


class SlotMismatchError(ValueError):
    """The slot a caller expected for an image is not the one the store's slot manifest gives it."""


def store_lock(loc: StoreLocation):
    """The store-wide lock of local stores (store creation, compaction, split assignment); a no-op
    for object stores, which coordinate by conditional writes alone (:mod:`.conditional`)."""
    if not loc.is_local:
        return contextlib.nullcontext()
    return flock(Path(loc.path("_s2r/lock")))


def allocate_slots(url: str | os.PathLike, image_ids: list[str], *, spec: StoreSpec, owner: str = "",
                   initial_capacity: int = 64) -> dict[str, int]:
    """What a coordinator (the ``build-dataset`` flow) does before dispatching writers: create the
    store if needed, allocate a slot for every id not yet allocated (one manifest segment, ids in
    the given order; :mod:`.slots`), and grow the arrays to hold them all. Returns id → slot.
    Safe to run from several flow runs at once; writers then find their slots in the manifest."""
    loc = location(url)
    with store_lock(loc):
        ensure_store(loc, spec, initial_capacity)
    ids = [valid_image_id(i) for i in image_ids]
    manifest = SlotManifest(loc)
    slots = manifest.allocate(ids, owner=owner)
    ensure_capacity(loc, [a.name for a in spec.arrays()], manifest.end)
    return slots


def compact(url: str | os.PathLike) -> int:
    """Merge index fragments into ``index.parquet`` (compare-and-swap; local stores also under the
    store lock), so that it alone lists every committed sample, and record that count in the group
    attributes; returns it."""
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
    sample-axis size (grown geometrically by compare-and-swap); ``verify_writes``: read every
    sample back after writing and commit it only if it equals what was written (the write-time
    verification that lets ``build-dataset`` skip re-reading old samples); ``owner``: who holds
    this writer's leases on object stores (the flow run's id, so that a batch re-run after its
    worker died takes over its own leases; default a random id); ``lease_s``/``busy_wait_s``: how
    long a lease holds, and how long to wait for another owner's lease before giving the image up
    (:class:`SampleBusyError`; default: the lease plus 30 s, so a dead writer's lease expires first).
    Any number of processes on any number of machines may hold writers on one store at once (local
    paths, NFS, ``s3://``: see :mod:`.conditional`).
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
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        busy_wait_s: float | None = None,
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
        self.owner = owner or f"writer-{uuid.uuid4().hex}"
        self.lease_s = float(lease_s)
        # by default outwait a dead writer's lease: a rerun then writes every image
        self.busy_wait_s = self.lease_s + 30.0 if busy_wait_s is None else float(busy_wait_s)
        self._manifest = SlotManifest(self.loc)
        self._pool = None
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

    def _grow(self, needed: int) -> None:
        if self._capacity >= needed:  # capacities only ever grow: a cached value is a lower bound
            return
        self._capacity = ensure_capacity(self.loc, [spec.name for spec in self._specs], needed)

    def _allocate(self, image_id: str, expected: int | None = None) -> int:
        slot = self._manifest.slot_of(image_id)  # a crashed earlier attempt or the flow allocated it
        if slot is None and expected is not None:
            self._manifest.refresh()
            slot = self._manifest.slot_of(image_id)
            if slot is None:
                raise SlotMismatchError(
                    f"image {image_id}: expected in slot {expected}, but {self.loc.url} has allocated no slot for it "
                    "(slots are allocated by the coordinator before writers are dispatched: allocate_slots)"
                )
        if slot is None:
            slot = self._manifest.allocate([image_id], owner=self.owner)[image_id]
        if expected is not None and slot != expected:
            raise SlotMismatchError(f"image {image_id}: expected in slot {expected}, the slot manifest of {self.loc.url} says {slot}")
        self._grow(slot + 1)
        return slot

    # -- queries -----------------------------------------------------------------------------
    def _refresh_committed(self) -> None:
        stamp = self.loc.stamp("index.parquet")
        if stamp != self._index_mtime:
            self._committed = set(read_index(self.loc).column("image_id").to_pylist())
            self._index_mtime = stamp

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
        """Hold the image's claim (:mod:`.claims`); while another owner's live lease holds it, wait
        up to ``busy_wait_s`` (it is probably committing the image: then there is nothing to do)."""
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            with image_claim(self.loc, image_id, self.owner, lease_s=self.lease_s) as held:
                if held:
                    yield
                    return
            if self.has(image_id):
                yield  # committed by the other writer meanwhile: write_sample sees it and stops
                return
            if time.monotonic() > deadline:
                raise SampleBusyError(
                    f"image {image_id}: another writer holds its lease in {self.loc.url} since more than "
                    f"{self.busy_wait_s:g} s; left to it (a rerun writes it if that writer died)"
                )
            time.sleep(0.5)

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
        slot: int | None = None,
    ) -> int:
        """Validate, write and commit one sample; returns its ``zarr_index``.

        ``sim`` (7,H,W) float (DiffCol 3, world normal 3, depth m 1, sky = 0), ``label`` (1,H,W)
        class index, ``real`` (3,H,W) uint8, ``sky_mask``/``valid_mask`` (1,H,W) bool or 0/1;
        ``row``: index columns (``schema.ROW_FIELDS_FROM_CALLER``, and optionally ``pose``).
        An already committed id raises :class:`SampleExistsError` unless ``exist_ok`` (then it is
        left as is). Nothing is visible to readers until the index fragment is renamed into place.
        ``slot``: the slot the coordinator allocated (:func:`allocate_slots`); checked against the
        manifest (:class:`SlotMismatchError`). Without it, an unallocated id gets the next slot.
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
            slot = self._allocate(image_id, slot)
            levels = [(sim16, label8, real8, mask8)]
            for _ in range(self.levels):
                levels.append(downsample_sample(*levels[-1]))
            written = []
            for level, (s, l, r, m) in enumerate(levels):
                sfx = "" if level == 0 else f"_l{level}"
                written += [(name + sfx, data) for name, data in (("sim", s), ("label", l), ("real", r), ("mask", m))]
            arrays = {name: self._array(name, slot + 1) for name, _ in written}

            def put(item: tuple[str, np.ndarray]) -> None:
                arrays[item[0]][slot] = item[1]  # one whole shard per write

            list(self._map(put, written))
            if self.verify_writes:
                self._read_back(image_id, slot, written)
            full = make_index_row(image_id=image_id, city=self.city, zarr_index=slot, row=row or {})
            if not holds_lease(self.loc, image_id, self.owner):
                raise SampleBusyError(
                    f"image {image_id}: this writer's lease in {self.loc.url} expired while writing (slower than "
                    f"lease_s={self.lease_s:g} s); not committed, another writer may have taken it over"
                )
            write_index_table(self.loc, f"index.d/{image_id}.parquet", row_table([full]))  # commit
            self._committed.add(image_id)
        return slot

    def _read_back(self, image_id: str, slot: int, written: list[tuple[str, np.ndarray]]) -> None:
        """Write-time verification: every array's row ``slot`` must decode to exactly what was
        written. With the in-memory checks of :meth:`_validate` (``checks.sample_problems``) and a
        pyramid computed from level 0, this covers what :func:`s2r_data.store.verify` checks per
        sample, so a committed sample needs no second read to be known good."""
        arrays = {name: self._array(name, slot + 1) for name, _ in written}

        def get(item: tuple[str, np.ndarray]) -> Any:
            try:
                return arrays[item[0]][slot]
            except Exception as e:  # noqa: BLE001 - decode errors, missing shards, I/O errors
                return e

        for (name, data), got in zip(written, self._map(get, written)):
            if isinstance(got, Exception):
                raise SampleWriteError(
                    f"image {image_id}: {name} at zarr_index {slot} in {self.loc.url} cannot be read back "
                    f"({type(got).__name__}: {got}); not committed — check the storage and rerun"
                ) from got
            if got.shape != data.shape or not np.array_equal(got, data):
                n_bad = int((got != data).sum()) if got.shape == data.shape else got.size
                raise SampleWriteError(
                    f"image {image_id}: {name} at zarr_index {slot} in {self.loc.url} reads back different "
                    f"from what was written ({n_bad} values); not committed — check the storage and rerun"
                )

    def _map(self, fn, items):
        """``map`` over a sample's arrays: in threads on object stores (one request each, latency
        bound), in order locally."""
        if self.loc.is_local or len(items) < 2:
            return map(fn, items)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s2r-store-io")
        return self._pool.map(fn, items)

    # -- lifecycle ---------------------------------------------------------------------------
    def compact(self) -> int:
        """See :func:`compact`."""
        return _compact(self.loc)

    def close(self) -> None:
        self._arrays.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
