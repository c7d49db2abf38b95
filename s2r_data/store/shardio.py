"""Fast region reads from this store's sharded Zarr v3 arrays, bypassing zarr-python's pipeline.

Why: zarr-python 3.1 costs ~0.7 ms of Python/asyncio overhead per inner chunk, ~10× the Blosc
decode time of a 256² chunk, which caps a perspective-crop loader far below its target
(docs/benchmarks-loader.md). The shard format is simple and specified (Zarr v3
``sharding_indexed``: inner chunks, then an index of (offset, nbytes) uint64 pairs in C order and a
crc32c): this module reads exactly the layout :class:`s2r_data.store.DatasetWriter` creates, and
says so (:attr:`ShardedArrayReader.supported`) when an array's metadata is anything else, so
callers fall back to zarr. Tests compare every read with zarr's.

Local paths use ``os.pread``; other URLs go through fsspec byte-range reads, or, with a
``cache_dir``, each shard (one sample of one array) is downloaded whole on first use into that
local directory (named by its URL and ETag, so a rewritten object is fetched again) and read
from there: a crop touches a few inner chunks of several arrays, one request each, which costs
far more on an object store than one download per sample (docs/benchmarks-scaleout.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = ["ShardedArrayReader"]

_EMPTY = np.uint64(2**64 - 1)


def _decoder(codec: dict):
    name = codec.get("name")
    if name == "blosc":
        from numcodecs import blosc

        return blosc.decompress
    if name == "zstd":
        from numcodecs.zstd import Zstd

        z = Zstd()
        return z.decode
    return None


def _channel_index(channels: Sequence[int] | None, n: int) -> slice | list[int]:
    """A slice when the channels are consecutive (a view, no gather copy), else the list."""
    if channels is None:
        return slice(None)
    ch = [int(c) for c in channels]
    if any(not 0 <= c < n for c in ch):
        raise IndexError(f"channels {ch} out of range for {n} channels")
    if ch and ch == list(range(ch[0], ch[0] + len(ch))):
        return slice(ch[0], ch[0] + len(ch))
    return ch


class ShardedArrayReader:
    """Reads chunk-aligned regions of one sample of a (N, C, H, W) array with shard = one sample."""

    def __init__(self, array_url: str, fs=None, cache_dir: str | os.PathLike | None = None):
        self.array_url = array_url.rstrip("/")
        self._fs = fs
        self._cache_dir = Path(cache_dir) if (cache_dir and fs is not None) else None
        self._cached: dict[str, str] = {}  # shard key → local copy (this process)
        meta = json.loads(self._read_all(f"{self.array_url}/zarr.json"))
        self.supported = False
        self.reason = ""
        try:
            self._parse(meta)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            self.reason = f"unsupported layout: {e}"

    # -- byte access -------------------------------------------------------------------------
    def _read_all(self, url: str) -> bytes:
        if self._fs is None:
            with open(url, "rb") as fh:
                return fh.read()
        return self._fs.cat_file(url)

    # -- metadata ----------------------------------------------------------------------------
    def _parse(self, meta: dict) -> None:
        shape = tuple(meta["shape"])
        if len(shape) != 4:
            raise ValueError("not 4-D")
        self.shape = shape
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.fill_value = meta.get("fill_value", 0) or 0
        shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        if shard != (1,) + shape[1:]:
            raise ValueError(f"shard shape {shard} is not one whole sample {(1,) + shape[1:]}")
        enc = meta["chunk_key_encoding"]
        if enc["name"] != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
            raise ValueError("chunk key encoding is not default '/'")
        (codec,) = meta["codecs"]
        if codec["name"] != "sharding_indexed":
            raise ValueError("not sharded")
        cfg = codec["configuration"]
        inner = tuple(cfg["chunk_shape"])
        if inner[:2] != (1, shape[1]):
            raise ValueError("inner chunk does not hold all channels of one sample")
        if shape[2] % inner[2] or shape[3] % inner[3]:
            raise ValueError("inner chunk does not divide the shard")
        self.chunk_hw = (inner[2], inner[3])
        self.grid_hw = (shape[2] // inner[2], shape[3] // inner[3])
        codecs = cfg["codecs"]
        if codecs[0]["name"] != "bytes" or codecs[0].get("configuration", {}).get("endian", "little") != "little":
            raise ValueError("inner codec is not little-endian bytes")
        self._decode_into = None
        if len(codecs) == 2 and codecs[1]["name"] == "blosc":
            from numcodecs import blosc

            self._decode_into = lambda src, dst: blosc.decompress(src, dst)
        if len(codecs) == 1:
            self._decode = lambda b: b
        elif len(codecs) == 2 and _decoder(codecs[1]) is not None:
            self._decode = _decoder(codecs[1])
        else:
            raise ValueError(f"inner codecs {[c['name'] for c in codecs]}")
        idx_codecs = [c["name"] for c in cfg["index_codecs"]]
        if idx_codecs not in (["bytes", "crc32c"], ["bytes"]):
            raise ValueError(f"index codecs {idx_codecs}")
        if cfg.get("index_location", "end") != "end":
            raise ValueError("index not at the end")
        self._n_inner = self.grid_hw[0] * self.grid_hw[1]
        self._index_nbytes = self._n_inner * 16 + (4 if idx_codecs[-1] == "crc32c" else 0)
        self.supported = True

    # -- reads -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open_shard(self, sample: int) -> Iterator[tuple[np.ndarray, Callable[[int, int], bytes] | None]]:
        """One sample's shard: yields (index (gy, gx, 2) of (offset, nbytes), pread(offset,
        nbytes) → bytes). A missing shard yields an index of empty chunks (read as fill, no pread)."""
        if not self.supported:
            raise RuntimeError(f"{self.array_url}: {self.reason}")
        key = f"{self.array_url}/c/{int(sample)}/0/0/0"
        parse = lambda raw: np.frombuffer(raw, "<u8", count=self._n_inner * 2).reshape(self.grid_hw + (2,))  # noqa: E731
        missing = lambda: (np.full(self.grid_hw + (2,), _EMPTY, dtype="<u8"), None)  # noqa: E731
        local = key if self._fs is None else self._local_copy(key)
        if local is not None:
            try:
                fd = os.open(local, os.O_RDONLY)
            except FileNotFoundError:
                yield missing()
                return
            try:
                size = os.fstat(fd).st_size
                yield parse(os.pread(fd, self._index_nbytes, size - self._index_nbytes)), (
                    lambda off, nb: os.pread(fd, int(nb), int(off))
                )
            finally:
                os.close(fd)
            return
        fs = self._fs
        try:
            size = int(fs.info(key)["size"])
        except FileNotFoundError:
            yield missing()
            return
        yield parse(fs.cat_file(key, start=size - self._index_nbytes, end=size)), (
            lambda off, nb: fs.cat_file(key, start=int(off), end=int(off + nb))
        )

    def _local_copy(self, key: str) -> str | None:
        """The cached local copy of remote shard ``key`` (downloaded now if needed); None without
        a cache; a path that does not exist when the shard is missing."""
        if self._cache_dir is None:
            return None
        path = self._cached.get(key)
        if path is not None:
            return path
        try:
            info = self._fs.info(key)
        except FileNotFoundError:
            return str(self._cache_dir / "missing-shard")
        version = info.get("ETag") or info.get("etag") or f"{info.get('size')}-{info.get('LastModified') or info.get('mtime')}"
        name = hashlib.sha256(f"{self._fs.protocol}|{key}|{version}".encode()).hexdigest()[:40] + ".shard"
        path = str(self._cache_dir / name)
        if not os.path.exists(path):
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.partial"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(self._fs.cat_file(key))
                os.replace(tmp, path)  # other processes may download the same shard: same bytes
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        self._cached[key] = path
        return path

    def _decode_chunk(self, raw: bytes, dst: np.ndarray) -> None:
        """Decode one inner chunk into ``dst`` (C, cy, cx)."""
        if self._decode_into is not None:
            self._decode_into(raw, dst)
        else:
            dst[...] = np.frombuffer(self._decode(raw), self.dtype).reshape(dst.shape)

    def read_blocks(self, sample: int, chunk_rows: Sequence[int], chunk_cols: Sequence[int]) -> np.ndarray:
        """Decode inner chunks straight into a block array (len(rows), len(cols), C, cy, cx)
        (no re-assembly copy). Missing chunks/shards read as the fill value."""
        C, (cy, cx) = self.shape[1], self.chunk_hw
        out = np.empty((len(chunk_rows), len(chunk_cols), C, cy, cx), dtype=self.dtype)
        with self._open_shard(sample) as (index, pread):
            for i, r in enumerate(chunk_rows):
                for j, c in enumerate(chunk_cols):
                    off, nb = index[r, c]
                    if off == _EMPTY:
                        out[i, j] = self.fill_value
                    else:
                        self._decode_chunk(pread(off, nb), out[i, j])
        return out

    def read_box(
        self,
        sample: int,
        chunk_rows: Sequence[int],
        chunk_cols: Sequence[int],
        box: tuple[int, int, int, int],
        *,
        channels: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Like :meth:`read_chunks` but returns only ``box = (y0, y1, x0, x1)`` of that region
        (region coordinates) and only ``channels`` (default all), decoding each chunk into a
        scratch buffer and copying just its overlap with the box (chunks outside the box are not
        decoded; a chunk column repeated to wrap the seam is copied, not decoded again)."""
        C, (cy, cx) = self.shape[1], self.chunk_hw
        y0, y1, x0, x1 = box
        ch = _channel_index(channels, C)
        n_ch = len(ch) if isinstance(ch, list) else len(range(C)[ch])
        out = np.empty((n_ch, y1 - y0, x1 - x0), dtype=self.dtype)
        scratch = np.empty((C, cy, cx), dtype=self.dtype)
        first_col: dict[int, int] = {}  # chunk column → its first position j in this read
        with self._open_shard(sample) as (index, pread):
            for i, r in enumerate(chunk_rows):
                ry0, ry1 = max(y0, i * cy), min(y1, (i + 1) * cy)
                if ry0 >= ry1:
                    continue
                for j, c in enumerate(chunk_cols):
                    rx0, rx1 = max(x0, j * cx), min(x1, (j + 1) * cx)
                    if rx0 >= rx1:
                        continue
                    dst = out[:, ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0]
                    j0 = first_col.setdefault(c, j)
                    if j0 != j and x0 <= rx0 - (j - j0) * cx and rx1 - (j - j0) * cx <= x1:
                        # a column repeated to wrap the seam, already in ``out``: copy, don't decode
                        sx0, sx1 = rx0 - (j - j0) * cx - x0, rx1 - (j - j0) * cx - x0
                        dst[...] = out[:, ry0 - y0 : ry1 - y0, sx0:sx1]
                        continue
                    off, nb = index[r, c]
                    if off == _EMPTY:
                        dst[...] = self.fill_value
                        continue
                    self._decode_chunk(pread(off, nb), scratch)
                    dst[...] = scratch[ch, ry0 - i * cy : ry1 - i * cy, rx0 - j * cx : rx1 - j * cx]
        return out

    def read_chunks(self, sample: int, chunk_rows: Sequence[int], chunk_cols: Sequence[int]) -> np.ndarray:
        """Decode inner chunks (rows × cols, both in the order given; cols may wrap) of one sample
        into one (C, len(rows)·cy, len(cols)·cx) array. Missing chunks/shards read as fill."""
        blocks = self.read_blocks(sample, chunk_rows, chunk_cols)  # (R, Cc, C, cy, cx)
        R, K, C, cy, cx = blocks.shape
        return blocks.transpose(2, 0, 3, 1, 4).reshape(C, R * cy, K * cx)
