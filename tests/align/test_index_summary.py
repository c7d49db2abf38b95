"""The alignment summary of a dataset index (``s2r store info``)."""

from __future__ import annotations

import math

import pyarrow as pa

from s2r_data.align.index_summary import index_alignment_summary, score_quantiles


def _index(**cols) -> pa.Table:
    return pa.table(cols)


def test_counts_statuses_flags_and_the_train_pairs_each_threshold_keeps():
    t = _index(
        split=["train", "train", "train", "train", "val", "train"],
        alignment_score=[0.05, 0.2, 0.45, None, 0.9, math.nan],
        alignment_score_before=[0.04, 0.1, 0.1, None, 0.2, None],
        alignment_status=["kept_reported", "refined", "refined", None, "refined", "failed"],
        alignment_flags=["refinement_not_better,poorly_aligned", None, "gross_error_recovered", None, None, "photo_unusable"],
    )
    s = index_alignment_summary(t, candidates=(0.1, 0.2, 0.5))
    assert s["scored"] == 4  # None and NaN are not scores
    assert s["status"] == {"failed": 1, "kept_reported": 1, "not_aligned": 1, "refined": 3}
    assert s["flags"] == {"gross_error_recovered": 1, "photo_unusable": 1, "poorly_aligned": 1, "refinement_not_better": 1}
    assert s["train_pairs"] == 5
    # as the trainer filters: score >= t; unscored (None, NaN) train pairs never kept; val not counted
    assert s["train_pairs_kept_at_min_score"] == {"0.1": 2, "0.2": 2, "0.5": 0}
    assert s["score_after"]["median"] == round((0.2 + 0.45) / 2, 3)
    assert s["score_before"]["p10"] <= s["score_before"]["median"] <= s["score_before"]["p90"]


def test_an_index_without_alignment_columns_or_scores():
    assert index_alignment_summary(_index(split=["train"], image_id=["a"])) is None
    s = index_alignment_summary(_index(split=["train", "val"], alignment_score=pa.array([None, None], pa.float64())))
    assert s["scored"] == 0 and s["score_after"] == {} and s["score_before"] == {}
    assert s["status"] == {"not_aligned": 2} and set(s["train_pairs_kept_at_min_score"].values()) == {0}
    assert score_quantiles([]) == {} and score_quantiles([None, math.inf]) == {}
