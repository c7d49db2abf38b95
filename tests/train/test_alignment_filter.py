"""Training on aligned datasets: pairs below data.min_alignment_score are dropped from the train
split, and every item carries its pair's score (the per-pair L1 weight)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2r_data.store import DatasetWriter
from s2r_data.store.synthetic import synthetic_panorama
from s2r_train.config import ConfigError, DataConfig
from s2r_train.data import CropConfig, PanoCropDataset
from s2r_train.losses import weighted_l1_loss
from s2r_train.trainer import build_dataset

SCORES = [0.9, 0.2, None, 0.6, 0.05, 0.75]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    url = tmp_path_factory.mktemp("data") / "scored"
    with DatasetWriter(url, height=32, width=64, city="t", chunk_px=32) as w:
        for k, s in enumerate(SCORES):
            p = synthetic_panorama(32, 64, k)
            w.write_sample(f"a{k}", p.sim, p.label, p.real, p.sky_mask, p.valid_mask,
                           {"R_world_to_cam_opensfm": np.eye(3).reshape(-1).tolist(), "alignment_score": s,
                            "split": "train" if k < 5 else "val", "sequence_id": "s"})
    return url


def test_items_carry_the_alignment_score_and_unscored_pairs_weigh_one(scored):
    ds = PanoCropDataset(scored, split="train", crop=CropConfig(out_size=16), seed=0)
    got = {ds[i]["meta"]["image_id"]: ds[i]["meta"]["alignment"] for i in range(len(ds))}
    assert got == pytest.approx({"a0": 0.9, "a1": 0.2, "a2": 1.0, "a3": 0.6, "a4": 0.05})
    batch = ds.get_batch([0, 1])
    assert torch.allclose(batch["meta"]["alignment"].float(), torch.tensor([0.9, 0.2]))


def test_min_alignment_score_filters_the_train_split_only(scored):
    cfg = DataConfig(crop_size=16, min_alignment_score=0.5)
    tr = build_dataset(str(scored), split="train", data_cfg=cfg, seed=0, deterministic=True)
    assert sorted(tr.image_ids) == ["a0", "a3"]  # unscored and low-scored pairs dropped
    va = build_dataset(str(scored), split="val", data_cfg=cfg, seed=0, deterministic=True)
    assert va.image_ids == ["a5"]  # evaluation sets are never filtered
    with pytest.raises(ValueError, match="min_alignment_score .*s2r store info"):  # where to see what a threshold keeps
        PanoCropDataset(scored, split="train", crop=CropConfig(out_size=16), min_alignment_score=0.95)
    with pytest.raises(ConfigError, match="min_alignment_score"):
        DataConfig(min_alignment_score=1.5)


def test_the_score_weights_l1_per_pair():
    pred, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    target[1] = 3.0
    w = torch.tensor([0.9, 0.1])
    assert weighted_l1_loss(pred, target, w).item() == pytest.approx((0.9 * 1 + 0.1 * 3) / 1.0)
