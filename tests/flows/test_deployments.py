"""Integration: a real Prefect server, work pools, ``prefect deploy --all`` from prefect.yaml, a
process worker, and ``prefect deployment run 'build-dataset/build-dataset'`` on the sample city
(replay server; the token comes from the Secret block ``mapillary-token``).

Scenario (one server session, ~2-3 min): run → kill the worker (and its flow run, Blender) in the
middle of rendering → a new worker and a new run complete without re-harvesting, re-rendering
finished panoramas or duplicating samples → a run with an unknown city fails with a message that
names it. Everything started here is stopped, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from s2r_data.mapillary.replay import ReplayServer
from s2r_data.mapillary.table import read_table, table_rows

from .conftest import REPO, TEST_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.blender]

PREFECT = str(Path(sys.executable).with_name("prefect"))
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """All descendant pids (from /proc), children first discovered first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal ``proc`` and every process it started (flow-run subprocess, Blender worker)."""
    if proc.poll() is not None:
        return
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Stack:
    """The processes of one test session; :meth:`close` stops all of them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.port = port
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        self.env.pop("MAPILLARY_TOKEN", None)  # the flow must find the token in the Secret block
        self.procs: list[subprocess.Popen] = []
        self.t0 = time.monotonic()

    def spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        p = subprocess.Popen(args, env={**self.env, **(extra_env or {})}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def cli_start(self, *args: str) -> subprocess.Popen:
        """Start ``prefect <args>`` (finish with :meth:`cli_finish`): independent CLI calls overlap."""
        p = subprocess.Popen([PREFECT, *args], env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        p.args_text = " ".join(args)  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def cli_finish(self, p: subprocess.Popen, timeout: float = 180) -> str:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"prefect {p.args_text} failed ({p.returncode}):\n{out}"  # type: ignore[attr-defined]
        return out

    def cli(self, *args: str, timeout: float = 180) -> str:
        return self.cli_finish(self.cli_start(*args), timeout)

    def phase(self, what: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {what}", flush=True)

    def start_server(self) -> None:
        self.spawn("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.api}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            assert self.procs[0].poll() is None, (self.tmp / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        pytest.fail("prefect server did not answer /api/health within 180 s:\n" + (self.tmp / "server.log").read_text()[-3000:])

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.spawn(name, [PREFECT, "worker", "start", "--pool", "cpu-pool", "--name", name],
                          {"S2R_PROJECT_DIR": str(REPO)})

    def submit(self, name: str, params: dict, job_env: dict[str, str] | None = None) -> subprocess.Popen:
        """``prefect deployment run NAME --param k=v ...`` (started; :meth:`run_id` waits for it)."""
        args = ["deployment", "run", name]
        for k, v in params.items():
            args += ["--param", f"{k}={json.dumps(v)}"]
        if job_env:
            args += ["--job-variable", f"env={json.dumps(job_env)}"]
        return self.cli_start(*args)

    def run_id(self, p: subprocess.Popen) -> str:
        out = self.cli_finish(p)
        m = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert m, f"no flow run id in:\n{out}"
        return m.group(1)

    def run_deployment(self, name: str, params: dict, job_env: dict[str, str] | None = None) -> str:
        return self.run_id(self.submit(name, params, job_env))

    def flow_run(self, run_id: str) -> dict:
        r = requests.get(f"{self.api}/flow_runs/{run_id}", timeout=10)
        r.raise_for_status()
        return r.json()

    def wait(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fr = self.flow_run(run_id)
            if fr["state_type"] in TERMINAL:
                return fr
            time.sleep(1)
        pytest.fail(f"flow run {run_id} not finished after {timeout} s (state {fr['state_type']}); logs in {self.tmp}")

    def logs(self, run_id: str) -> str:
        r = requests.post(f"{self.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}, timeout=10)
        r.raise_for_status()
        return "\n".join(x["message"] for x in r.json())

    def close(self) -> None:
        for p in reversed(self.procs):
            _kill_tree(p, signal.SIGTERM if p is self.procs[0] else signal.SIGKILL)


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _render_files(out: Path, width: int) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "sample" / "renders" / f"w{width}").glob("*.npz")}


def test_deploy_run_crash_resume_and_bad_input(stack, sample_content, tmp_path):
    from s2r_data.store import open_dataset, verify

    out = tmp_path / "outputs"
    width = 128
    with ReplayServer(sample_content, TEST_TOKEN) as srv:
        stack.start_server()
        stack.phase("server up")
        pools = [stack.cli_start("work-pool", "create", name, "--type", "process") for name in ("cpu-pool", "gpu-pool")]
        for p in pools:
            stack.cli_finish(p)
        stack.phase("work pools created")
        worker = stack.start_worker("worker-1")
        deploy = stack.cli_start("--no-prompt", "deploy", "--all")
        secret = subprocess.Popen(
            [sys.executable, "-c", f"from prefect.blocks.system import Secret; Secret(value={TEST_TOKEN!r}).save('mapillary-token', overwrite=True)"],
            env=stack.env, start_new_session=True,
        )
        stack.procs.append(secret)
        stack.cli_finish(deploy)
        assert secret.wait(timeout=180) == 0, "saving the Secret block failed"
        r = requests.post(f"{stack.api}/deployments/filter", json={}, timeout=10)
        deployments = {d["name"]: d for d in r.json()}
        assert {"build-dataset", "train-gpu", "train-cpu"} <= set(deployments), sorted(deployments)
        build = deployments["build-dataset"]
        assert build["work_pool_name"] == "cpu-pool" and deployments["train-gpu"]["work_pool_name"] == "gpu-pool"
        (weekly,) = build["schedules"]  # the example schedule exists but is off
        assert weekly["active"] is False and weekly["parameters"] == {"city": "paris", "incremental": True}
        stack.phase("deployed (prefect deploy --all), Secret block saved, worker-1 started")
        params = {"city": "sample", "width": width, "out_dir": str(out), "graph_url": srv.graph_url,
                  "tiles_url": srv.tiles_url, "batch_size": 2, "preview_count": 1}
        one_at_a_time = {"S2R_TASK_WORKERS": "1"}  # sequential batches: a crash lands mid-render

        # 1. run, then kill the worker with its flow run while panoramas are being rendered
        run1 = stack.run_deployment("build-dataset/build-dataset", params, one_at_a_time)
        stack.phase(f"flow run {run1} submitted")
        deadline = time.monotonic() + 240
        while len(_render_files(out, width)) < 3:
            fr = stack.flow_run(run1)
            assert fr["state_type"] not in TERMINAL, f"run ended before the crash: {fr['state']}\n{stack.logs(run1)}"
            assert time.monotonic() < deadline, f"no renders after 240 s\n{stack.logs(run1)}"
            time.sleep(0.2)
        _kill_tree(worker)
        stack.phase(f"worker-1 killed with {len(_render_files(out, width))} panoramas rendered")
        time.sleep(1)
        harvested = sorted(r["image_id"] for r in table_rows(read_table(out / "sample" / "harvest" / "harvest.parquet"))
                           if r["status"] == "harvested")
        before = _render_files(out, width)
        assert 0 < len(before) < len(harvested), "the crash should interrupt the rendering"

        # 2. a new worker and a new run finish the job; nothing finished is redone.
        # 3. at the same time, bad input reaches the user as a failed run that names the problem
        srv.reset_log()
        stack.start_worker("worker-2")
        # the resumed build also asks for training: a detached run of train/train-gpu (no GPU
        # worker here, so it stays Scheduled)
        submit2 = stack.submit("build-dataset/build-dataset", {**params, "train_after": True, "train_deployment": "train/train-gpu"})
        submit_bad = stack.submit("build-dataset/build-dataset", {**params, "city": "atlantis"})
        run2, bad = stack.run_id(submit2), stack.run_id(submit_bad)
        stack.phase("worker-2 started, resume run and bad-input run submitted")
        fr = stack.wait(run2, timeout=300)
        assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{stack.logs(run2)}"
        stack.phase("resume run completed")
        assert srv.request_counts() == {"tile": 0, "graph": 0, "image": 0}  # harvest was complete
        after = _render_files(out, width)
        assert {k: after[k] for k in before} == before  # finished renders untouched
        assert sorted(after) == sorted(f"{i}.npz" for i in harvested)
        ds = open_dataset(out / "sample" / "dataset.zarr")
        assert sorted(ds.image_ids) == harvested and len(set(ds.image_ids)) == len(ds.image_ids)
        assert verify(out / "sample" / "dataset.zarr").ok
        report = json.loads((out / "sample" / "report" / "report.json").read_text())
        assert report["counts"]["rendered_now"] == len(harvested) - len(before)

        r = requests.post(f"{stack.api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": None}}, timeout=10)
        train_runs = [f for f in r.json() if f["parameters"].get("dataset") == str(out / "sample" / "dataset.zarr")]
        assert len(train_runs) == 1 and train_runs[0]["state_type"] == "SCHEDULED", train_runs
        assert report["train_flow_run"] == train_runs[0]["id"]

        fr = stack.wait(bad, timeout=120)
        assert fr["state_type"] == "FAILED"
        assert "unknown city 'atlantis'" in (fr["state"]["message"] or "") + stack.logs(bad)
        stack.phase("bad-input run failed as expected")
