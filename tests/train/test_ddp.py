"""Two-process DDP on CPU (gloo) through torchrun, the same command as on GPUs."""

import json
import os
import subprocess
import sys

import pytest
import torch

from s2r_train.checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "s2r_train", "train", "--config", "tiny", "--dataset", "synthetic://8", "--run-dir", str(run),
           "--max-steps", "3", "--device", "cpu", "--no-progress",
           "--set", "train.batch_size=2", "--set", "network.generator.spade_hidden=8",
           "--set", "train.num_vis_samples=2", "--set", "train.val_batches=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"step": 3, "nimg": 12, "epoch": 1, "nonfinite_total": 0,  # 8 items / (2×2) = 2 steps/epoch
                       "quarantined_total": 0, "quarantined": [], "quarantine_list": None}
    ckpts = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["checkpoint-step000000002.pt", "checkpoint-step000000003.pt"]
    state = load_checkpoint(ckpts[-1])
    assert state["world_size"] == 2 and state["step"] == 3
    assert not any(k.startswith("module.") for k in state["G"])  # unwrapped weights
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    assert (run / "samples" / "epoch-0000.png").exists()  # rank 0 only writes
    assert len(list((run / "tb").glob("events.*"))) == 1
