"""Creating a store so that it is complete or absent, completing stores left incomplete, and
describing what is missing.

Creation order (:func:`ensure_store`):

1. every array's ``zarr.json`` (each through a store rooted at the array's own folder, so zarr
   writes no implicit parent group);
2. the empty index (``index.parquet``, ``index.d/``);
3. the group's ``data.zarr/zarr.json`` with the dataset attributes — **last**.

The group's ``zarr.json`` therefore marks a complete store: readers, writers and ``verify`` look
for it. A creation killed at any step leaves no group; samples are only ever written into a
complete store, so the arrays found then hold no sample and the next :func:`ensure_store` simply
creates them again. Stores made by the earlier group-first order may hold a group with only some
arrays: :func:`ensure_store` creates the missing ones, :func:`creation_problems` names them.

Local stores: one creator at a time, the caller holds the store lock
(:func:`s2r_data.store.writer.store_lock`). Object stores (no locks): the same order, but every
metadata document is published with :func:`~.conditional.create_if_absent`, so concurrent
creators (two flow runs started at once) never overwrite each other or delete anything; each
checks what the winner wrote against its own settings (:class:`StoreMismatchError` otherwise).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .conditional import create_if_absent, read_versioned, replace_if_version
from .index import _table_bytes, empty_index, write_index_table
from .schema import ArraySpec, CodecChoice, StoreSpec
from .urls import ZARR_DIR, StoreLocation

__all__ = [
    "GROUP_METADATA",
    "StoreMismatchError",
    "IncompleteStoreError",
    "ensure_store",
    "creation_problems",
    "array_capacity",
    "record_committed_count",
]

log = logging.getLogger(__name__)

GROUP_METADATA = f"{ZARR_DIR}/zarr.json"


class StoreMismatchError(ValueError):
    """An existing store has a different size/city/levels than the writer asked for."""


class IncompleteStoreError(RuntimeError):
    """A store is damaged in a way no writer repairs on its own; the message says what to do."""


def _array_metadata(loc: StoreLocation, name: str) -> dict[str, Any] | None:
    data = loc.read_bytes(f"{ZARR_DIR}/{name}/zarr.json")
    return None if data is None else json.loads(data)


def array_capacity(loc: StoreLocation, name: str) -> int | None:
    """Slots (shape[0]) of array ``name`` from its metadata; None if it does not exist."""
    meta = _array_metadata(loc, name)
    return None if meta is None else int(meta["shape"][0])


def _create_array(loc: StoreLocation, spec: ArraySpec, capacity: int, codec: CodecChoice, *, overwrite: bool,
                  store: Any = None) -> None:
    import zarr

    zarr.create_array(
        loc.array_store(spec.name, read_only=False) if store is None else store,
        shape=(capacity, spec.channels, spec.height, spec.width),
        dtype=spec.dtype,
        chunks=(1, spec.channels) + spec.chunk,
        shards=(1, spec.channels, spec.height, spec.width),  # one shard = one sample
        compressors=[codec.codec()],
        fill_value=0,
        dimension_names=("sample", "channel", "y", "x"),
        overwrite=overwrite,
    )


def _committed_rows_without_group(loc: StoreLocation) -> bool:
    if any(n.endswith(".parquet") and not n.startswith(".") for n in loc.list_dir("index.d")):
        return True
    data = loc.read_bytes("index.parquet")
    if data is None:
        return False
    import io

    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows > 0
    except Exception:  # noqa: BLE001 - an unreadable index may hold rows: do not touch the store
        return True


def ensure_store(loc: StoreLocation, spec: StoreSpec, capacity: int) -> list[str]:
    """Create the store at ``loc`` (arrays with ``capacity`` slots), or check that the existing
    one matches ``spec`` and create arrays an interrupted creation left out. Returns the names of
    the arrays created. Raises :class:`StoreMismatchError` (other settings) or
    :class:`IncompleteStoreError` (no group metadata beside committed index rows)."""
    import zarr

    if not loc.is_local:
        return _ensure_remote(loc, spec, capacity)
    if loc.exists(GROUP_METADATA):
        try:
            attrs = dict(zarr.open_group(loc.zarr_store(read_only=True), mode="r").attrs).get("s2r_dataset", {})
        except Exception as e:  # noqa: BLE001 - name the file and the way out
            raise IncompleteStoreError(
                f"{loc.url}: cannot read the group metadata {GROUP_METADATA} ({type(e).__name__}: {e}); "
                "run `s2r store verify` on it, or write to another URL"
            ) from e
        want = spec.identity()
        got = {k: attrs.get(k) for k in want}
        if got != want:
            raise StoreMismatchError(
                f"{loc.url} holds {got}, the writer asked for {want}: use another URL or matching settings"
            )
        return _create_missing_arrays(loc, spec, capacity)

    if _committed_rows_without_group(loc):
        raise IncompleteStoreError(
            f"{loc.url} has committed index rows but no group metadata {GROUP_METADATA} (a partial copy?): "
            "copy the store again, or run `s2r store verify` on it; the writer does not touch it"
        )
    # no group ⇒ no sample was ever written here: (re)create every array, then the index, group last
    for a in spec.arrays():
        _create_array(loc, a, capacity, spec.codec, overwrite=True)
    if loc.is_local:
        from pathlib import Path

        Path(loc.path("index.d")).mkdir(parents=True, exist_ok=True)
    if not loc.exists("index.parquet"):
        write_index_table(loc, "index.parquet", empty_index())
    zarr.create_group(loc.zarr_store(read_only=False), attributes=spec.attributes(), overwrite=False)
    return [a.name for a in spec.arrays()]


def _create_missing_arrays(loc: StoreLocation, spec: StoreSpec, capacity: int) -> list[str]:
    missing = [a for a in spec.arrays() if not loc.exists(f"{ZARR_DIR}/{a.name}/zarr.json")]
    if not missing:
        return []
    caps = [c for a in spec.arrays() if (c := array_capacity(loc, a.name)) is not None]
    cap = max(caps + [capacity])  # as many slots as the arrays that exist: slots may be allocated
    for a in missing:
        _create_array(loc, a, cap, spec.codec, overwrite=True)  # no sample ever reached them
    names = [a.name for a in missing]
    log.warning("%s: completed an interrupted store creation: created arrays %s", loc.url, names)
    return names


def _metadata_bytes(make) -> bytes:
    """The ``zarr.json`` zarr writes for ``make(store)``, without touching the real store."""
    from zarr.storage import MemoryStore

    docs: dict = {}
    make(MemoryStore(docs))
    return docs["zarr.json"].to_bytes()


def _without_capacity(meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "shape": list(meta.get("shape", []))[1:]}


def _check_group_identity(loc: StoreLocation, group_doc: bytes, spec: StoreSpec) -> None:
    attrs = json.loads(group_doc).get("attributes", {}).get("s2r_dataset", {})
    want = spec.identity()
    got = {k: attrs.get(k) for k in want}
    if got != want:
        raise StoreMismatchError(f"{loc.url} holds {got}, the writer asked for {want}: use another URL or matching settings")


def _ensure_remote(loc: StoreLocation, spec: StoreSpec, capacity: int) -> list[str]:
    """:func:`ensure_store` for object stores: no lock, nothing ever overwritten or deleted."""
    import zarr

    group_doc = loc.read_bytes(GROUP_METADATA)
    if group_doc is not None:
        _check_group_identity(loc, group_doc, spec)
    elif _committed_rows_without_group(loc):
        raise IncompleteStoreError(
            f"{loc.url} has committed index rows but no group metadata {GROUP_METADATA} (a partial copy?): "
            "copy the store again, or run `s2r store verify` on it; the writer does not touch it"
        )
    have = {a.name: _array_metadata(loc, a.name) for a in spec.arrays()}
    cap = max([int(m["shape"][0]) for m in have.values() if m is not None] + [capacity])
    created: list[str] = []
    for a in spec.arrays():
        if have[a.name] is not None and group_doc is not None:
            continue  # a complete store: its arrays were checked when it was created
        doc = _metadata_bytes(lambda store, a=a: _create_array(loc, a, cap, spec.codec, overwrite=True, store=store))
        rel = f"{ZARR_DIR}/{a.name}/zarr.json"
        if have[a.name] is None and create_if_absent(loc, rel, doc):
            created.append(a.name)
            continue
        existing = json.loads(loc.read_bytes(rel) or b"{}")
        if _without_capacity(existing) != _without_capacity(json.loads(doc)):
            raise StoreMismatchError(
                f"{loc.url}: array {a.name} exists with other chunks, codec or size than this writer's "
                f"{spec.identity()}; use another URL, or delete {loc.url} if it holds no samples"
            )
    if group_doc is None:
        create_if_absent(loc, "index.parquet", _table_bytes(empty_index()))  # never replaces a compacted index
        group = _metadata_bytes(lambda store: zarr.create_group(store, attributes=spec.attributes()))
        if not create_if_absent(loc, GROUP_METADATA, group):  # another creator won: same settings?
            _check_group_identity(loc, loc.read_bytes(GROUP_METADATA) or b"{}", spec)
    elif created:
        log.warning("%s: completed an interrupted store creation: created arrays %s", loc.url, created)
    return created


def creation_problems(loc: StoreLocation, attrs: dict[str, Any] | None) -> list[str]:
    """Sentences describing an incomplete store (empty list = complete). ``attrs``: the
    ``s2r_dataset`` group attributes, or None when the group metadata is missing."""
    if attrs is None:
        present = sorted(
            n for n in loc.list_dir(ZARR_DIR) if not n.startswith(".") and loc.exists(f"{ZARR_DIR}/{n}/zarr.json")
        )
        if not present and not loc.list_dir(ZARR_DIR):
            return [f"no Zarr group at {loc.path(ZARR_DIR)} (not a dataset, or not built yet)"]
        rows = _committed_rows_without_group(loc)
        return [
            f"store creation was interrupted: group metadata {GROUP_METADATA} missing"
            + (f" (arrays {present} exist)" if present else "")
            + (
                "; committed index rows exist, so this looks like a partial copy: copy the store again"
                if rows
                else "; no sample was committed: the next writer on this URL completes it (or delete the folder)"
            )
        ]
    levels = int(attrs.get("pyramid_levels", 0))
    spec_names = [a.name for a in StoreSpec(int(attrs["height"]), int(attrs["width"]), str(attrs.get("city")), levels,
                                            int(attrs.get("chunk_px", 256))).arrays()]
    missing = [n for n in spec_names if not loc.exists(f"{ZARR_DIR}/{n}/zarr.json")]
    if not missing:
        return []
    return [
        f"store incomplete: arrays missing: {', '.join(missing)} (an earlier creation was interrupted); "
        "any DatasetWriter opened on this URL creates them"
    ]


def record_committed_count(loc: StoreLocation, n: int) -> None:
    """Write the committed sample count (rows of ``index.parquet`` after a compaction) into the
    group attributes (compare-and-swap: concurrent compactions never undo another's update)."""
    import datetime as _dt

    while True:
        data, version = read_versioned(loc, GROUP_METADATA)
        if data is None:
            return
        meta = json.loads(data)
        attrs = dict(meta.get("attributes", {}).get("s2r_dataset", {}))
        if attrs.get("committed_samples") == n and "committed_at_compaction" in attrs:
            return
        attrs["committed_samples"] = int(n)
        attrs["committed_at_compaction"] = _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds")
        meta.setdefault("attributes", {})["s2r_dataset"] = attrs
        if replace_if_version(loc, GROUP_METADATA, json.dumps(meta, indent=2).encode(), version):
            return
