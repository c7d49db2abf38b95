"""Sequences → adopted poses: the never-worse rule, the sequence prior, gross errors flagged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from s2r_data.align import AlignConfig, AlignInput, PoseCorrection, align_images, extract_model_edges
from s2r_data.align import pipeline as pipeline_mod

from .scene import camera, pseudo_photo, street_scene


def _item(scene, true, reported, seq="s1", t=0, photo_pose=None):
    photo = pseudo_photo(scene, photo_pose or true, 1024, seed=t)
    return AlignInput(reported.image_id, reported, lambda: photo, seq, t)


@pytest.fixture(scope="module")
def sequence_run():
    """Four images 4 m apart with a shared drift + noise; one with a gross position error."""
    model, scene = street_scene()
    drift = PoseCorrection(1.0, 0.0, 0.0, 1.2, -0.8, 0.0)
    noise = [PoseCorrection(0.5, 0.4, -0.3, 0.3, 0.2, 0.1), PoseCorrection(-0.6, -0.2, 0.5, -0.4, 0.3, -0.1),
             PoseCorrection(0.2, 0.1, 0.2, 9.0, 3.0, 0.0),  # gross: 9.5 m off
             PoseCorrection(-0.3, -0.4, 0.1, 0.2, -0.5, 0.2)]
    items, truth = [], {}
    for k, n in enumerate(noise):
        true = camera(1.0, -10.0 + 4.0 * k, 5.0, pitch_deg=1.0, image_id=f"img{k}")
        c = PoseCorrection(*(np.array(drift.to_list()) + np.array(n.to_list())))
        items.append(_item(scene, true, c.apply(true), t=k))
        truth[true.image_id] = true
    outs = align_images(items, extract_model_edges(model), scene, AlignConfig())
    return outs, truth


def test_sequence_images_are_refined_and_better(sequence_run):
    outs, truth = sequence_run
    assert [o.image_id for o in outs] == ["img0", "img1", "img2", "img3"]
    for o in outs:
        before = PoseCorrection.between(truth[o.image_id], o.reported)
        after = PoseCorrection.between(truth[o.image_id], o.pose)
        if o.status == "refined":
            assert after.horizontal_m < 0.15 and abs(after.d_heading_deg) < 0.15, (o.image_id, after)
            assert o.score_after.score > o.score_before.score
            assert after.horizontal_m < before.horizontal_m
        else:  # anything not refined says why
            assert o.flags, o
    assert sum(o.status == "refined" for o in outs) >= 3


def test_gross_error_is_recovered_or_flagged(sequence_run):
    outs, truth = sequence_run
    g = outs[2]
    err = PoseCorrection.between(truth[g.image_id], g.pose)
    if g.status == "refined":
        assert "gross_error_recovered" in g.flags and err.horizontal_m < 0.3
    else:
        assert {"gross_error_suspected", "poorly_aligned"} & set(g.flags)
    cols = g.index_columns()
    assert cols["alignment_status"] == g.status and len(cols["pose_correction"]) == 6
    assert cols["reported_x_local_m"] == pytest.approx(g.reported.center_local_m[0])


def test_never_worse_keeps_the_reported_pose(monkeypatch):
    model, scene = street_scene()
    true = camera(0.5, 0.0, 40.0, image_id="nw")
    real_refine = pipeline_mod.refine_pose

    def bad_refine(*a, **kw):  # a refinement that returns a worse pose
        res = real_refine(*a, **kw)
        return dataclasses.replace(res, solution=PoseCorrection(3.0, dx_m=2.0).apply(res.reported))

    monkeypatch.setattr(pipeline_mod, "refine_pose", bad_refine)
    reported = PoseCorrection(0.2, dx_m=0.1).apply(true)
    [o] = align_images([_item(scene, true, reported, seq=None)], extract_model_edges(model), scene)
    assert o.status == "kept_reported" and "refinement_not_better" in o.flags
    assert o.pose is o.reported and o.correction.horizontal_m == 0.0
    assert o.score_after.score == o.score_before.score


def test_a_photo_of_another_place_is_flagged_not_silently_kept():
    model, scene = street_scene()
    here = camera(0.0, -20.0, 0.0, image_id="elsewhere")
    there = camera(0.0, 70.0, 180.0)  # the photo was taken 90 m away, facing the other way
    [o] = align_images([_item(scene, here, here, seq=None, photo_pose=there)], extract_model_edges(model), scene)
    if o.status == "refined":  # it can only be adopted if it truly scores better; then far from "here"
        assert o.correction.horizontal_m > 5 or abs(o.correction.d_heading_deg) > 10
    else:
        assert "poorly_aligned" in o.flags or o.status in ("low_confidence", "unrecovered")


def test_unreadable_photo_fails_with_a_flag():
    model, scene = street_scene()
    p = camera(0.0, 0.0, 0.0, image_id="broken")

    def boom():
        raise OSError("truncated JPEG")

    [o] = align_images([AlignInput("broken", p, boom)], extract_model_edges(model), scene)
    assert o.status == "failed" and o.flags == ("photo_unusable",) and "truncated" in o.detail["message"]
    assert o.pose is p


def test_a_solution_implausible_for_the_rig_is_not_adopted(monkeypatch):
    """Height 1 m off the sequence's rig height: kept_reported + implausible_solution, whatever it scores."""
    model, scene = street_scene()
    real_refine = pipeline_mod.refine_pose
    calls = {"n": 0}

    def refine_wrong_height(*a, **kw):
        res = real_refine(*a, **kw)
        if res.reported.image_id == "h2" and kw.get("fine", True):
            calls["n"] += 1
            return dataclasses.replace(res, solution=PoseCorrection(dz_m=1.0).apply(res.solution))
        return res

    monkeypatch.setattr(pipeline_mod, "refine_pose", refine_wrong_height)
    items = []
    for k in range(4):
        true = camera(1.0, -10.0 + 4.0 * k, 5.0, image_id=f"h{k}")
        items.append(_item(scene, true, PoseCorrection(0.5, dx_m=0.4).apply(true), t=k))
    outs = {o.image_id: o for o in align_images(items, extract_model_edges(model), scene)}
    assert calls["n"] >= 1
    h2 = outs["h2"]
    assert h2.status == "kept_reported" and "implausible_solution" in h2.flags and h2.pose is h2.reported
    assert all(outs[f"h{k}"].status == "refined" for k in (0, 1, 3))


def test_long_sequences_are_aligned_in_pieces(monkeypatch):
    seen = []
    monkeypatch.setattr(pipeline_mod, "align_sequence", lambda items, *a, **k: seen.append([it.image_id for it in items]) or [])
    model, scene = street_scene()
    items = [AlignInput(f"i{k:02d}", camera(0, k, 0, image_id=f"i{k:02d}"), lambda: None, "s", k) for k in range(11)]
    align_images(items, extract_model_edges(model), scene, AlignConfig(max_sequence_images=4))
    assert [len(p) for p in seen] == [4, 4, 3]
    align_images(items[:9], extract_model_edges(model), scene, AlignConfig(max_sequence_images=4))
    assert [len(p) for p in seen[3:]] == [4, 5]  # a last piece of 1 joins the previous one
    assert [i for p in seen[3:] for i in p] == [it.image_id for it in items[:9]]
    assert [i for p in seen[:3] for i in p] == [it.image_id for it in items]
