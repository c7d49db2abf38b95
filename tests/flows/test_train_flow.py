"""The ``train`` flow on a worker without CUDA (this machine): it refuses unless ``allow_cpu``, and
on the CPU it caps the loader workers. The trainer child is replaced by a recorder."""

from __future__ import annotations

import pytest

from flows import train as tr

NO_GPU = (False, "torch 2.x+cpu is a CPU-only build")


@pytest.fixture
def child(monkeypatch):
    """Records the trainer command instead of starting it."""
    calls: list[list[str]] = []

    def fake_run_logged(cmd, *, log_line, env=None, cwd=None):
        calls.append(list(cmd))
        return 0

    monkeypatch.setattr(tr, "run_logged", fake_run_logged)
    monkeypatch.setattr(tr.MetricsWatcher, "start", lambda self: None)
    return calls


def test_train_refuses_the_cpu_without_allow_cpu(prefect_api, monkeypatch, child, tmp_path):
    monkeypatch.setattr(tr, "cuda_status", lambda: NO_GPU)
    (tmp_path / "d.zarr").mkdir()
    with pytest.raises(tr.NoGpuError, match="no CUDA GPU on worker .*CPU-only build.*allow_cpu=true"):
        tr.train(dataset=str(tmp_path / "d.zarr"), config="s2r", run_dir=str(tmp_path / "run"))
    assert child == []  # refused before the trainer started


def test_train_on_the_cpu_when_allowed_caps_loader_workers(prefect_api, monkeypatch, child, tmp_path):
    monkeypatch.setattr(tr, "cuda_status", lambda: NO_GPU)
    monkeypatch.setattr(tr.os, "cpu_count", lambda: 2)
    (tmp_path / "d.zarr").mkdir()
    tr.train(dataset=str(tmp_path / "d.zarr"), config="s2r", run_dir=str(tmp_path / "run"), allow_cpu=True)
    tr.train(dataset=str(tmp_path / "d.zarr"), config="s2r", run_dir=str(tmp_path / "run"), allow_cpu=True,
             overrides=["train.num_workers=3"])  # the user's choice wins
    (first, second) = child
    assert first[first.index("--device") + 1] == "cpu"
    assert [first[i + 1] for i, a in enumerate(first) if a == "--set"] == ["train.num_workers=1"]  # s2r asks for 8
    assert [second[i + 1] for i, a in enumerate(second) if a == "--set"] == ["train.num_workers=3"]


def test_train_uses_cuda_when_the_worker_has_it(prefect_api, monkeypatch, child, tmp_path):
    monkeypatch.setattr(tr, "cuda_status", lambda: (True, "1 CUDA device(s)"))
    (tmp_path / "d.zarr").mkdir()
    tr.train(dataset=str(tmp_path / "d.zarr"), config="s2r", run_dir=str(tmp_path / "run"))
    (cmd,) = child
    assert cmd[cmd.index("--device") + 1] == "cuda" and "--set" not in cmd
