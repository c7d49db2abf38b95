"""Slot allocation without locks: an append-only manifest of segments, each created if absent.

Axis 0 of every array is a slot axis; each image gets one slot for good. The manifest is the
only place that says which:

    _s2r/slots/00000000.json   {"first_slot": 0,  "image_ids": ["1043", "1187", …], "owner": …}
    _s2r/slots/00000001.json   {"first_slot": 24, "image_ids": ["2210", …], …}

**Rule:** the slot of an image is its position in the concatenation of the segments, in segment
order (``first_slot + i``); an id that appears again later keeps its first slot (never happens:
see below). ``null`` entries are holes (legacy import).

**Appending** (:meth:`SlotManifest.allocate`): read all segments, drop the ids already in them, and
create segment ``n`` (the next number) with :func:`~.conditional.create_if_absent`. If another
allocator created ``n`` first, read it and try ``n + 1`` with what is still unallocated. Segments
are immutable and segment ``n`` is only ever created by a process that has read segments
``0 … n-1``, so:

* no two images share a slot (the ranges of segments follow each other: ``first_slot`` of ``n`` is
  the end of ``n-1``, checked on reading);
* no image gets two slots (an allocator never puts an id already in ``0 … n-1`` into ``n``);
* everybody who reads the manifest computes the same slots, on any machine, at any time later.

Two flow runs allocating the same images at once: one creates the segment, the other finds all its
ids allocated and appends nothing. Two incremental runs adding different images: two consecutive
segments with disjoint slot ranges. A crash after allocating leaves slots that are allocated but
uncommitted; a rerun of the same image uses the same slot.

Stores written before the manifest kept ``_s2r/slots.log`` (``"<id> <slot> ;"`` lines under a
lock); the first allocation imports it (and the committed index rows) as segment 0, so their slots
stay where they are (:func:`_legacy_segment`).

:func:`ensure_capacity` grows the arrays (their ``zarr.json`` ``shape[0]``, doubling) by
compare-and-swap, so concurrent growers never shrink each other; arrays are never shrunk.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .conditional import create_if_absent, read_versioned, replace_if_version
from .urls import ZARR_DIR, StoreLocation

__all__ = [
    "SLOTS_DIR",
    "SlotManifest",
    "SlotManifestError",
    "read_slot_manifest",
    "ensure_capacity",
]

SLOTS_DIR = "_s2r/slots"
LEGACY_SLOT_LOG = "_s2r/slots.log"
_SEGMENT_RE = re.compile(r"^(\d{8})\.json$")
_FORMAT = "s2r-slots/1"
_MAX_APPEND_TRIES = 1000


class SlotManifestError(RuntimeError):
    """The slot manifest is damaged (a missing or inconsistent segment); the message names it."""


def _segment_rel(n: int) -> str:
    return f"{SLOTS_DIR}/{n:08d}.json"


def _parse_legacy_lines(text: str, slots: dict[str, int]) -> None:
    """Lines ``"<image_id> <slot> ;"``; anything else (a torn line left by a crash) is ignored."""
    for line in text.split("\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[2] == ";" and parts[1].isdigit():
            slots.setdefault(parts[0], int(parts[1]))


def _legacy_segment(loc: StoreLocation) -> list[str | None] | None:
    """Segment 0 for a store written before the manifest: its slot log and committed index rows
    (rows win; they are what readers see), as a slot → id list with holes; None if neither exists."""
    from .index import read_index

    slots: dict[str, int] = {}
    _parse_legacy_lines((loc.read_bytes(LEGACY_SLOT_LOG) or b"").decode("utf-8", "replace"), slots)
    if loc.exists(f"{ZARR_DIR}/zarr.json"):
        t = read_index(loc, on_error=lambda *_: None)
        for image_id, z in zip(t.column("image_id").to_pylist(), t.column("zarr_index").to_pylist()):
            slots[str(image_id)] = int(z)
    if not slots:
        return None
    by_slot: dict[int, str] = {}
    for image_id, z in sorted(slots.items(), key=lambda kv: kv[1]):
        if z in by_slot:  # two ids claimed one slot in the old log: keep the first, drop the other
            continue
        by_slot[z] = image_id
    out: list[str | None] = [None] * (max(by_slot) + 1)
    for z, image_id in by_slot.items():
        out[z] = image_id
    return out


@dataclass
class SlotManifest:
    """A process's view of a store's slot manifest (refresh to see other allocators' segments)."""

    loc: StoreLocation
    slots: dict[str, int] = field(default_factory=dict)
    n_segments: int = 0
    end: int = 0  # the next unallocated slot
    _legacy_checked: bool = False
    _loaded: bool = False

    # -- reading -----------------------------------------------------------------------------
    def _absorb(self, n: int, seg: dict) -> None:
        where = f"{self.loc.url}/{_segment_rel(n)}"
        ids = seg.get("image_ids")
        if seg.get("format") != _FORMAT or not isinstance(ids, list) or not isinstance(seg.get("first_slot"), int):
            raise SlotManifestError(f"{where} is not an s2r slot segment; the store's slot manifest is damaged")
        if seg["first_slot"] != self.end:
            raise SlotManifestError(
                f"{where} starts at slot {seg['first_slot']}, but the segments before it end at {self.end}; "
                "the store's slot manifest is damaged (was a segment deleted or edited?)"
            )
        for i, image_id in enumerate(ids):
            if image_id is not None:
                self.slots.setdefault(str(image_id), self.end + i)  # first appearance wins
        self.end += len(ids)
        self.n_segments = n + 1

    def _read_segments(self, numbers: Sequence[int]) -> dict[int, bytes]:
        if not numbers:
            return {}
        if self.loc.is_local:
            return {n: d for n in numbers if (d := self.loc.read_bytes(_segment_rel(n))) is not None}
        fs = self.loc.fs
        paths = {fs._strip_protocol(self.loc.path(_segment_rel(n))): n for n in numbers}
        got = fs.cat(list(paths), on_error="omit")  # concurrent GETs on object stores
        return {paths[fs._strip_protocol(p)]: d for p, d in got.items() if fs._strip_protocol(p) in paths}

    def refresh(self) -> "SlotManifest":
        """Read the segments created since the last refresh: the first time all of them (one
        listing, then concurrent reads), later by probing the next numbers until one is absent
        (no listing: a writer allocating image by image stays O(1) per image)."""
        if not self._loaded:
            listed = sorted(int(m.group(1)) for name in self.loc.list_dir(SLOTS_DIR) if (m := _SEGMENT_RE.match(name)))
            data = self._read_segments(listed)
            for n in listed:
                if n != self.n_segments or n not in data:
                    raise SlotManifestError(
                        f"{self.loc.url}/{SLOTS_DIR}: segment {self.n_segments:08d} is missing but later ones exist; "
                        "the store's slot manifest is damaged"
                    )
                self._absorb(n, json.loads(data[n]))
            self._loaded = True
            if self.n_segments == 0 and not self._legacy_checked:
                self._import_legacy()
        while (raw := self.loc.read_bytes(_segment_rel(self.n_segments))) is not None:
            self._absorb(self.n_segments, json.loads(raw))
        return self

    def _import_legacy(self) -> None:
        self._legacy_checked = True
        ids = _legacy_segment(self.loc)
        if ids is None:
            return
        seg = self._segment(ids, "import of _s2r/slots.log and the index (store written before the slot manifest)")
        if create_if_absent(self.loc, _segment_rel(0), json.dumps(seg).encode()):
            self._absorb(0, seg)
        else:
            self.refresh()  # another process imported it (or allocated) first: read theirs

    def slot_of(self, image_id: str) -> int | None:
        return self.slots.get(str(image_id))

    # -- appending ---------------------------------------------------------------------------
    def _segment(self, ids: list[str | None], owner: str) -> dict:
        return {
            "format": _FORMAT,
            "first_slot": self.end,
            "image_ids": ids,
            "owner": owner,
            "created_at": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _append(self, ids: list[str], *, owner: str) -> None:
        """Create the next segment holding ``ids`` (minus what others allocate meanwhile)."""
        for _ in range(_MAX_APPEND_TRIES):
            ids = [i for i in ids if i not in self.slots]
            if not ids:
                return
            seg = self._segment(ids, owner)
            n = self.n_segments
            if create_if_absent(self.loc, _segment_rel(n), json.dumps(seg).encode()):
                self._absorb(n, seg)
                return
            self.refresh()  # another allocator created segment n: read it, retry after it
        raise SlotManifestError(f"{self.loc.url}: could not append to the slot manifest after {_MAX_APPEND_TRIES} tries")

    def allocate(self, image_ids: Iterable[str], *, owner: str = "") -> dict[str, int]:
        """The slot of every id, allocating the missing ones in one new segment (in the given
        order, duplicates dropped). Safe against any number of concurrent allocators."""
        wanted = [str(i) for i in dict.fromkeys(image_ids)]
        if not self._loaded:
            self.refresh()
        missing = [i for i in wanted if i not in self.slots]  # else _append finds them on conflict
        if missing:
            self._append(list(missing), owner=owner)
        return {i: self.slots[i] for i in wanted}


def read_slot_manifest(loc: StoreLocation) -> SlotManifest:
    """The store's slot manifest as of now (imports a legacy slot log on first use)."""
    return SlotManifest(loc).refresh()


def _grow_array(loc: StoreLocation, name: str, needed: int) -> int:
    """Grow array ``name`` to at least ``needed`` slots (doubling); returns its capacity."""
    rel = f"{ZARR_DIR}/{name}/zarr.json"
    while True:
        data, version = read_versioned(loc, rel)
        if data is None:
            raise FileNotFoundError(f"{loc.url}: array metadata {rel} is missing (store not created?)")
        meta = json.loads(data)
        cap = int(meta["shape"][0])
        if cap >= needed:
            return cap
        meta["shape"][0] = max(int(needed), 2 * cap)
        if replace_if_version(loc, rel, json.dumps(meta, indent=2).encode(), version):
            return int(meta["shape"][0])
        # another process grew it meanwhile: read again (never write a shape based on a stale read)


def ensure_capacity(loc: StoreLocation, array_names: Iterable[str], needed: int) -> int:
    """Every array holds at least ``needed`` slots; returns the smallest capacity. Growth only
    rewrites metadata (zarr stores no chunk for an unwritten slot)."""
    return min(_grow_array(loc, name, needed) for name in array_names)
