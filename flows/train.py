"""Flow ``train``: a dataset → checkpoints, TensorBoard logs and sample grids (GPU work pools).

The flow calls the trainer's command line (``python -m s2r_train train ...``) in a child
process: the child owns the GPU memory, a crash cannot take the worker down, and resuming is
the trainer's own contract (rerun the same command with ``--resume``). Output lines are
forwarded to the flow run's log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from .report import evaluation_markdown

__all__ = ["train", "resolve_config", "train_command", "run_logged", "MetricsWatcher", "last_logged_step", "TrainingFailedError"]


class TrainingFailedError(RuntimeError):
    pass


class NoGpuError(RuntimeError):
    """The worker has no usable CUDA device and the run did not allow CPU training."""


def cuda_status() -> tuple[bool, str]:
    """(CUDA usable, why not): asks torch in this process (the child trains on the same machine)."""
    import torch

    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} in {sys.executable} is a CPU-only build"
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        return False, f"torch {torch.__version__} sees no CUDA device{extra}"
    return True, f"{torch.cuda.device_count()} CUDA device(s)"  # no device query: no CUDA context in this process


def training_device(allow_cpu: bool, status: tuple[bool, str] | None = None) -> str:
    """``"cuda"`` when this worker has a CUDA device, else ``"cpu"`` if ``allow_cpu``, else
    :class:`NoGpuError` naming the cause and the two ways out."""
    ok, why = status if status is not None else cuda_status()
    if ok:
        return "cuda"
    if allow_cpu:
        return "cpu"
    import socket

    raise NoGpuError(
        f"no CUDA GPU on worker {socket.gethostname()} ({why}): refusing to train on the CPU. Run the "
        "deployment on a GPU worker (gpu-pool), or use train/train-cpu, or pass --param allow_cpu=true "
        "to train on the CPU anyway (slow; meant for small configs such as tiny)"
    )


def cpu_loader_workers(configured: int, cpu_count: int | None) -> int:
    """Loader processes for CPU training: the config's, but leaving a core to the training process."""
    return min(configured, max(0, (cpu_count or 1) - 1))


def resolve_config(config: str) -> Path:
    """A YAML path, or a preset name in ``s2r_train/configs`` (``tiny`` → ``configs/tiny.yaml``)."""
    p = Path(config)
    if p.is_file():
        return p.resolve()
    try:
        from s2r_train.config import PRESET_DIR
    except ImportError:  # pragma: no cover
        PRESET_DIR = Path(__file__).resolve().parent.parent / "s2r_train" / "configs"
    for cand in (PRESET_DIR / config, PRESET_DIR / f"{config}.yaml"):
        if cand.is_file():
            return cand.resolve()
    presets = sorted(q.stem for q in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
    raise FileNotFoundError(f"training config {config!r} is neither a file nor a preset; presets: {', '.join(presets) or 'none'} (in {PRESET_DIR})")


def default_run_dir(dataset: str) -> Path:
    name = Path(dataset.rstrip("/")).name.removesuffix(".zarr") or "dataset"
    parent = Path(dataset.rstrip("/")).parent.name if name == "dataset" else ""
    return Path("outputs") / "runs" / (parent or name)


def train_command(
    config: Path, dataset: str, run_dir: Path, *, resume: bool, max_steps: int | None, overrides: Sequence[str] = (),
    device: str | None = None,
) -> list[str]:
    cmd = [sys.executable, "-m", "s2r_train", "train", "--config", str(config), "--dataset", dataset, "--run-dir", str(run_dir), "--no-progress"]
    if device is not None:
        cmd += ["--device", device]
    if not resume:
        cmd.append("--no-resume")  # the trainer resumes from the newest checkpoint by default
    if max_steps is not None:
        cmd += ["--max-steps", str(int(max_steps))]
    for ov in overrides:
        if "=" not in ov:
            raise ValueError(f"override {ov!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=50")
        cmd += ["--set", ov]
    return cmd


def run_logged(cmd: Sequence[str], *, log_line, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Run ``cmd``, passing each output line to ``log_line``; returns the exit code. Ctrl-C or a
    cancelled flow run terminates the child."""
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, cwd=cwd
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                log_line(line)
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def last_logged_step(run_dir: str | Path) -> int:
    """The newest optimizer step in ``run_dir/metrics.jsonl`` (0 if none)."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except ValueError:
            continue
        if isinstance(step, int):
            return step
    return 0


class MetricsWatcher(threading.Thread):
    """Logs the trainer's progress every ``every_s``: the newest record that THIS run appended to
    ``run_dir/metrics.jsonl`` (records of earlier runs in the same run dir, present when the
    watcher starts, are never shown: a resumed run's first line is its own). Steps are optimizer
    steps, as ``max_steps``; the images seen are named."""

    def __init__(self, run_dir: Path, log_line, every_s: float = 20.0, max_steps: int | None = None):
        super().__init__(name="train-metrics-watcher", daemon=True)
        self.path = Path(run_dir) / "metrics.jsonl"
        self.log_line, self.every_s, self.max_steps = log_line, every_s, max_steps
        self.stop = threading.Event()
        self._last_step: int | None = None
        try:
            self._offset = self.path.stat().st_size  # earlier runs' records end here
        except OSError:
            self._offset = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                if fh.seek(0, os.SEEK_END) < self._offset:  # replaced by a shorter file: read it all
                    self._offset = 0
                fh.seek(self._offset)
                lines = fh.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            step = rec.get("step")
            if step is None or step == self._last_step:
                return
            self._last_step = step
            of = f"/{self.max_steps}" if self.max_steps else ""
            keys = ("loss_g", "loss_d", "l1", "psnr")
            vals = ", ".join(f"{k} {rec[k]:.3f}" for k in keys if isinstance(rec.get(k), (int, float)))
            seen = f"{rec['nimg']} images, " if isinstance(rec.get("nimg"), int) else ""
            self.log_line(f"step {step}{of} ({seen}epoch {rec.get('epoch')}, {rec.get('split', '?')}): {vals}")
            return

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.poll()


def device_tags(device: str) -> list[str]:
    """Tags of the training task run: ``gpu`` when it trains on CUDA (see :func:`training_device`),
    else ``cpu``, so a tag concurrency limit on ``gpu`` counts only trainings that hold a GPU."""
    return ["gpu"] if device == "cuda" else ["cpu"]


@task(name="train-model")
def train_task(
    config: str, dataset: str, run_dir: str, resume: bool, max_steps: int | None, overrides: list[str], device: str | None = None
) -> dict[str, Any]:
    log = get_run_logger()
    cmd = train_command(Path(config), dataset, Path(run_dir), resume=resume, max_steps=max_steps, overrides=overrides, device=device)
    log.info("running: %s", " ".join(cmd[1:]))
    tail: list[str] = []

    def log_line(line: str) -> None:
        tail.append(line)
        del tail[:-30]
        log.info(line)

    watcher = MetricsWatcher(Path(run_dir), log.info, max_steps=max_steps)
    watcher.start()
    try:
        rc = run_logged(cmd, log_line=log_line, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        watcher.stop.set()
    if rc != 0:
        raise TrainingFailedError(f"training exited with status {rc}; last lines:\n" + "\n".join(tail[-15:]))
    return describe_run_dir(Path(run_dir))


def check_dataset_here(dataset: str) -> None:
    """A local dataset path must exist on this worker (remote URLs and ``synthetic://`` are left to
    the trainer); the error names where a relative path was looked up."""
    if "://" in dataset and not dataset.startswith("file://"):
        return
    path = Path(dataset.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {dataset!r} not found on this worker (looked at {path.resolve()}; relative paths are "
            f"resolved in the worker's project directory, $S2R_PROJECT_DIR = {Path.cwd()}): sync or mount the "
            "dataset there, or pass its URL (s3://..., or the path as this machine sees it)"
        )


def _cpu_overrides(config: Path, overrides: Sequence[str]) -> list[str]:
    """``train.num_workers`` capped for the CPU (a GPU config asks for 8 loader processes)."""
    from s2r_train.config import load_config

    if any(o.split("=", 1)[0].strip() == "train.num_workers" for o in overrides):
        return []
    configured = load_config(config, list(overrides)).train.num_workers
    workers = cpu_loader_workers(configured, os.cpu_count())
    if workers == configured:
        return []
    get_run_logger().warning(
        "training on the CPU: %d loader workers instead of the config's %d (%d cores); override with train.num_workers=N",
        workers, configured, os.cpu_count() or 1,
    )
    return [f"train.num_workers={workers}"]


def describe_run_dir(run_dir: Path) -> dict[str, Any]:
    """Checkpoints, TensorBoard event files and image grids found in a run directory."""
    ckpts = sorted(str(p) for p in run_dir.rglob("*.pt"))
    events = sorted({str(p.parent) for p in run_dir.rglob("events.out.tfevents.*")})
    images = sorted(str(p) for p in run_dir.rglob("*.png"))
    return {"run_dir": str(run_dir.resolve()), "checkpoints": ckpts, "tensorboard_dirs": events, "images": images[-8:]}


@flow(name="train", description="Train the sim→real GAN on a dataset; rerun with resume=true to continue.")
def train(
    dataset: str,
    config: str = "tiny",
    run_dir: str | None = None,
    resume: bool = True,
    max_steps: int | None = None,
    overrides: list[str] | None = None,
    allow_cpu: bool = False,
) -> dict[str, Any]:
    """Train on ``dataset`` (a store URL written by build-dataset).

    Args:
        dataset: the Zarr store URL (e.g. ``outputs/paris/dataset.zarr``); a relative path is
            resolved in the worker's project directory (``$S2R_PROJECT_DIR``).
        config: a training YAML path or a preset name in ``s2r_train/configs`` (e.g. ``tiny``).
        run_dir: where checkpoints and logs go; default ``outputs/runs/<city>``.
        resume: continue from the newest checkpoint in ``run_dir`` (a no-op when there is none);
            false fails if ``run_dir`` already holds checkpoints.
        max_steps: stop at this absolute optimizer step (default: the config's epochs).
        overrides: config overrides ``KEY=VALUE`` (dotted keys), e.g. ``["train.epochs=50"]``.
        allow_cpu: train on the CPU when the worker has no CUDA GPU (default: refuse, naming the
            cause); on the CPU the loader uses at most ``cpu_count - 1`` worker processes unless
            ``train.num_workers`` is overridden.
    """
    if not dataset:
        raise ValueError("parameter 'dataset' is required: the store URL written by build-dataset, e.g. outputs/paris/dataset.zarr")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps={max_steps}: must be >= 1 or null")
    cfg = resolve_config(config)
    check_dataset_here(dataset)
    device = training_device(allow_cpu)
    overrides = list(overrides or [])
    if device == "cpu":
        overrides += _cpu_overrides(cfg, overrides)
    run_path = Path(run_dir) if run_dir else default_run_dir(dataset)
    result = train_task.with_options(tags=device_tags(device))(str(cfg), dataset, str(run_path), resume, max_steps,
                                                             overrides, device)
    lines = [
        f"# Training run `{result['run_dir']}`",
        "",
        f"- dataset: `{dataset}`",
        f"- config: `{cfg}`",
        f"- checkpoints: {len(result['checkpoints'])} (newest `{result['checkpoints'][-1] if result['checkpoints'] else '-'}`)",
        f"- TensorBoard: `tensorboard --logdir {result['run_dir']}`",
    ] + evaluation_markdown(Path(result["run_dir"]) / "eval")
    create_markdown_artifact("\n".join(lines) + "\n", key="train-run", description="training run outputs")
    return result
