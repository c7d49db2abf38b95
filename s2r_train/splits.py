"""Train/val(/test) split assignment, grouped by Mapillary sequence, written into the index.

Spec semantics (the thesis's ``[0.8, 0.2, 5]``): ``SplitSpec(train=0.8, val=0.2, vis=5)``

* ``train``, ``val`` — fractions of the samples (floats in [0, 1], sum ≤ 1) **or** sample counts
  (ints ≥ 0); both of the same kind. Whole sequences are assigned, so the achieved sizes are the
  closest a greedy fill can get: sequences, in a seeded random order, go to the split with the
  largest remaining deficit (target − assigned samples). Fractions summing to < 1 (or counts
  below the total) leave the rest as ``"test"``.
* ``vis`` — number of visualisation samples, chosen from the **val** split (held out from
  training), one per val sequence first (most diverse), then more from the same sequences if
  needed; marked with ``vis_index`` 0..vis−1 (their ``split`` stays ``"val"``). Load them with
  ``PanoCropDataset(split="vis", deterministic=True)``.
* Samples without a ``sequence_id`` are each their own group.
* Deterministic: same index + same spec + same seed ⇒ same assignment (sequences are sorted
  before the seeded shuffle).
* Stable under growth (``keep_existing``, the default): a sequence that already has a split keeps
  it (new images of that sequence join it), and only new sequences are distributed, to the splits
  furthest below their targets. An incremental build therefore never moves a sample from train to
  val or back; existing visualisation samples stay as they are while they remain in val.

:func:`assign_splits` rewrites ``index.parquet`` after compacting fragments, by compare-and-swap
(local stores also under the store lock), so it works on object stores too; rows committed later
have ``split`` null until it is run again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["SplitSpec", "split_groups", "assign_splits", "splits_present_hint"]


@dataclass(frozen=True)
class SplitSpec:
    train: float | int = 0.8
    val: float | int = 0.2
    vis: int = 5

    def __post_init__(self) -> None:
        kinds = {isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (self.train, self.val)}
        if len(kinds) != 1:
            raise ValueError(f"SplitSpec: train and val must both be fractions or both counts, got {self.train!r}, {self.val!r}")
        if self.train < 0 or self.val < 0 or self.vis < 0:
            raise ValueError(f"SplitSpec: negative size in {self}")
        if self.is_fraction and self.train + self.val > 1.0 + 1e-9:
            raise ValueError(f"SplitSpec: fractions train + val = {self.train + self.val} > 1")

    @property
    def is_fraction(self) -> bool:
        return isinstance(self.train, float) or isinstance(self.val, float)

    @classmethod
    def from_list(cls, spec: Sequence[float | int]) -> "SplitSpec":
        """``[train, val, vis]`` as in the thesis config (e.g. ``[0.8, 0.2, 5]``)."""
        if len(spec) != 3:
            raise ValueError(f"split spec {list(spec)}: expected [train, val, n_visualisation]")
        t, v, n = spec
        if isinstance(n, float) and not n.is_integer():
            raise ValueError(f"split spec {list(spec)}: the third entry is a number of samples")
        return cls(train=t, val=v, vis=int(n))

    def targets(self, n_samples: int) -> tuple[float, float]:
        if self.is_fraction:
            return self.train * n_samples, self.val * n_samples
        if self.train + self.val > n_samples:
            raise ValueError(f"SplitSpec counts train={self.train} + val={self.val} exceed the {n_samples} samples")
        return float(self.train), float(self.val)


def split_groups(
    image_ids: Sequence[str],
    sequence_ids: Sequence[str | None],
    spec: SplitSpec,
    seed: int,
    *,
    existing_split: Sequence[str | None] | None = None,
    existing_vis: Sequence[int | None] | None = None,
) -> tuple[list[str], list[int | None]]:
    """Pure assignment: per sample ``split`` ("train"/"val"/"test") and ``vis_index`` (or None).

    ``existing_split`` / ``existing_vis`` (per sample, None where unassigned) are kept: a group
    with an assigned member keeps that split, and only unassigned groups are distributed.
    """
    n = len(image_ids)
    existing_split = list(existing_split) if existing_split is not None else [None] * n
    existing_vis = list(existing_vis) if existing_vis is not None else [None] * n
    groups: dict[str, list[int]] = {}
    for i, (img, seq) in enumerate(zip(image_ids, sequence_ids)):
        key = f"seq:{seq}" if seq not in (None, "") else f"img:{img}"
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    t_train, t_val = spec.targets(n)
    t_test = max(n - t_train - t_val, 0.0)
    targets = {"train": t_train, "val": t_val, "test": t_test}
    assigned = {"train": 0, "val": 0, "test": 0}
    split: list[str] = [""] * n
    seq_of_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    fixed: dict[str, str] = {}
    for key in keys:  # groups that already have a split keep it (majority if members disagree)
        known = [existing_split[i] for i in groups[key] if existing_split[i] in assigned]
        if known:
            fixed[key] = max(sorted(set(known)), key=known.count)
    for k in sorted(order, key=lambda k: keys[k] not in fixed):  # fixed groups first, seeded order kept
        key = keys[k]
        members = groups[key]
        if key in fixed:
            name = fixed[key]
        else:
            # the split with the largest remaining deficit; ties → train, val, test
            name = max(("train", "val", "test"), key=lambda s: (targets[s] - assigned[s], -("train", "val", "test").index(s)))
        for i in members:
            split[i] = name
        assigned[name] += len(members)
        seq_of_split[name].append(key)
    _fill_empty_held_out(groups, fixed, targets, assigned, seq_of_split, split)
    # visualisation: existing vis samples still in val keep their order; then round-robin over
    # val sequences (in their seeded order), first image id first
    vis_index: list[int | None] = [None] * n
    pools = [sorted(groups[k], key=lambda i: image_ids[i]) for k in seq_of_split["val"]]
    if spec.vis > sum(len(p) for p in pools):
        raise ValueError(f"SplitSpec.vis={spec.vis} but the val split has only {sum(len(p) for p in pools)} samples")
    kept = sorted((i for i in range(n) if existing_vis[i] is not None and split[i] == "val"), key=lambda i: existing_vis[i])
    v = 0
    for i in kept[: spec.vis]:
        vis_index[i] = v
        v += 1
    depth = 0
    while v < spec.vis:
        for p in pools:
            if depth < len(p) and v < spec.vis and vis_index[p[depth]] is None:
                vis_index[p[depth]] = v
                v += 1
        depth += 1
    return split, vis_index


def _fill_empty_held_out(
    groups: dict[str, list[int]],
    fixed: dict[str, str],
    targets: dict[str, float],
    assigned: dict[str, int],
    seq_of_split: dict[str, list[str]],
    split: list[str],
) -> None:
    """A requested held-out split (val, then test; target ≥ 1 sample) that the greedy fill left
    empty gets one whole sequence from a split that has several: the one whose move leaves the
    sizes closest to their targets. (The fill goes by deficit, so a few large sequences can all
    land in train — 5 + 8 + 11 samples at 0.8 / 0.2 — and a run would have nothing to evaluate on.)
    Sequences that already had a split never move."""

    def error(counts: dict[str, float]) -> float:
        return sum(abs(targets[s] - counts[s]) for s in targets)

    for name in ("val", "test"):
        if targets[name] < 1.0 or assigned[name] > 0:
            continue
        moves = []
        for donor in ("train", "val", "test"):
            if donor == name or len(seq_of_split[donor]) < 2:
                continue
            for key in seq_of_split[donor]:
                if key in fixed:
                    continue
                n = len(groups[key])
                after = {**assigned, donor: assigned[donor] - n, name: assigned[name] + n}
                moves.append((error(after), n, key, donor))
        if not moves:
            continue
        _, n, key, donor = min(moves)
        seq_of_split[donor].remove(key)
        seq_of_split[name].append(key)
        assigned[donor] -= n
        assigned[name] += n
        for i in groups[key]:
            split[i] = name


def assign_splits(
    url: str | os.PathLike, spec: SplitSpec | Sequence[float | int], seed: int = 0, *, keep_existing: bool = True
) -> dict[str, int]:
    """Assign ``split``/``vis_index`` to every committed sample of the dataset at ``url`` (a local
    path or an object-store URL) and rewrite ``index.parquet`` atomically. Returns sample counts
    per split (+ ``"vis"``).

    ``keep_existing`` (default) keeps the splits already assigned (see the module docstring);
    ``False`` reassigns everything from scratch."""
    from s2r_data.store.index import update_index
    from s2r_data.store.schema import INDEX_SCHEMA
    from s2r_data.store.urls import location
    from s2r_data.store.writer import store_lock

    if not isinstance(spec, SplitSpec):
        spec = SplitSpec.from_list(spec)
    loc = location(url)

    def assign(table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            raise ValueError(f"{loc.url}: no committed samples to split")
        ids = table.column("image_id").to_pylist()
        seqs = table.column("sequence_id").to_pylist()
        old_split = table.column("split").to_pylist() if keep_existing else None
        old_vis = table.column("vis_index").to_pylist() if keep_existing else None
        split, vis = split_groups(ids, seqs, spec, seed, existing_split=old_split, existing_vis=old_vis)
        i_split = table.schema.get_field_index("split")
        i_vis = table.schema.get_field_index("vis_index")
        table = table.set_column(i_split, INDEX_SCHEMA.field("split"), pa.array(split, pa.string()))
        return table.set_column(i_vis, INDEX_SCHEMA.field("vis_index"), pa.array(vis, pa.int16()))

    with store_lock(loc):  # local stores; object stores rely on update_index's compare-and-swap
        table = update_index(loc, assign)
    split = table.column("split").to_pylist()
    vis = table.column("vis_index").to_pylist()
    counts = {s: split.count(s) for s in ("train", "val", "test")}
    counts["vis"] = sum(v is not None for v in vis)
    return counts


def splits_present_hint(url: str, present: Sequence[str]) -> str:
    """For errors about a missing split: which splits the store has, and the command that makes
    the missing one (a store built all-train needs ``--reassign``)."""
    if not present:
        return f"splits present: none; run `s2r-train splits --dataset {url}`"
    return (f"splits present: {sorted(present)}; `s2r-train splits --dataset {url} --reassign` redistributes "
            "whole sequences")
