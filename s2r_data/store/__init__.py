"""The dataset store: one Zarr v3 group of per-sample shards + a Parquet index, at a URL.

Layout (see :mod:`s2r_data.store.urls`)::

    <url>/data.zarr/{sim,label,real,mask}[_l<k>]   (N, C, H>>k, W>>k), shard = one sample,
                                                   inner chunks (1, C, 256, 256), Blosc lz4+shuffle
    <url>/index.parquet                            compacted index (schema: store.schema.INDEX_SCHEMA)
    <url>/index.d/<image_id>.parquet               per-sample index fragment = commit marker
    <url>/_s2r/slots/<n>.json                      slot manifest (:mod:`.slots`)
    <url>/_s2r/busy/, _s2r/lock, _s2r/cas.lock     write leases (object stores) / lock files (local)

``sim`` float16 (DiffCol 3 [0,1], world normal 3 in ``local_m``, Euclidean depth m 1; sky = 0),
``label`` uint8 class index (``s2r_data.citymodel.CLASSES``), ``real`` uint8 photo, ``mask`` uint8
(sky, valid). Level k ≥ 1 arrays are 2^k-downsampled copies for alias-free small crops
(:mod:`s2r_data.store.pyramid`).

Plain readers (zarr + pyarrow, no s2r): docs/dataset.md. Axis 0 holds *slots*: only those named
by a committed index row hold samples.

Creation (:mod:`s2r_data.store.create`): arrays first, empty index next, the group's
``data.zarr/zarr.json`` last, so a store is complete or has no group; a writer completes a store
whose creation was interrupted.

Write protocol (crash- and concurrency-safe; any number of writer processes on any number of
machines, on a local path, NFS or an S3-compatible store; no lock server, no file lock on object
stores — every agreement is a conditional PUT, :mod:`.conditional`):

1. Validate the sample in memory (:class:`SampleValidationError` names the bad input; nothing
   written).
2. Take the image's claim (:mod:`.claims`: ``flock`` on one of 256 bucket files locally, a lease
   object created-if-absent on object stores) so one image is never written by two writers at
   once; return/raise if it is already committed.
3. Its slot from the slot manifest (:mod:`.slots`): allocated by the coordinator before writers
   were dispatched (:func:`allocate_slots`, the ``build-dataset`` flow), or by a crashed earlier
   attempt, or now (a new segment, created if absent). Grow every array geometrically (×2) if the
   slot is past its capacity, by compare-and-swap on its ``zarr.json`` (never shrunk, never lost).
4. Write each array's row ``slot`` as one whole shard (a file/object per sample per array).
   Different samples never share a shard, so concurrent writers never rewrite each other's bytes.
   Then read every array's row back and compare (write-time verification: :class:`SampleWriteError`,
   nothing committed, on mismatch).
5. Commit: atomically publish ``index.d/<id>.parquet`` (rename, or one PUT).

A ``kill -9`` anywhere before 5 leaves an allocated, uncommitted slot (invisible to readers; a
rerun writes the same id into the same slot); after 5 the sample is complete. Readers list only
committed rows (:func:`open_dataset`); :func:`compact` merges fragments into ``index.parquet`` by
compare-and-swap (write, then delete merged fragments, until none is left; readers read
fragments first so they never miss a row during a compaction) and records the count in the group
attributes. :func:`verify` checks the store, the index and every sample (or only some) and
reports damage instead of raising;
``python -m s2r_data.store verify [--workers N]|info|compact URL`` from the shell. Reading and
writing work at local paths and ``s3://`` URLs (credentials and endpoint from the environment);
reading at any fsspec URL. Guarantees in docs/dataset.md ("Many writers, no locks").
"""

from .index import IndexRowError, make_index_row
from .reader import DatasetNotFoundError, DatasetReader, open_dataset
from .create import IncompleteStoreError, ensure_store
from .schema import DEFAULT_CODEC, INDEX_SCHEMA, INDEX_SCHEMA_VERSION, CodecChoice, StoreSpec
from .verify import Problem, VerifyReport, verify
from .writer import (
    DatasetWriter,
    SampleBusyError,
    SampleExistsError,
    SlotMismatchError,
    allocate_slots,
    SampleValidationError,
    SampleWriteError,
    StoreMismatchError,
    compact,
    store_lock,
)

__all__ = [
    "DatasetWriter",
    "DatasetReader",
    "open_dataset",
    "verify",
    "VerifyReport",
    "Problem",
    "compact",
    "allocate_slots",
    "store_lock",
    "SampleValidationError",
    "SampleExistsError",
    "SampleWriteError",
    "SampleBusyError",
    "SlotMismatchError",
    "StoreMismatchError",
    "IncompleteStoreError",
    "StoreSpec",
    "ensure_store",
    "IndexRowError",
    "DatasetNotFoundError",
    "make_index_row",
    "INDEX_SCHEMA",
    "INDEX_SCHEMA_VERSION",
    "CodecChoice",
    "DEFAULT_CODEC",
]
