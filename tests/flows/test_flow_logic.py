"""Orchestration logic of flows.build_dataset / flows.train that needs no Prefect API."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flows import build_dataset as bd
from flows import stages
from flows import train as tr
from flows.mapillary_token import MissingTokenError
from s2r_data.cities import load_city
from s2r_data.tiles import tiles_for_polygon


class _State:
    def __init__(self, exc: BaseException | None):
        self.exc = exc

    def result(self):
        if self.exc is not None:
            raise self.exc
        return 1


@pytest.mark.parametrize(
    "exc, retry",
    [
        (stages.HarvestNetworkError("cannot reach"), True),
        (ConnectionResetError("reset"), True),
        (MissingTokenError("no token"), False),
        (stages.PermanentHarvestError("token rejected"), False),
        (None, False),
    ],
)
def test_only_transient_harvest_errors_are_retried(exc, retry):
    assert bd._retry_transient(None, None, _State(exc)) is retry


def test_harvest_cache_key_follows_the_output_check(tmp_path, monkeypatch):
    params = {"city": "sample", "tile_id": "14/8299/5639", "harvest_dir": str(tmp_path), "incremental": False}
    monkeypatch.setattr(stages, "tile_part_stamp", lambda d, t: None)
    assert bd._harvest_cache_key(None, params) is None  # not done: never a cache hit
    monkeypatch.setattr(stages, "tile_part_stamp", lambda d, t: "123-456")
    key = bd._harvest_cache_key(None, params)
    assert key and "14_8299_5639" in key and "123-456" in key and stages.DATASET_VERSION in key
    monkeypatch.setattr(stages, "tile_part_stamp", lambda d, t: "124-789")  # part rewritten
    assert bd._harvest_cache_key(None, params) != key
    assert bd._harvest_cache_key(None, {**params, "incremental": True}) is None  # must re-read coverage


def test_resolve_tiles():
    city = load_city("sample")
    all_tiles = tiles_for_polygon(city.polygon)
    assert bd._resolve_tiles(city, None) == all_tiles
    assert bd._resolve_tiles(city, [all_tiles[-1], all_tiles[-1]]) == [all_tiles[-1]]
    with pytest.raises(ValueError, match="do not intersect city 'sample'"):
        bd._resolve_tiles(city, ["14/1/1"])
    with pytest.raises(ValueError, match="bad tile id"):
        bd._resolve_tiles(city, ["paris"])


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"width": 15}, "width=15"),
        ({"limit": 0}, "limit=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"network_retries": -1}, "network_retries=-1"),
    ],
)
def test_parameter_validation(kw, match):
    args = {"width": None, "limit": None, "batch_size": 8, "network_retries": 3, **kw}
    with pytest.raises(bd.BadParameterError, match=match):
        bd._validate(**args)


def test_layout(tmp_path):
    lay = bd.BuildLayout.create(tmp_path, "sample", None)
    assert lay.store_url == str(tmp_path.resolve() / "sample" / "dataset.zarr")
    assert lay.renders_dir(512) == tmp_path.resolve() / "sample" / "renders" / "w512"
    assert bd.BuildLayout.create(tmp_path, "sample", "/x/y.zarr").store_url == "/x/y.zarr"


def test_batches():
    assert bd._batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert bd._batches([], 3) == []


def test_trigger_training_is_detached_and_idempotent(monkeypatch):
    calls = []

    class _Run:
        id, name = "1234", "run-name"

    def fake_run_deployment(name, **kw):
        calls.append((name, kw))
        return _Run()

    import prefect.deployments

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    monkeypatch.setattr(bd, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    final = {"samples": 21, "fingerprint": "abc"}
    assert bd._trigger_training("train/train-gpu", "/o/sample/dataset.zarr", "tiny", final) == "1234"
    bd._trigger_training("train/train-gpu", "/o/sample/dataset.zarr", "tiny", final)
    (name, kw), (_, kw2) = calls
    assert name == "train/train-gpu" and kw["timeout"] == 0 and kw["as_subflow"] is False
    assert kw["parameters"] == {"dataset": "/o/sample/dataset.zarr", "config": "tiny"}
    assert kw["idempotency_key"] == kw2["idempotency_key"] and "abc" in kw["idempotency_key"]


def test_train_command_and_config():
    cfg = tr.resolve_config("tiny")
    assert cfg.name == "tiny.yaml" and cfg.is_file()
    assert tr.resolve_config(str(cfg)) == cfg
    with pytest.raises(FileNotFoundError, match="presets: .*tiny"):
        tr.resolve_config("no-such-config")
    cmd = tr.train_command(cfg, "/d.zarr", Path("/r"), resume=True, max_steps=5, overrides=["train.epochs=9"])
    assert cmd[:4] == [sys.executable, "-m", "s2r_train", "train"]
    assert cmd[cmd.index("--max-steps") + 1] == "5" and cmd[cmd.index("--set") + 1] == "train.epochs=9"
    assert "--no-resume" not in cmd
    assert "--no-resume" in tr.train_command(cfg, "/d.zarr", Path("/r"), resume=False, max_steps=None)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        tr.train_command(cfg, "/d.zarr", Path("/r"), resume=True, max_steps=None, overrides=["epochs"])
    assert tr.default_run_dir("outputs/paris/dataset.zarr") == Path("outputs/runs/paris")
    assert tr.default_run_dir("/data/berlin.zarr") == Path("outputs/runs/berlin")


def test_run_logged_forwards_lines_and_exit_code():
    lines = []
    rc = tr.run_logged([sys.executable, "-c", "print('a'); import sys; print('b', file=sys.stderr); sys.exit(3)"], log_line=lines.append)
    assert rc == 3 and lines == ["a", "b"]


def test_metrics_watcher_logs_new_steps_once(tmp_path):
    lines = []
    w = tr.MetricsWatcher(tmp_path, lines.append, max_steps=60)
    w.poll()  # no file yet: nothing
    (tmp_path / "metrics.jsonl").write_text('{"step": 4, "nimg": 16, "epoch": 0, "split": "val", "l1": 0.41}\n')
    w.poll()
    w.poll()  # same step: not repeated
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 10, "epoch": 2, "split": "train", "loss_g": 5.17, "loss_d": 1.86}\n')
    w.poll()
    assert lines == ["step 4/60 (16 images, epoch 0, val): l1 0.410",
                     "step 10/60 (epoch 2, train): loss_g 5.170, loss_d 1.860"]


def test_metrics_watcher_after_resume_shows_only_this_runs_records(tmp_path):
    """A resumed run appends to the previous run's metrics.jsonl; its first progress line must be
    its own, not the previous run's last record."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 200, "nimg": 800, "epoch": 9, "split": "train", "loss_g": 9.0}\n')
    lines = []
    w = tr.MetricsWatcher(tmp_path, lines.append, max_steps=400)
    w.poll()
    assert lines == []  # the previous run's record is not repeated
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 250, "nimg": 1000, "epoch": 11, "split": "train", "loss_g": 4.0}\n')
    w.poll()
    assert lines == ["step 250/400 (1000 images, epoch 11, train): loss_g 4.000"]


def test_train_task_is_tagged_by_the_device_it_uses(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tr.device_tags() == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tr.device_tags() == ["gpu"]
    assert "gpu" not in (tr.train_task.tags or set())  # no static tag: a CPU deployment's task is not "gpu"


def test_libraries_do_not_import_prefect():
    """Only flows/ may import prefect: the libraries stay plain Python (docs/architecture.md)."""
    import re

    repo = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(import prefect|from prefect[ .])", re.M)
    offenders = [
        str(p.relative_to(repo))
        for pkg in ("s2r_data", "s2r_train", "blender_scripts")
        for p in (repo / pkg).rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []
