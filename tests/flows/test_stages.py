"""flows.stages: the plain step functions (no Prefect, no Blender, no network)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from flows import stages
from s2r_data.cities import load_city
from s2r_data.mapillary.records import make_row
from s2r_data.mapillary.table import rows_to_table, tile_part_path, write_table
from s2r_data.poses import pose_from_mapillary

RECORDS = json.loads((Path(__file__).resolve().parents[1] / "data" / "pose_records.json").read_text())["records"]
TILE = "14/8299/5639"


def _row(rec, status="harvested", image_path=None, image_sha256=None):
    if image_path is None and status == "harvested":
        image_path = f"images/{rec['id']}.jpg"
    return make_row(
        image_id=rec["id"], tile=TILE, status=status, reason=None if status == "harvested" else "not_pano: x",
        harvested_at_ms=1_700_000_000_000, record=rec, image_path=image_path, image_sha256=image_sha256,
    )


def _write_table(path, rows, complete=True):
    return write_table(rows_to_table(rows, {"complete": "true"} if complete else {}), path)


def test_record_from_row_gives_the_same_pose_as_the_graph_record():
    frame = load_city("sample").frame
    for rec in RECORDS:
        row = _row(rec)
        direct = pose_from_mapillary(rec, frame)
        via_row = pose_from_mapillary(stages.record_from_row(row), frame)
        np.testing.assert_allclose(via_row.center_local_m, direct.center_local_m, atol=1e-9)
        np.testing.assert_allclose(via_row.R_world_to_cam_opensfm, direct.R_world_to_cam_opensfm, atol=1e-12)
        assert via_row.confidence == direct.confidence


def test_poses_from_harvest_sorts_limits_and_counts_failures(tmp_path):
    city = load_city("sample")
    no_orientation = {"id": "999", "computed_geometry": {"type": "Point", "coordinates": [2.365, 48.821]}}
    rows = [_row(r) for r in RECORDS] + [_row(no_orientation), _row({"id": "555"}, status="quarantined")]
    table = _write_table(tmp_path / "harvest.parquet", rows)
    poses, failures = stages.poses_from_harvest(table, city)
    assert [p.image_id for p in poses] == sorted(r["id"] for r in RECORDS)
    assert failures == {"pose:no_orientation": 1}
    assert [p.image_id for p in stages.poses_from_harvest(table, city, tiles=[TILE])[0]] == [p.image_id for p in poses]
    assert stages.poses_from_harvest(table, city, tiles=["14/8300/5639"]) == ([], {})  # rows of other tiles
    limited, _ = stages.poses_from_harvest(table, city, limit=3)
    assert [p.image_id for p in limited] == sorted(r["id"] for r in RECORDS)[:3]
    specs = stages.sample_specs(limited, tmp_path, table)
    assert [s.pose.image_id for s in specs] == [p.image_id for p in limited]
    back = stages.SampleSpec.from_dict(json.loads(json.dumps(specs[0].to_dict())))
    np.testing.assert_allclose(back.pose.R_world_to_cam_opensfm, specs[0].pose.R_world_to_cam_opensfm)
    assert back.tile == TILE and back.captured_at_ms == specs[0].captured_at_ms


def test_tile_part_complete_is_the_output_check(tmp_path):
    rec = RECORDS[0]
    (tmp_path / "images").mkdir()
    img = tmp_path / "images" / f"{rec['id']}.jpg"
    img.write_bytes(b"jpeg")
    sha = hashlib.sha256(b"jpeg").hexdigest()
    part = tile_part_path(tmp_path, TILE)
    assert not stages.tile_part_complete(tmp_path, TILE) and stages.tile_part_stamp(tmp_path, TILE) is None
    _write_table(part, [_row(rec, image_path=f"images/{rec['id']}.jpg", image_sha256=sha)], complete=False)
    assert not stages.tile_part_complete(tmp_path, TILE)  # written but not marked complete
    _write_table(part, [_row(rec, image_path=f"images/{rec['id']}.jpg", image_sha256="0" * 64)])
    assert not stages.tile_part_complete(tmp_path, TILE)  # the image on disk is not the one recorded
    _write_table(part, [_row(rec, image_path=f"images/{rec['id']}.jpg", image_sha256=sha)])
    assert stages.tile_part_complete(tmp_path, TILE)
    stamp = stages.tile_part_stamp(tmp_path, TILE)
    assert stamp and stamp.startswith(f"{part.stat().st_size}-")
    img.unlink()  # an image went missing: the tile must be harvested again
    assert not stages.tile_part_complete(tmp_path, TILE)


def test_check_harvest_overrides():
    assert stages.check_harvest_overrides({"max_retries": 0}) == {"max_retries": 0}
    with pytest.raises(ValueError, match="unknown HarvestConfig keys"):
        stages.check_harvest_overrides({"max_retry": 0})
    with pytest.raises(ValueError, match="flow parameters"):
        stages.check_harvest_overrides({"graph_url": "http://x"})


def test_rate_parameters_join_the_overrides():
    got = stages.check_harvest_overrides({"max_retries": 0}, tiles_rate_per_min=30.0, tiles_burst=None, graph_burst=4)
    assert got == {"max_retries": 0, "tiles_rate_per_min": 30.0, "graph_burst": 4}
    assert stages.check_harvest_overrides({"graph_burst": 4}, graph_burst=4) == {"graph_burst": 4}
    with pytest.raises(ValueError, match="graph_burst is given twice"):
        stages.check_harvest_overrides({"graph_burst": 4}, graph_burst=5)
    with pytest.raises(ValueError, match="tiles_rate_per_min"):
        stages.check_harvest_overrides({}, tiles_rate_per_min=0.0)


def test_city_for_task_with_an_area():
    area = [[2.3630, 48.8195], [2.3650, 48.8195], [2.3650, 48.8205], [2.3630, 48.8205]]
    c = stages.city_for_task("sample", None, area)
    assert c.name.startswith("sample-area-") and c.reference_lonlat == load_city("sample").reference_lonlat
    assert stages.city_for_task("sample") == load_city("sample")


def test_ids_in_store_and_preview(tmp_path):
    from s2r_data.store.synthetic import synthetic_panorama
    from s2r_data.store.writer import DatasetWriter

    url = str(tmp_path / "ds.zarr")
    assert stages.ids_in_store(url) == set() and not stages.store_exists(url)
    with DatasetWriter(url, height=32, width=64, city="sample") as w:
        for i in range(3):
            s = synthetic_panorama(32, 64, seed=i)
            w.write_sample(f"id{i}", s.sim, s.label, s.real, s.sky_mask, s.valid_mask, {"R_world_to_cam_opensfm": np.eye(3).ravel().tolist()})
    assert stages.ids_in_store(url) == {"id0", "id1", "id2"}
    pairs = stages.preview_pairs(url, 2)
    assert [p.image_id for p in pairs] == ["id0", "id1"] and pairs[0].sim.shape == (7, 32, 64)


def test_load_photo_resizes_to_2to1(tmp_path):
    from PIL import Image

    p = tmp_path / "x.jpg"
    Image.fromarray(np.full((100, 200, 3), 128, np.uint8)).save(p)
    a = stages.load_photo(p, 64)
    assert a.shape == (3, 32, 64) and a.dtype == np.uint8 and abs(int(a.mean()) - 128) <= 2


def test_city_model_stage_writes_model_summary_and_preview(tmp_path):
    from PIL import Image

    path = stages.city_model(load_city("sample"), tmp_path / "city")
    assert path.is_file() and path.with_name("summary.json").is_file()
    preview = path.with_name("preview.png")
    assert Image.open(preview).size[0] > 256
    mtime = preview.stat().st_mtime_ns
    assert stages.city_model(load_city("sample"), tmp_path / "city") == path  # reused, preview kept
    assert preview.stat().st_mtime_ns == mtime
