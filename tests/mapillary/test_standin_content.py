"""Realistic stand-in content end to end: records with reported poses, hidden truth, true world."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
import shapely
from PIL import Image
from shapely.geometry import Point

from s2r_data.citymodel import CityModel
from s2r_data.mapillary.records import pano_problem
from s2r_data.mapillary.replay import KNOWN_IMAGE_FIELDS, ReplayServer, load_content
from s2r_data.mapillary.standin_capture import CaptureConfig
from s2r_data.mapillary.standin_content import (
    RealisticConfig,
    StandinContentError,
    build_true_world,
    generate_realistic_content,
    pose_error,
)
from s2r_data.mapillary.standin_errors import PoseErrorConfig
from s2r_data.mapillary.standin_truth import TRUTH_FILENAME, load_truth
from s2r_data.mapillary.standin_world import Occluder, occluder_footprint
from s2r_data.photo_extras import load_photo_extras
from s2r_data.poses import heading_pitch_roll_deg, pose_from_mapillary

from .conftest import TOKEN

# more gross errors and missing rotations than the defaults, so a dozen images show every case
CONFIG = RealisticConfig(city="sample", seed=7, width=64, capture=CaptureConfig(count=12),
                         errors=PoseErrorConfig(p_gross=0.3, p_no_rotation=0.3))


def _wrap(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def content(tmp_path_factory):
    out = tmp_path_factory.mktemp("standin") / "content"
    plan = generate_realistic_content(out, CONFIG, photos="placeholder", work_dir=out.parent / "work", progress=False)
    return out, plan


def test_records_parse_and_carry_the_injected_errors(content, city):
    out, plan = content
    truth = load_truth(out)
    records = json.loads((out / "images.json").read_text())["images"]
    assert [r["id"] for r in records] == [r["id"] for r in plan.records] and sorted(truth.images) == sorted(r["id"] for r in records)
    kinds = {"sfm": 0, "compass": 0}
    for r in records:
        t = truth.images[r["id"]]
        assert pano_problem(r) is None and isinstance(r["id"], str) and (r["width"], r["height"]) == (64, 32)
        pose = pose_from_mapillary(r, city.frame)
        kinds[pose.confidence] += 1
        assert ("computed_rotation" in r) == t.has_rotation == (pose.confidence == "sfm")
        assert np.allclose(pose.center_local_m, t.reported_pose.center_local_m) and np.allclose(pose.R_world_to_cam_opensfm, t.reported_pose.R_world_to_cam_opensfm)
        err, inj = pose_error(pose, t.true_pose), t.injected
        assert err == pytest.approx(t.error)
        assert err["dx_m"] == pytest.approx(inj["dx_m"], abs=1e-3) and err["dy_m"] == pytest.approx(inj["dy_m"], abs=1e-3)
        assert _wrap(err["heading_deg"] - inj["heading_deg"]) == pytest.approx(0.0, abs=1e-6)
        true_hpr = heading_pitch_roll_deg(t.true_pose.R_world_to_cam_opensfm)
        if t.has_rotation:
            assert err["pitch_deg"] == pytest.approx(inj["pitch_deg"], abs=1e-6) and err["roll_deg"] == pytest.approx(inj["roll_deg"], abs=1e-6)
        else:  # the compass fallback is a level camera at the (erroneous) compass heading
            assert err["pitch_deg"] == pytest.approx(-true_hpr[1], abs=1e-6) and err["roll_deg"] == pytest.approx(-true_hpr[2], abs=1e-6)
        assert t.true_pose.center_local_m[2] != pytest.approx(pose.center_local_m[2])  # rig height ≠ the pipeline's default
        if t.gross in ("position", "both"):
            assert np.hypot(inj["gross_dx_m"], inj["gross_dy_m"]) > 6.0
        if t.gross in ("heading", "both"):
            assert abs(inj["gross_heading_deg"]) > 10.0
    assert kinds["sfm"] and kinds["compass"], kinds
    assert any(t.gross for t in truth.images.values())
    seqs = truth.sequences
    assert len(seqs) >= 2 and sum(len(s["image_ids"]) for s in seqs.values()) == len(records)
    for sid, s in seqs.items():
        recs = [r for r in records if r["sequence"] == sid]
        assert [r["id"] for r in recs] == s["image_ids"]
        assert all(a["captured_at"] < b["captured_at"] for a, b in zip(recs, recs[1:]))


def test_true_world_differs_from_the_osm_model_as_configured(content, tmp_path):
    out, plan = content
    truth = load_truth(out)
    osm = CityModel.load(plan.osm_model_path)
    assert len(truth.buildings) == osm.meta["counts"]["buildings"]
    offsets = np.array([[b["dx_m"], b["dy_m"]] for b in truth.buildings.values()])
    assert 0.2 < offsets.std() < 3.0 and np.all(np.abs(offsets) < 6.0)
    assert any(abs(b["top_change_applied_m"]) > 1.0 for b in truth.buildings.values())
    kinds = {o["kind"] for o in truth.occluders}
    assert {"tree", "pole", "person"} <= kinds and kinds & {"vehicle", "van"}
    # the true world can be rebuilt from truth.json + the OSM extract: the one the photos show
    path = build_true_world(out, tmp_path / "true")
    rebuilt = CityModel.load(path)
    assert np.array_equal(rebuilt.meshes["wall"].vertices_local_m, plan.true_model.meshes["wall"].vertices_local_m)
    assert not np.array_equal(rebuilt.meshes["wall"].vertices_local_m, osm.meshes["wall"].vertices_local_m)
    assert np.array_equal(rebuilt.meshes["road"].triangles, osm.meshes["road"].triangles)
    with Image.open(out / "truth_map.png") as im:  # the picture of it, beside the truth
        assert im.format == "PNG" and min(im.size) > 300
    extras = load_photo_extras(path)
    assert {"tree_crown", "pole", "person"} <= set(extras)
    # the true cameras stand in the street: clear of the true buildings and of every occluder
    fp = rebuilt.footprints()
    occ = [occluder_footprint(Occluder.from_dict(o)) for o in truth.occluders]
    for t in truth.images.values():
        c = Point(*t.true_pose.center_local_m[:2])
        assert fp.distance(c) >= 1.5 - 1e-6
        assert min(g.distance(c) for g in occ) >= 1.5 - 1e-6


def test_truth_is_never_served(content):
    out, _ = content
    truth = load_truth(out)
    recs, images = load_content(out)
    assert len(recs) == len(truth.images) and set(images) == set(truth.images)
    fields = ",".join(sorted(KNOWN_IMAGE_FIELDS))
    auth = {"Authorization": f"OAuth {TOKEN}"}
    with ReplayServer(out, TOKEN) as srv:
        r = requests.get(f"{srv.graph_url}/images", params={"image_ids": ",".join(truth.images), "fields": fields}, headers=auth)
        assert r.status_code == 200
        body = r.text
        for word in ("truth", "true_pose", "injected", "occluder", "drift", "reported_pose"):
            assert word not in body
        served = {d["id"]: d for d in r.json()["data"]}
        far = 0
        for image_id, t in truth.images.items():
            lon, lat = served[image_id]["computed_geometry"]["coordinates"]
            assert (lon, lat) == pytest.approx((t.reported_pose.lon_deg, t.reported_pose.lat_deg), abs=1e-12)
            far += np.hypot(t.error["dx_m"], t.error["dy_m"]) > 0.5
            assert set(served[image_id]) <= KNOWN_IMAGE_FIELDS
        assert far >= len(truth.images) // 2
        for path in (f"/{TRUTH_FILENAME}", "/truth", "/truth_map.png", "/images/truth.json", "/cdn/truth/2048.jpg", "/.work/city/city_model.npz"):
            resp = requests.get(srv.base_url + path, headers=auth, params={"fields": "id"})
            assert resp.status_code in (400, 403, 404) and "true_pose" not in resp.text, path


def test_rerun_resumes_the_same_plan_and_refuses_another(content, tmp_path, capsys):
    from s2r_data.mapillary.sample_content import generate_sample_content, main

    src, plan = content
    out = tmp_path / "c"
    shutil.copytree(src, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.jpg")}
    generate_realistic_content(out, CONFIG, photos="none", work_dir=src.parent / "work", progress=False)  # same plan: kept
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.jpg")} == before
    doc = json.loads((out / TRUTH_FILENAME).read_text())  # same plan key, another plan: a generator change
    doc["images"][next(iter(doc["images"]))]["true_pose"]["center_local_m"][0] += 1.0
    (out / TRUTH_FILENAME).write_text(json.dumps(doc))
    with pytest.raises(StandinContentError, match="another plan"):
        generate_realistic_content(out, CONFIG, photos="none", work_dir=src.parent / "work", progress=False)
    other = RealisticConfig(city="sample", seed=8, width=64, capture=CaptureConfig(count=12))
    with pytest.raises(StandinContentError, match="another plan.*--force"):
        generate_realistic_content(out, other, photos="none", work_dir=src.parent / "work", progress=False)
    generate_realistic_content(out, other, photos="none", work_dir=src.parent / "work", progress=False, force=True)
    assert load_truth(out).seed == 8 and not list((out / "images").glob("*.jpg"))  # old photos gone
    # the CLI says the same, with exit code 2
    assert main(["--out", str(out), "--seed", "9", "--count", "12", "--width", "64", "--photos", "none",
                 "--work-dir", str(src.parent / "work")]) == 2
    assert "--force" in capsys.readouterr().err
    # exact content over realistic content: no stale truth left behind
    generate_sample_content(out, count=4, photos="placeholder", width=64, work_dir=src.parent / "work")
    assert not (out / TRUTH_FILENAME).exists() and not (out / "truth_map.png").exists()
    with pytest.raises(FileNotFoundError, match="not realistic stand-in content.*--mode realistic"):
        load_truth(out)


def test_load_truth_refuses_an_unknown_format(tmp_path):
    (tmp_path / TRUTH_FILENAME).write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(ValueError, match="format 'something-else/9'.*regenerate"):
        load_truth(tmp_path)


def test_seeded_plans_are_deterministic(content, tmp_path):
    _, plan = content
    from s2r_data.mapillary.standin_content import plan_realistic_content

    again = plan_realistic_content(CONFIG, work_dir=tmp_path)
    assert again.records == plan.records and again.truth == plan.truth
    assert shapely.equals(again.true_model.footprints(), plan.true_model.footprints())


@pytest.mark.slow
@pytest.mark.blender
def test_tiny_realistic_generation_renders_and_resumes(tmp_path):
    from s2r_data.mapillary.sample_content import main

    out = tmp_path / "c"
    args = ["--out", str(out), "--count", "3", "--width", "32", "--seed", "3", "--images-per-sequence", "3", "3"]
    assert main(args) == 0
    truth = load_truth(out)
    photos = sorted((out / "images").glob("*.jpg"))
    assert sorted(p.stem for p in photos) == sorted(truth.images) and not (out / ".work").exists()
    with Image.open(photos[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 16)
    # a killed run: one photo missing, the work dir kept; the rerun renders only that one
    keep = {p.name: p.stat().st_mtime_ns for p in photos[1:]}
    photos[0].unlink()
    assert main(args + ["--keep-work"]) == 0
    assert photos[0].is_file() and {p.name: p.stat().st_mtime_ns for p in photos[1:]} == keep
    assert (out / ".work" / "true_world" / "city_model.photo_extras.npz").is_file()
