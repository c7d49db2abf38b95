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
    (mgr.dir / ".checkpoint-step000000030.pt.abc.partial").write_bytes(b"junk")
    assert mgr.latest() == first


def test_keep_last_k(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for n in (4, 8, 12, 100):
        mgr.save(n, {"n": n})
    assert [p.name for p in mgr.list()] == ["checkpoint-step000000012.pt", "checkpoint-step000000100.pt"]
    assert load_checkpoint(mgr.latest())["n"] == 100


def test_step_names_sort_after_legacy_image_names(tmp_path):
    """Runs written before checkpoints were named by step (``checkpoint-<nimg:012d>.pt``) still
    resume; a step-named checkpoint is newer than any of them, whatever the numbers."""
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.dir.mkdir(parents=True)
    save_checkpoint(mgr.dir / "checkpoint-000000000400.pt", {"n": "legacy"})
    assert load_checkpoint(mgr.latest())["n"] == "legacy"
    mgr.save(3, {"n": "step 3"})
    assert [p.name for p in mgr.list()] == ["checkpoint-000000000400.pt", "checkpoint-step000000003.pt"]
    assert load_checkpoint(mgr.latest())["n"] == "step 3"
    mgr.save(4, {"n": "step 4"})  # keep_last prunes the legacy one first
    assert [p.name for p in mgr.list()] == ["checkpoint-step000000003.pt", "checkpoint-step000000004.pt"]


def test_trainer_checkpoint_loads_with_weights_only(tmp_path):
    cfg = tiny_config("train.checkpoint_every_nimg=4")
    tr = Trainer(cfg, run_dir=tmp_path, train_dataset=SyntheticPairDataset(8, crop_size=64), progress=False,
                 log_tensorboard=False, max_steps=2)
    tr.fit()
    path = tr.checkpoints.latest()
    assert path.name == "checkpoint-step000000002.pt"  # step 2 (4 images)
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
