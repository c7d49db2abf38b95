"""Worker-local render handles: a second batch of the same city model (by content) and settings
reuses the loaded model and the live Blender worker; other settings get their own; close_all
stops the workers; a failing batch does not leave its worker in the cache."""

from __future__ import annotations

import shutil

import pytest

from s2r_data.render import RenderSettings
from s2r_data.render import handles

from .scene_kit import box_city
from .test_batch import BUILDING, W, _alive, _poses


@pytest.fixture()
def fresh_cache():
    handles.close_all()
    yield
    handles.close_all()


@pytest.mark.blender
@pytest.mark.slow
def test_batches_reuse_the_model_and_the_blender_worker(tmp_path, fresh_cache):
    model_path = box_city([BUILDING], ground_half_m=50.0, footprint_boxes=[BUILDING]).save(tmp_path / "a" / "city_model.npz")
    copy = tmp_path / "b" / "city_model.npz"  # same content, other path: same handle
    copy.parent.mkdir()
    shutil.copy(model_path, copy)
    settings = RenderSettings(width=W, threads=1, timeout_s=120)
    before = handles.handle_stats()
    with handles.render_handle(model_path, settings) as h1:
        first = h1.render(_poses(2, "a"), tmp_path / "out")
        model = h1.model
    with handles.render_handle(copy, settings) as h2:
        second = h2.render(_poses(2, "b"), tmp_path / "out")
        assert h2 is h1 and h2.model is model  # loaded once
    assert [r.status for r in first + second] == ["ok"] * 4
    pids = {r.worker_pid for r in first + second}
    assert len(pids) == 1 and h1.keeper.started == 1  # one Blender process for both batches
    (pid,) = pids
    assert _alive(pid)
    with handles.render_handle(model_path, RenderSettings(width=W, threads=2, timeout_s=120)) as other:
        assert other is not h1  # other settings: another handle
    stats = handles.handle_stats()
    assert stats["created"] - before["created"] == 2 and stats["reused"] - before["reused"] == 1
    assert handles.close_all() == 2
    assert not _alive(pid)


def test_a_failing_batch_closes_its_handle(tmp_path, fresh_cache, monkeypatch):
    closed = []

    class Fake:
        def __init__(self, path, settings):
            self.path = path

        def render(self, poses, out_dir, *, on_result=None):
            raise RuntimeError("boom")

        def close(self, wait=True):
            closed.append(self)

    monkeypatch.setitem(handles.HANDLE_TYPES, "blender", Fake)
    model_path = tmp_path / "m.npz"
    model_path.write_bytes(b"content")
    with pytest.raises(RuntimeError, match="boom"):
        with handles.render_handle(model_path, RenderSettings(width=W)) as h:
            h.render([], tmp_path)
    assert closed == [h] and handles.handle_stats()["idle"] == 0
    kept = []
    for _ in range(handles.MAX_IDLE_HANDLES + 1):  # idle handles are bounded: the oldest is closed
        with handles.render_handle(model_path, RenderSettings(width=W, threads=len(kept) + 1)) as h:
            kept.append(h)
    assert closed[1:] == [kept[0]] and handles.handle_stats()["idle"] == handles.MAX_IDLE_HANDLES
