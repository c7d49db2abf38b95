"""What a dataset's index says about its alignment (``s2r store info``): images by
status and flag, score quantiles at the reported and the stored poses, and how many train pairs
each ``data.min_alignment_score`` would keep — to choose that threshold before training.

Pure functions over the index (a ``pyarrow.Table`` with the additive alignment columns of
``s2r_data.store.schema``); stores written before alignment existed have no scores (``None``).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["MIN_SCORE_CANDIDATES", "score_quantiles", "index_alignment_summary"]

# thresholds to count kept train pairs at: 0.18 is the pipeline's poorly_aligned line (≈ the 10th
# percentile of well-aligned pairs on the realistic stand-in world, docs/alignment.md)
MIN_SCORE_CANDIDATES: tuple[float, ...] = (0.1, 0.18, 0.3, 0.4, 0.5)


def _finite(values: Iterable[Any]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)


def score_quantiles(values: Iterable[Any]) -> dict[str, float]:
    """Median, 10th and 90th percentile of the finite values (``{}`` when there are none)."""
    v = _finite(values)
    if not len(v):
        return {}
    return {"median": round(float(np.median(v)), 3), "p10": round(float(np.percentile(v, 10)), 3),
            "p90": round(float(np.percentile(v, 90)), 3)}


def index_alignment_summary(index: Any, candidates: Sequence[float] = MIN_SCORE_CANDIDATES) -> dict[str, Any] | None:
    """The alignment part of ``store info`` (``None`` when the index has no alignment columns)."""
    names = set(index.schema.names)
    if "alignment_score" not in names:
        return None
    n = index.num_rows

    def col(name: str) -> list[Any]:
        return index.column(name).to_pylist() if name in names else [None] * n

    after, before, split = col("alignment_score"), col("alignment_score_before"), col("split")
    status = Counter(str(s) if s else "not_aligned" for s in col("alignment_status"))
    flags = Counter(f for fs in col("alignment_flags") if fs for f in str(fs).split(",") if f)
    train = [s for s, sp in zip(after, split) if sp == "train"]
    train_scores = _finite(train)
    return {
        "scored": int(len(_finite(after))),
        "status": dict(sorted(status.items())),
        "flags": dict(sorted(flags.items())),
        "score_before": score_quantiles(before),
        "score_after": score_quantiles(after),
        "train_pairs": len(train),
        # what data.min_alignment_score = t keeps (pairs scored >= t; unscored pairs are dropped)
        "train_pairs_kept_at_min_score": {f"{t:g}": int(np.sum(train_scores >= t)) for t in candidates},
    }
