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
    retry = {**params, "harvest_overrides": {"retry_quarantined": True}}
    assert bd._harvest_cache_key(None, retry) is None  # must look at the quarantined ids again


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


def test_train_task_is_tagged_by_the_device_it_uses():
    assert tr.device_tags(tr.training_device(allow_cpu=True, status=(False, "no driver"))) == ["cpu"]
    assert tr.device_tags(tr.training_device(allow_cpu=False, status=(True, ""))) == ["gpu"]
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


def test_training_device_refuses_the_cpu_unless_allowed():
    no_gpu = (False, "torch 2.x+cpu is a CPU-only build")
    with pytest.raises(tr.NoGpuError, match="no CUDA GPU on worker .*CPU-only build.*train/train-cpu.*allow_cpu=true"):
        tr.training_device(False, no_gpu)
    assert tr.training_device(True, no_gpu) == "cpu"
    assert tr.training_device(False, (True, "1 CUDA device(s)")) == "cuda"
    assert tr.training_device(True, (True, "1 CUDA device(s)")) == "cuda"


def test_cuda_status_agrees_with_torch():
    import torch

    ok, why = tr.cuda_status()
    assert ok == torch.cuda.is_available()
    assert torch.__version__ in why or ok


def test_cpu_loader_workers_leave_a_core_to_training():
    assert tr.cpu_loader_workers(8, 2) == 1
    assert tr.cpu_loader_workers(8, 16) == 8
    assert tr.cpu_loader_workers(0, 2) == 0
    assert tr.cpu_loader_workers(4, 1) == 0
    assert tr.cpu_loader_workers(4, None) == 0
    cmd = tr.train_command(Path("c.yaml"), "/d.zarr", Path("/r"), resume=True, max_steps=None, device="cpu")
    assert cmd[cmd.index("--device") + 1] == "cpu"
    assert "--device" not in tr.train_command(Path("c.yaml"), "/d.zarr", Path("/r"), resume=True, max_steps=None)


def test_check_dataset_here_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "paris" / "dataset.zarr").mkdir(parents=True)
    tr.check_dataset_here("outputs/paris/dataset.zarr")
    tr.check_dataset_here("s3://bucket/paris.zarr")  # remote: the trainer's business
    tr.check_dataset_here("synthetic://8")
    with pytest.raises(FileNotFoundError, match=r"outputs/rome/dataset.zarr.*S2R_PROJECT_DIR = " + str(tmp_path)):
        tr.check_dataset_here("outputs/rome/dataset.zarr")


def test_dataset_location_for_training_is_resolvable_on_another_worker(tmp_path, monkeypatch):
    project = tmp_path / "checkout"
    project.mkdir()
    loc = bd.dataset_location_for_training
    assert loc(str(project / "outputs" / "paris" / "dataset.zarr"), project) == "outputs/paris/dataset.zarr"
    assert loc(f"file://{project}/outputs/paris/dataset.zarr", project) == "outputs/paris/dataset.zarr"
    monkeypatch.chdir(project)
    assert loc("outputs/paris/dataset.zarr", project) == "outputs/paris/dataset.zarr"
    assert loc("s3://bucket/s2r/paris.zarr", project) == "s3://bucket/s2r/paris.zarr"
    assert loc("/mnt/shared/paris.zarr", project) == "/mnt/shared/paris.zarr"  # shared file system


def test_trigger_training_passes_the_project_relative_store(monkeypatch, tmp_path):
    calls = []

    class _Run:
        id, name = "1234", "run-name"

    import prefect.deployments

    monkeypatch.setattr(prefect.deployments, "run_deployment", lambda name, **kw: calls.append(kw) or _Run())
    monkeypatch.setattr(bd, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    monkeypatch.chdir(tmp_path)  # the pull step entered the project directory
    final = {"samples": 21, "fingerprint": "abc"}
    bd._trigger_training("train/train-gpu", str(tmp_path / "outputs" / "sample" / "dataset.zarr"), None, final)
    bd._trigger_training("train/train-gpu", str(tmp_path / "outputs" / "sample" / "dataset.zarr"), None, final,
                         dataset_url="s3://b/sample.zarr")
    assert calls[0]["parameters"] == {"dataset": "outputs/sample/dataset.zarr"}
    assert calls[1]["parameters"] == {"dataset": "s3://b/sample.zarr"}


def test_task_run_names_carry_the_tile_and_the_batch_range():
    assert bd._harvest_run_name({"tile_id": "14/8299/5639", "city": "sample"}) == "harvest-tile-14/8299/5639"
    batch = [{"pose": {"image_id": i}} for i in ("1001", "1002", "1009")]
    assert bd._render_run_name({"samples": batch}) == "render-and-write-1001..1009 (3)"
    assert bd._render_run_name({"samples": batch[:1]}) == "render-and-write-1001 (1)"
