"""The long-lived Blender render worker: ``python -m blender_scripts.worker`` (venv python, bpy module).

Started and supervised by :mod:`s2r_data.render.supervisor`; the protocol (JSON lines on stdin /
original stdout) is documented in :mod:`s2r_data.render.protocol`. The scene is built once from the
CityModel on ``init``; each ``render`` command moves the camera, renders to the scratch path and
replies with Cycles' wall time measured around ``render()``. Post-processing happens in the
supervisor, overlapping the next render.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from s2r_data.render import protocol

__all__ = ["main", "PanoRenderer"]


SUPERVISOR_PID_ENV = "S2R_RENDER_SUPERVISOR_PID"  # set by s2r_data.render.worker_process


def _die_with_supervisor() -> None:
    """Exit when the supervisor dies, ``kill -9`` included, even in the middle of a render.

    Linux: the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``; the parent
    is the supervisor thread that started this process, which stops its workers before it
    returns). Elsewhere a watchdog thread polls the parent pid. Either way, a supervisor that died
    before this ran is caught by comparing the parent pid with the one it announced."""
    import signal
    import threading

    expected = int(os.environ.get(SUPERVISOR_PID_ENV, "0") or 0)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            armed = ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if expected and os.getppid() != expected:
        os._exit(75)  # orphaned already
    if not armed and expected:

        def watch() -> None:
            while os.getppid() == expected:
                time.sleep(1.0)
            os._exit(75)

        threading.Thread(target=watch, daemon=True, name="supervisor-watchdog").start()


def _claim_protocol_stdout() -> TextIO:
    """Keep the original stdout for protocol events; route fd 1 (Blender's prints) to stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", buffering=1, encoding="utf-8")


@dataclass
class PanoRenderer:
    """Owns the built scene: camera object and settings. One per worker process."""

    scene: Any
    camera: Any
    device: str

    @classmethod
    def build(cls, city_model_path: str, settings) -> "PanoRenderer":
        from s2r_data.citymodel import CityModel

        from . import camera, materials, passes, photo_look, scene

        model = CityModel.load(city_model_path)  # CityModelError propagates (fatal)
        sc = scene.reset_scene()
        photo = settings.mode == "photo"
        mats = photo_look.photo_materials() if photo else materials.label_materials()
        scene.add_city_meshes(model, mats, with_uvs=photo)
        if photo:
            from s2r_data.photo_extras import load_photo_extras

            photo_look.add_photo_extras(load_photo_extras(city_model_path))  # stand-in world occluders, if any
            photo_look.sun_and_sky(sc)
        else:
            materials.black_world(sc)
        cam = camera.add_pano_camera(sc, clip_end_m=settings.clip_end_m)
        passes.configure_cycles(
            sc,
            width=settings.width,
            height=settings.height,
            samples=settings.resolved_samples,
            threads=settings.resolved_threads,
            bounces=2 if photo else 0,
            denoise=settings.denoise,
        )
        device = passes.select_device(sc, settings.device)
        if photo:
            passes.configure_photo_output(sc)
        else:
            passes.configure_label_passes(sc)
        return cls(sc, cam, device)

    def render(self, matrix_world_rows, out_path: str) -> float:
        """Render one pose to ``out_path``; returns seconds spent in ``render()``."""
        import bpy

        from .camera import set_matrix_world

        set_matrix_world(self.camera, matrix_world_rows)
        self.scene.render.filepath = out_path
        t0 = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        dt = time.perf_counter() - t0
        if not os.path.isfile(out_path):
            raise RuntimeError(f"Blender reported success but wrote no file at {out_path}")
        return dt


def _serve(out: TextIO, renderer: PanoRenderer) -> int:
    for line in sys.stdin:
        msg = protocol.decode(line)
        if msg is None:
            continue
        cmd = msg.get("cmd")
        if cmd == "quit":
            return 0
        if cmd != "render":
            out.write(protocol.encode({"event": "error", "seq": msg.get("seq"), "image_id": msg.get("image_id"), "message": f"unknown command {cmd!r}"}))
            continue
        fault = msg.get("fault")
        if fault == "crash":
            os._exit(70)  # test-only: simulate a Blender segfault
        if fault == "hang":
            time.sleep(10**6)  # test-only: simulate a hung render
        try:
            render_s = renderer.render(msg["matrix_world"], msg["out_path"])
        except Exception as e:  # one pose failed; the worker stays usable
            out.write(protocol.encode({"event": "error", "seq": msg.get("seq"), "image_id": msg.get("image_id"), "message": f"{type(e).__name__}: {e}"}))
            continue
        out.write(protocol.encode({"event": "rendered", "seq": msg["seq"], "image_id": msg["image_id"], "out_path": msg["out_path"], "render_s": render_s}))
    return 0  # stdin closed: supervisor gone


def main() -> int:
    _die_with_supervisor()
    out = _claim_protocol_stdout()
    t0 = time.perf_counter()
    from .bpy_import import BpyMissingError, import_bpy

    try:
        bpy = import_bpy()
    except BpyMissingError as e:
        out.write(protocol.encode({"event": "fatal", "kind": protocol.FATAL_BPY_MISSING, "message": str(e)}))
        return 3
    import_s = time.perf_counter() - t0

    from s2r_data.citymodel import CityModelError
    from s2r_data.render.settings import RenderSettings

    init = None
    for line in sys.stdin:
        init = protocol.decode(line)
        if init is not None:
            break
    if init is None or init.get("cmd") != "init":
        out.write(protocol.encode({"event": "fatal", "kind": protocol.FATAL_INIT, "message": f"expected an init command first, got {init!r}"}))
        return 2
    t1 = time.perf_counter()
    try:
        settings = RenderSettings.from_dict(init["settings"])
        renderer = PanoRenderer.build(init["city_model_path"], settings)
    except CityModelError as e:
        out.write(protocol.encode({"event": "fatal", "kind": protocol.FATAL_CITY_MODEL, "message": str(e)}))
        return 4
    except Exception as e:
        out.write(protocol.encode({"event": "fatal", "kind": protocol.FATAL_INIT, "message": f"{type(e).__name__}: {e}"}))
        return 5
    out.write(
        protocol.encode(
            {
                "event": "ready",
                "blender_version": bpy.app.version_string,
                "device": renderer.device,
                "import_s": import_s,
                "scene_build_s": time.perf_counter() - t1,
                "pid": os.getpid(),
            }
        )
    )
    return _serve(out, renderer)


if __name__ == "__main__":
    sys.exit(main())
