"""Supervision of one Blender worker child process (``python -m blender_scripts.worker``).

Like BlenderProc's ``command_line.py``: explicit environment, own session (so the whole process
group can be killed), stderr to a log file, clean stop on exit. Events arrive through a reader
thread so every wait has a timeout (a hung Blender is detected and killed).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from . import protocol
from .settings import RenderSettings

__all__ = ["WorkerProcess", "WorkerTimeout", "WorkerDied", "WorkerFatal", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds s2r_data/ and blender_scripts/


class WorkerTimeout(RuntimeError):
    pass


class WorkerDied(RuntimeError):
    pass


class WorkerFatal(RuntimeError):
    """The worker reported a non-recoverable setup error (``kind`` from :mod:`.protocol`)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class WorkerProcess:
    def __init__(self, city_model_path: Path, settings: RenderSettings, log_path: Path, *, python_executable: str | None = None):
        self.city_model_path = Path(city_model_path)
        self.settings = settings
        self.log_path = Path(log_path)
        self.python_executable = python_executable or sys.executable
        self.proc: subprocess.Popen | None = None
        self.ready: dict[str, Any] = {}
        self._events: queue.Queue = queue.Queue()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Spawn, send ``init``, wait for ``ready``; returns the ready event."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        env["S2R_RENDER_SUPERVISOR_PID"] = str(os.getpid())  # the worker dies with this process
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.python_executable, "-m", "blender_scripts.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=str(REPO_ROOT),
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        finally:
            log.close()
        threading.Thread(target=self._read_events, args=(self.proc,), daemon=True, name=f"render-worker-{self.proc.pid}").start()
        self.send({"cmd": "init", "city_model_path": str(self.city_model_path), "settings": self.settings.to_dict()})
        msg = self.receive(self.settings.startup_timeout_s)
        if msg.get("event") == "fatal":
            self.wait_exit(10)
            raise WorkerFatal(str(msg.get("kind")), str(msg.get("message")))
        if msg.get("event") != "ready":
            self.kill()
            raise WorkerDied(f"render worker sent {msg!r} instead of 'ready'; log: {self.log_path}")
        self.ready = msg
        return msg

    def _read_events(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = protocol.decode(line)
            if msg is not None:
                self._events.put(msg)
        self._events.put(None)  # EOF: the process is gone (or closed stdout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(protocol.encode(message))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reader thread reports the death as EOF

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """Next event; raises :class:`WorkerTimeout` or :class:`WorkerDied`."""
        try:
            msg = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerTimeout(f"no reply from Blender worker (pid {self.pid}) within {timeout_s:g} s") from None
        if msg is None:
            code = self.wait_exit(10)
            raise WorkerDied(f"Blender worker (pid {self.pid}) exited with code {code}; last log lines: {self.log_tail()!r}")
        return msg

    def wait_exit(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ask the worker to quit; kill it if it does not within ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.send({"cmd": "quit"})
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self.wait_exit(timeout_s)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # own session: the group is just this worker
        except (ProcessLookupError, PermissionError):
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, n_lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n_lines:])

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop() if exc[0] is None else self.kill()
