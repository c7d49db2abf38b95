"""The pose-alignment stage of build-dataset (plain functions): batching by sequence, the per-image
cache, pair scores, and the report's alignment section and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from flows import stages
from flows.report import AlignmentPair, report_markdown, write_alignment_png, write_score_histogram_png
from s2r_data.align import PoseCorrection

from tests.align.scene import camera, pseudo_photo, street_scene


def _spec(image_id, seq, photo_path="x.jpg", pose=None):
    return stages.SampleSpec(pose or camera(0, 0, 0, image_id=image_id), photo_path, sequence_id=seq, captured_at_ms=1)


def test_alignment_batches_keep_sequences_whole():
    specs = [_spec(f"a{k}", "A") for k in range(5)] + [_spec(f"b{k}", "B") for k in range(4)] + [_spec("lone", None)]
    batches = stages.alignment_batches(specs, 6)
    assert all(len(b) <= 6 for b in batches) and len(batches) == 2
    where = {}
    for k, b in enumerate(batches):
        for s in b:
            where.setdefault(s.sequence_id, set()).add(k)
    assert all(len(v) == 1 for seq, v in where.items() if seq is not None)  # no sequence is split
    assert [len(b) for b in stages.alignment_batches(specs[:5], 2)] == [5]  # a long sequence stays whole
    assert sorted(s.pose.image_id for b in batches for s in b) == sorted(s.pose.image_id for s in specs)


def test_spec_round_trip_with_alignment():
    s = _spec("a", "A")
    s2 = stages.SampleSpec.from_dict({**s.to_dict(), "alignment": {"status": "refined"}})
    assert s2.alignment == {"status": "refined"} and np.allclose(s2.pose.center_local_m, s.pose.center_local_m)


def test_align_batch_refines_caches_and_reuses(tmp_path):
    model, scene = street_scene()
    model_path = model.save(tmp_path / "city_model.npz")
    true = camera(1.0, -6.0, 20.0, image_id="img")
    photo = tmp_path / "img.jpg"
    Image.fromarray(pseudo_photo(scene, true, 1024)).save(photo, quality=95)
    reported = PoseCorrection(1.5, 0.5, 0.0, 0.8, -0.6, 0.1).apply(true)
    spec = stages.SampleSpec(reported, str(photo), sequence_id=None)
    out = stages.align_batch(model_path, [spec.to_dict()], tmp_path / "align")
    assert out["aligned_now"] == 1 and out["items"][0]["status"] == "refined"
    new = stages.SampleSpec.from_dict(out["samples"][0])
    assert PoseCorrection.between(true, new.pose).horizontal_m < 0.15
    assert new.alignment["status"] == "refined" and (tmp_path / "align" / "img.json").is_file()
    again = stages.align_batch(model_path, [spec.to_dict()], tmp_path / "align")
    assert again["aligned_now"] == 0
    assert json.dumps(again["samples"]) == json.dumps(out["samples"])  # (NaN lon/lat compare equal as text)
    summary = stages.alignment_summary(out["items"])
    assert summary["status"] == {"refined": 1} and summary["score_after"]["median"] > summary["score_before"]["median"]


def test_pair_alignment_score_of_a_written_pair():
    _, scene = street_scene()
    pose = camera(0.0, 0.0, 0.0)
    passes = scene.render(pose, 512)
    real = pseudo_photo(scene, pose, 512).transpose(2, 0, 1)
    good = stages.pair_alignment_score(real, passes, pose)
    off = scene.render(PoseCorrection(dx_m=1.0).apply(pose), 512)
    bad = stages.pair_alignment_score(real, off, pose)
    assert 0 < bad < good <= 1
    assert stages.pair_alignment_score(np.zeros_like(real), passes, pose) is None


def test_report_shows_alignment(tmp_path):
    img = np.zeros((64, 128, 3), np.uint8)
    pairs = [AlignmentPair("p1", "worst", 0.1, 0.15, "kept_reported", img, img), AlignmentPair("p2", "best", 0.3, 0.7, "refined", img, img)]
    png = write_alignment_png(pairs, tmp_path / "a.png")
    assert Image.open(png).size[0] == 256 and Image.open(png).size[1] == 2 * (64 + 22)
    hist = write_score_histogram_png([0.1, 0.2, None], [0.5, 0.7, 0.8], tmp_path / "h.png")
    assert Image.open(hist).size == (640, 320)
    summary = {"city": "c", "alignment": {"images": 3, "s_per_image": 1.2, "status": {"refined": 2, "kept_reported": 1},
                                          "flags": {"poorly_aligned": 1}, "score_before": {"median": 0.2, "p10": 0.1, "p90": 0.3},
                                          "score_after": {"median": 0.6, "p10": 0.4, "p90": 0.8}},
               "alignment_png": str(png), "alignment_histogram_png": str(hist)}
    md = report_markdown(summary)
    assert "## Pose alignment" in md and "refined 2" in md and "median 0.6" in md and str(png) in md


def test_alignment_report_pairs_show_before_and_after(tmp_path):
    from s2r_data.store import DatasetWriter

    model, scene = street_scene()
    model_path = model.save(tmp_path / "city_model.npz")
    url = str(tmp_path / "ds.zarr")
    with DatasetWriter(url, height=128, width=256, city="t") as w:
        for k, score in enumerate([0.4, 0.05, 0.3]):
            true = camera(1.0, -5.0 + 5 * k, 10.0, image_id=f"s{k}")
            reported = PoseCorrection(2.0, dx_m=1.0).apply(true)
            p = scene.render(true, 256)
            cols = {"reported_x_local_m": float(reported.center_local_m[0]), "reported_y_local_m": float(reported.center_local_m[1]),
                    "reported_z_local_m": float(reported.center_local_m[2]),
                    "reported_R_world_to_cam_opensfm": reported.R_world_to_cam_opensfm.reshape(-1).tolist(),
                    "alignment_score": score, "alignment_score_before": 0.01, "alignment_status": "refined"}
            w.write_sample(true.image_id, p.sim7(), p.label, pseudo_photo(scene, true, 256).transpose(2, 0, 1),
                           p.sky_mask.astype(np.uint8), np.ones_like(p.label), {"pose": true, **cols})
    pairs = stages.alignment_report_pairs(url, model_path, 1, width=256)
    assert [(p.which, p.image_id) for p in pairs] == [("worst", "s1"), ("best", "s0")]
    assert pairs[0].before.shape == pairs[0].after.shape == (128, 256, 3)
    assert not np.array_equal(pairs[0].before, pairs[0].after)  # the reported pose's edges sit elsewhere
    assert pairs[1].score_after == pytest.approx(0.4)
