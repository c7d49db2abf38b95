import pytest
import torch

from s2r_train.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from s2r_train.synthetic import SyntheticPairDataset
from s2r_train.trainer import Trainer

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


def test_crash_mid_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    first = mgr.save(10, {"w": torch.arange(4.0), "step": 1})

    def crashing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(20, {"w": torch.zeros(4), "step": 2})
    monkeypatch.undo()
    assert mgr.latest() == first
    assert torch.equal(load_checkpoint(first)["w"], torch.arange(4.0))
    assert sorted(p.name for p in mgr.dir.iterdir()) == [first.name]  # temp file removed
    # a temp file left by a hard kill (no cleanup ran) is never picked up
    (mgr.dir / ".checkpoint-000000000030.pt.abc.partial").write_bytes(b"junk")
    assert mgr.latest() == first


def test_keep_last_k(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for n in (4, 8, 12, 100):
        mgr.save(n, {"n": n})
    assert [p.name for p in mgr.list()] == ["checkpoint-000000000012.pt", "checkpoint-000000000100.pt"]
    assert load_checkpoint(mgr.latest())["n"] == 100


def test_trainer_checkpoint_loads_with_weights_only(tmp_path):
    cfg = tiny_config("train.checkpoint_every_nimg=4")
    tr = Trainer(cfg, run_dir=tmp_path, train_dataset=SyntheticPairDataset(8, crop_size=64), progress=False,
                 log_tensorboard=False, max_steps=2)
    tr.fit()
    path = tr.checkpoints.latest()
    assert path.name == "checkpoint-000000000004.pt"
    state = torch.load(path, weights_only=True)  # no pickled Python objects inside
    assert {"G", "D", "G_ema", "opt_g", "opt_d", "scaler_g", "scaler_d", "rng", "step", "nimg", "epoch",
            "config_yaml"} <= set(state)
    assert state["rng"]["cpu"].dtype == torch.uint8
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["G"])
    assert "lambda_feat" in state["config_yaml"]
    save_checkpoint(tmp_path / "copy.pt", state)
    assert load_checkpoint(tmp_path / "copy.pt")["step"] == 2
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
