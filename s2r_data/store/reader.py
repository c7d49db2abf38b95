"""Read side: :func:`open_dataset` → :class:`DatasetReader` (committed samples only)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .index import read_index
from .schema import level_name
from .shardio import ShardedArrayReader
from .urls import ZARR_DIR, StoreLocation, location

__all__ = ["DatasetReader", "open_dataset", "DatasetNotFoundError", "SHARD_CACHE_ENV"]

SHARD_CACHE_ENV = "S2R_SHARD_CACHE_DIR"  # local directory caching a remote store's shards (crop reads)


class DatasetNotFoundError(FileNotFoundError):
    pass


class DatasetReader:
    """A read-only view of the committed samples at open time.

    ``index`` is a pyarrow Table sorted by ``zarr_index``; sample ``i`` is row ``i``.
    Picklable: holds only the URL and the index; zarr handles are opened lazily per process.
    ``cache_dir`` (default ``$S2R_SHARD_CACHE_DIR``): for a remote store, a local directory where
    the crop reads (:meth:`read_box`, :meth:`read_chunks`) keep each sample's shards after the
    first download (:mod:`.shardio`); shared by processes; delete it any time.
    """

    def __init__(self, url: str | os.PathLike, index: pa.Table | None = None, *, cache_dir: str | os.PathLike | None = None):
        self.loc: StoreLocation = location(url)
        self.cache_dir = cache_dir if cache_dir is not None else (os.environ.get(SHARD_CACHE_ENV) or None)
        if not self.loc.exists(f"{ZARR_DIR}/zarr.json"):
            raise DatasetNotFoundError(f"no s2r dataset at {self.loc.url} (expected {ZARR_DIR}/zarr.json); build it first")
        self.index: pa.Table = read_index(self.loc) if index is None else index
        self._zarr_index = np.asarray(self.index.column("zarr_index").to_numpy(), dtype=np.int64)
        self._group = None
        self._fast: dict[str, ShardedArrayReader] = {}

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_group"] = None
        d["_fast"] = {}
        return d

    # -- metadata ----------------------------------------------------------------------------
    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(self.loc.zarr_store(read_only=True), mode="r")
        return self._group

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs).get("s2r_dataset", {})

    @property
    def height(self) -> int:
        return int(self.attrs["height"])

    @property
    def width(self) -> int:
        return int(self.attrs["width"])

    @property
    def pyramid_levels(self) -> int:
        return int(self.attrs.get("pyramid_levels", 0))

    def __len__(self) -> int:
        return self.index.num_rows

    @property
    def image_ids(self) -> list[str]:
        return self.index.column("image_id").to_pylist()

    def zarr_index(self, i: int) -> int:
        return int(self._zarr_index[i])

    def row(self, i: int) -> dict[str, Any]:
        return {k: v[0] for k, v in self.index.slice(i, 1).to_pydict().items()}

    # -- data --------------------------------------------------------------------------------
    def read(
        self,
        i: int,
        array: str = "sim",
        channels: int | slice | Sequence[int] | None = None,
        y: slice = slice(None),
        x: slice = slice(None),
        *,
        level: int = 0,
    ) -> np.ndarray:
        """Region of sample ``i`` (row of :attr:`index`): ``array`` ∈ sim/label/real/mask,
        ``channels`` (int, slice or list; None = all), rows ``y`` and columns ``x`` at ``level``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range (dataset has {len(self)} committed samples)")
        arr = self.group[level_name(array, level)]
        ch = slice(None) if channels is None else channels
        if isinstance(ch, (list, tuple)):
            return arr.oindex[self.zarr_index(i), list(ch), y, x]
        return arr[self.zarr_index(i), ch, y, x]

    def fast_reader(self, array: str, level: int = 0) -> ShardedArrayReader | None:
        """Direct shard reader for crops (None if the layout is not the writer's default)."""
        name = level_name(array, level)
        r = self._fast.get(name)
        if r is None:
            r = ShardedArrayReader(self.loc.array_url(name), fs=self.loc.fs, cache_dir=self.cache_dir)
            self._fast[name] = r
        return r if r.supported else None

    def read_chunks(self, i: int, array: str, level: int, chunk_rows, chunk_cols) -> np.ndarray:
        """Chunk-aligned region (C, len(rows)·cy, len(cols)·cx); columns may wrap the seam."""
        fast = self.fast_reader(array, level)
        if fast is not None:
            return fast.read_chunks(self.zarr_index(i), chunk_rows, chunk_cols)
        arr = self.group[level_name(array, level)]
        cy, cx = arr.chunks[2], arr.chunks[3]
        rows = np.concatenate([np.arange(r * cy, (r + 1) * cy) for r in chunk_rows])
        cols = np.concatenate([np.arange(c * cx, (c + 1) * cx) for c in chunk_cols])
        return arr.oindex[self.zarr_index(i), :, rows, cols]

    def read_box(self, i: int, array: str, level: int, chunk_rows, chunk_cols, box, *, channels=None) -> np.ndarray:
        """``box = (y0, y1, x0, x1)`` of the chunk region (see :meth:`read_chunks`), only
        ``channels`` (default all): only the overlapping parts of the chunks are copied — the crop
        loader's input."""
        fast = self.fast_reader(array, level)
        if fast is not None:
            return fast.read_box(self.zarr_index(i), chunk_rows, chunk_cols, box, channels=channels)
        y0, y1, x0, x1 = box
        region = self.read_chunks(i, array, level, chunk_rows, chunk_cols)[:, y0:y1, x0:x1]
        return region if channels is None else region[list(channels)]

    def chunk_shape(self, array: str, level: int = 0) -> tuple[int, int]:
        fast = self.fast_reader(array, level)
        if fast is not None:
            return fast.chunk_hw
        a = self.group[level_name(array, level)]
        return a.chunks[2], a.chunks[3]


def open_dataset(url: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> DatasetReader:
    """Open the dataset at ``url`` (local path or fsspec URL) for reading (``cache_dir``: see
    :class:`DatasetReader`)."""
    return DatasetReader(url, cache_dir=cache_dir)
