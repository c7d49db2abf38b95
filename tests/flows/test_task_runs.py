"""Task runs of build-dataset as a Prefect server records them: names that carry the tile and the
batch's image-id range, and a start and an outcome line per task (stages stubbed: no network, no
Blender)."""

from __future__ import annotations

import logging

from prefect import flow
from prefect.runtime import task_run

from flows import build_dataset as bd
from flows import stages


def test_task_run_names_and_progress_lines(prefect_api, monkeypatch, caplog, tmp_path):
    def fake_harvest(city, tile_id, harvest_dir, **kw):
        return {"tile": tile_id, "skipped": False, "statuses": {"harvested": 5, "failed": 1}, "new": 5, "name": task_run.name}

    def fake_render(city_model_path, samples, renders_dir, store_url, **kw):
        items = [{"image_id": s["pose"]["image_id"], "render": "ok", "store": "written"} for s in samples]
        return {"items": items, "render_s": 1.5, "write_s": 0.5, "name": task_run.name}

    monkeypatch.setattr(stages, "harvest_tile", fake_harvest)
    monkeypatch.setattr(stages, "render_and_write_batch", fake_render)
    monkeypatch.setattr(stages, "tile_part_stamp", lambda d, t: None)  # no cache hits
    batches = [[{"pose": {"image_id": i}} for i in ids] for ids in (["101", "102", "107"], ["205"])]

    @flow
    def names() -> list[str]:
        h = bd.harvest_tile_task("sample", "14/8299/5639", str(tmp_path), "http://g", "http://t", False, {})
        r = bd.render_and_write_task.map("m.npz", batches, str(tmp_path), str(tmp_path / "s.zarr"), "sample", 64, 1)
        return [h["name"]] + [f.result()["name"] for f in r]

    caplog.set_level(logging.INFO, logger="prefect.task_runs")
    assert names() == ["harvest-tile-14/8299/5639", "render-and-write-101..107 (3)", "render-and-write-205 (1)"]
    lines = [r.getMessage() for r in caplog.records if r.name == "prefect.task_runs"]
    assert "tile 14/8299/5639: harvesting from http://g" in lines
    assert any(x.startswith("tile 14/8299/5639: 5 new; images: 1 failed, 5 harvested (") for x in lines), lines
    assert "batch 101..107 (3): rendering 3 panoramas (blender backend, 1 threads)" in lines
    assert "batch 101..107 (3): render 3 ok; store 3 written (1.5 s render, 0.5 s write)" in lines
    assert "batch 205 (1): render 1 ok; store 1 written (1.5 s render, 0.5 s write)" in lines
