"""flows.report: preview PNG and Markdown report (pure functions)."""

import json

import numpy as np
import pytest
from PIL import Image

from flows.report import PreviewPair, preview_rows, report_markdown, write_preview_png, write_report_files
from s2r_data.store.synthetic import synthetic_panorama


def _pair(seed: int, h: int = 32, w: int = 64) -> PreviewPair:
    s = synthetic_panorama(h, w, seed)
    return PreviewPair(f"img{seed}", s.sim, s.real)


def test_preview_rows_layout_and_sky_black():
    p = _pair(1)
    row = preview_rows(p)
    assert row.shape == (32, 4 * 64, 3) and row.dtype == np.uint8
    sky = p.sim[6] == 0
    assert sky.any()
    depth_panel = row[:, 2 * 64 : 3 * 64]
    assert (depth_panel[sky] == 0).all()  # sky has no depth: black
    assert (depth_panel[~sky] > 0).all()  # every hit is visible
    assert (row[:, 64 : 2 * 64][sky] == 0).all()  # no normal on the sky
    np.testing.assert_array_equal(row[:, 3 * 64 :], p.real.transpose(1, 2, 0))


def test_preview_rejects_wrong_shapes():
    p = _pair(2)
    with pytest.raises(ValueError, match="sim must be"):
        preview_rows(PreviewPair("x", p.sim[:3], p.real))
    with pytest.raises(ValueError, match="real must be"):
        preview_rows(PreviewPair("x", p.sim, p.real[0]))


def test_write_preview_png(tmp_path):
    out = write_preview_png([_pair(1), _pair(2), _pair(3)], tmp_path / "r" / "preview.png")
    with Image.open(out) as im:
        assert im.size == (4 * 64, 3 * 32)
    assert not list((tmp_path / "r").glob(".*partial*"))
    with pytest.raises(ValueError, match="no samples"):
        write_preview_png([], tmp_path / "x.png")


def test_report_markdown_tables(tmp_path):
    summary = {
        "city": "sample",
        "store_url": "/o/sample/dataset.zarr",
        "index_path": "/o/sample/dataset.zarr/index.parquet",
        "width": 128,
        "height": 64,
        "samples_in_store": 7,
        "verified": True,
        "counts": {"tiles": 1, "rendered_now": 7},
        "failures": {"quarantined:not_pano": 2, "render:invalid pose": 1},
        "timings_s": {"harvest": 1.5, "total": 700.0},
    }
    md = report_markdown(summary, preview_path="/o/sample/report/preview.png")
    assert "| rendered now | 7 |" in md
    assert "| quarantined | not_pano | 2 |" in md
    assert "| total | 11.7 min |" in md and "| harvest | 1.5 |" in md
    assert "/o/sample/report/preview.png" in md
    md_url = report_markdown(summary, preview_path="p.png", preview_url="http://h/sample/report/preview.png")
    assert "![preview](http://h/sample/report/preview.png)" in md_url
    md_path, json_path = write_report_files(summary, tmp_path, md)
    assert md_path.read_text() == md
    assert json.loads(json_path.read_text())["counts"]["rendered_now"] == 7
    assert "none" in report_markdown({**summary, "failures": {}})


def test_city_model_section_flags_a_city_without_roads(tmp_path):
    from flows.report import city_model_report
    from s2r_data.cities import load_city
    from s2r_data.osm import build_or_load_city_model

    path = build_or_load_city_model(load_city("sample"), tmp_path / "city")
    cm = city_model_report(path)
    road = cm["flat_layers"]["road"]
    assert road["mesh_area_m2"] > 25_000 and 0.03 < road["share_of_clip"] < 0.1 and cm["warnings"] == []
    base = {"city": "sample", "counts": {}, "failures": {}, "timings_s": {}, "warnings": ["w0"]}
    md = report_markdown({**base, "city_model": cm})
    assert "## City model" in md and f"| road | {road['mesh_area_m2']:,.0f} |" in md and "- w0" in md

    # the issue-17 Helsinki model: 4,056 m² of roads in a 2.88 km² clip polygon
    meta = json.loads(path.with_name("summary.json").read_text())
    meta.update(city="helsinki", clip_area_m2=2_883_695.0)
    meta["flat_layers"]["road"]["mesh_area_m2"] = 4_056.0
    path.with_name("summary.json").write_text(json.dumps(meta))
    cm = city_model_report(path)
    assert len(cm["warnings"]) == 1 and "helsinki" in cm["warnings"][0] and "0.14 %" in cm["warnings"][0]
    md = report_markdown({**base, "city_model": cm})
    assert "**Warning:** city 'helsinki': roads cover 4,056 m²" in md
    assert md.count("roads cover 4,056 m²") == 2  # in the city-model section and the warnings list
def test_evaluation_section_of_the_training_report(tmp_path):
    from flows.report import evaluation_markdown

    assert evaluation_markdown(tmp_path / "eval") == []  # a run without an evaluation: no section
    ev = tmp_path / "eval"
    ev.mkdir()
    subj = {"l1": 0.08, "psnr": 25.7, "ssim": 0.8}
    metrics = {"step": 120, "generators": ["model_ema"], "default_pano_method": "tiled", "splits": {"val": {
        "crops": {"num_crops": 56, "num_panoramas": 7, "crop_size": 128,
                  "subjects": {"model_ema": subj, "class_mean": {**subj, "psnr": 21.1},
                               "nearest_neighbour": {**subj, "psnr": 16.3}}}}}}
    (ev / "metrics.json").write_text(json.dumps(metrics))
    (ev / "val-crops.png").write_bytes(b"png")
    text = "\n".join(evaluation_markdown(ev))
    assert "step 120" in text and "| model_ema | 0.0800 | 25.70 | +4.60 |" in text
    assert f"`{ev / 'val-crops.png'}`" in text
    linked = "\n".join(evaluation_markdown(ev, image_base_url="http://files/run/eval/"))
    assert "](http://files/run/eval/val-crops.png)" in linked
