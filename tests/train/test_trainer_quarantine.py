"""Damaged samples (NaN/Inf written into the store after the fact) during training, with
DataLoader workers: quarantined, listed, counted, resumed; too many stop the run."""

import json

import numpy as np
import pytest
import zarr

from s2r_data.store import open_dataset
from s2r_data.store.synthetic import write_synthetic_dataset
from s2r_train.splits import assign_splits
from s2r_train.trainer import DataQualityError, Trainer

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


@pytest.fixture(scope="module")
def damaged_store(tmp_path_factory):
    """12 samples, the first train sample's sim made NaN (every pyramid level) after writing."""
    url = tmp_path_factory.mktemp("q") / "store"
    write_synthetic_dataset(url, 12, height=32, chunk_px=32, n_sequences=12)
    assign_splits(url, [10, 2, 0], seed=0)
    reader = open_dataset(url)
    row = reader.index.column("split").to_pylist().index("train")
    g = zarr.open_group(str(url / "data.zarr"), mode="r+")
    for name in ("sim", "sim_l1"):
        a = g[name]
        s = a[reader.zarr_index(row)]
        s[3:6] = np.nan
        a[reader.zarr_index(row)] = s
    return url, reader.image_ids[row]


def _cfg(*extra):
    return tiny_config("train.batch_size=2", "train.num_workers=2", "data.crop_size=32",
                       "network.generator.arch=unet", "network.generator.unet_levels=4", "eval.at_end=false",
                       "train.checkpoint_every_epochs=1000", *extra)


@pytest.mark.slow
def test_a_damaged_sample_is_quarantined_and_training_goes_on(tmp_path, damaged_store):
    url, bad_id = damaged_store
    run = tmp_path / "run"
    tr = Trainer(_cfg("train.max_quarantined_fraction=0.2", "train.log_every_steps=1"), run_dir=run,
                 dataset_url=str(url), max_steps=10, progress=False)  # 2 epochs of 5 steps: every sample drawn
    summary = tr.fit()
    tr.close()
    assert summary["step"] == 10 and summary["nonfinite_total"] == 0  # no batch was ever non-finite
    assert summary["quarantined"] == [bad_id] and summary["quarantined_total"] == 1
    assert (run / "quarantine.txt").read_text() == f"{bad_id}\n"
    assert json.loads((run / "summary.json").read_text())["quarantined"] == [bad_id]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["quarantined_total"] == 1.0
    # a resumed run starts with the list: its workers never read the damaged sample again
    again = Trainer(_cfg("train.max_quarantined_fraction=0.2"), run_dir=run, dataset_url=str(url), max_steps=12,
                    progress=False, log_tensorboard=False)
    assert again.quarantined == [bad_id] and len(again.train_dataset.quarantined) == 1


@pytest.mark.slow
def test_more_damage_than_allowed_stops_with_a_clear_error(tmp_path, damaged_store):
    url, bad_id = damaged_store
    tr = Trainer(_cfg("train.max_quarantined_fraction=0.05"), run_dir=tmp_path / "run", dataset_url=str(url),
                 max_steps=10, progress=False, log_tensorboard=False)
    with pytest.raises(DataQualityError, match=r"1 of 10 train samples \(10\.0%\).*max_quarantined_fraction=0\.05"):
        tr.fit()
    assert (tmp_path / "run" / "quarantine.txt").read_text().split() == [bad_id]
