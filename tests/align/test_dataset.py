"""``s2r align`` on an existing store: refined pairs re-rendered, the rest copied, columns filled."""

from __future__ import annotations

import numpy as np
import pytest

from s2r_data.align import PoseCorrection
from s2r_data.align.__main__ import main as align_main
from s2r_data.align.dataset import row_pose, row_reported_pose
from s2r_data.store import DatasetWriter, open_dataset, verify

from .scene import camera, pseudo_photo, street_scene

pytestmark = pytest.mark.slow
W = 512


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three samples rendered at reported poses (errors injected), photos at the true poses."""
    model, scene = street_scene()
    root = tmp_path_factory.mktemp("align-ds")
    model_path = model.save(root / "city_model" / "city_model.npz")
    url = str(root / "dataset.zarr")
    truth = {}
    errs = [PoseCorrection(1.5, 0.5, -0.5, 1.0, -0.8, 0.2), PoseCorrection(-1.0, 0.0, 0.3, -0.6, 0.9, 0.0), PoseCorrection(0.6, dx_m=0.5)]
    with DatasetWriter(url, height=W // 2, width=W, city="align-test") as w:
        for k, e in enumerate(errs):
            true = camera(1.0, -10.0 + 6.0 * k, 10.0, image_id=f"p{k}")
            rep = e.apply(true)
            p = scene.render(rep, W)
            real = pseudo_photo(scene, true, W, seed=k).transpose(2, 0, 1)
            w.write_sample(rep.image_id, p.sim7(), p.label, real, p.sky_mask.astype(np.uint8), np.ones_like(p.label),
                           {"pose": rep, "sequence_id": "seq", "captured_at": 1_700_000_000_000 + k, "split": "train"})
            truth[rep.image_id] = true
    return url, model_path, truth


def test_align_command_writes_a_consistent_aligned_store(store, tmp_path, capsys):
    url, model_path, truth = store
    out = str(tmp_path / "aligned.zarr")
    assert align_main(["--dataset", url, "--out", out, "--city-model", str(model_path)]) == 0
    assert "verified True" in capsys.readouterr().out
    assert verify(out).ok
    ds = open_dataset(out)
    rows = {r["image_id"]: r for r in ds.index.to_pylist()}
    assert set(rows) == set(truth)
    for iid, r in rows.items():
        assert r["alignment_status"] in ("refined", "kept_reported", "low_confidence")
        assert r["split"] == "train" and r["sequence_id"] == "seq"
        assert 0.0 <= r["alignment_score"] <= 1.0 and r["alignment_score_before"] is not None
        stored, reported = row_pose(r), row_reported_pose(r)
        err_before = PoseCorrection.between(truth[iid], reported)
        err_after = PoseCorrection.between(truth[iid], stored)
        if r["alignment_status"] == "refined":
            assert r["alignment_score"] >= r["alignment_score_before"]
            assert err_after.horizontal_m < err_before.horizontal_m and err_after.horizontal_m < 0.3
            # the stored passes are those of the stored pose
            i = ds.image_ids.index(iid)
            _, scene = street_scene()
            np.testing.assert_array_equal(ds.read(i, "label")[0], scene.render(stored, W).label[0])
        np.testing.assert_allclose(r["pose_correction"], PoseCorrection.between(reported, stored).to_list(), atol=1e-6)
    assert sum(r["alignment_status"] == "refined" for r in rows.values()) >= 2

    # aligning the aligned store again starts from the reported poses, not the refined ones
    again = str(tmp_path / "again.zarr")
    assert align_main(["--dataset", out, "--out", again, "--city-model", str(model_path), "--score-only"]) == 0
    rows2 = {r["image_id"]: r for r in open_dataset(again).index.to_pylist()}
    for iid, r in rows2.items():
        assert r["alignment_status"] == "not_refined"
        np.testing.assert_allclose(row_reported_pose(r).center_local_m, row_reported_pose(rows[iid]).center_local_m)
        np.testing.assert_allclose(row_pose(r).center_local_m, row_pose(rows[iid]).center_local_m)


def test_align_refuses_to_overwrite_its_source(store, capsys):
    url, model_path, _ = store
    assert align_main(["--dataset", url, "--out", url, "--city-model", str(model_path)]) == 2
    assert "new location" in capsys.readouterr().err
