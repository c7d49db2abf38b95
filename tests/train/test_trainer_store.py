"""The trainer on a real (tiny, synthetic-content) dataset store through ``s2r_train.data``."""

import json

import pytest

from s2r_data.store.synthetic import write_synthetic_dataset
from s2r_train.cli import main
from s2r_train.splits import assign_splits

from .helpers import one_thread_deterministic_restored  # noqa: F401


@pytest.mark.slow
def test_train_then_infer_on_a_store(tmp_path, capsys):
    url = tmp_path / "store"
    write_synthetic_dataset(url, 6, height=64, chunk_px=32)
    assign_splits(url, [0.5, 0.5, 2], seed=0)
    run = tmp_path / "run"
    args = ["train", "--config", "tiny", "--dataset", str(url), "--run-dir", str(run), "--max-steps", "2",
            "--no-progress", "--set", "train.batch_size=2", "--set", "network.generator.spade_hidden=8",
            "--set", "train.val_batches=1", "--set", "train.num_vis_samples=2",
            "--set", "network.conditioning.normals_frame=camera"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["nonfinite_total"] == 0
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    out = tmp_path / "pred"
    assert main(["infer", "--checkpoint", str(ckpt), "--input", str(url), "--out", str(out), "--split", "val"]) == 0
    assert list(out.glob("*.png"))
