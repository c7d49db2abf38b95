"""Broken building outlines (issue 15): repaired with make_valid where possible, otherwise listed
with OSM id and reason in summary.json and counted in the printed summary; implausible heights
clamped with a warning naming the OSM id."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely

from s2r_data.cities import CityConfig
from s2r_data.citymodel import CityModel
from s2r_data.osm import BuildConfig, build_city_model, build_or_load_city_model
from s2r_data.osm.__main__ import main as cli_main
from s2r_data.osm.builder import city_building_solids, city_clip_polygons
from s2r_data.osm.heights import DEFAULT_MAX_HEIGHT_M, building_height
from s2r_data.osm.reader import FeatureSet, OSMFeatures, read_osm
from s2r_data.osm.repair import DEGENERATE, INCOMPLETE, INVALID, REPAIRED, polygon_from_closed_way

LON0, LAT0 = 2.0, 48.0
D = 0.0001  # ≈ 7.4 m (lon) × 11.1 m (lat)

CITY = CityConfig(
    name="broken",
    boundary_lonlat=((2.0, 48.0), (2.003, 48.0), (2.003, 48.002), (2.0, 48.002)),
    reference_lonlat=(2.0015, 48.001),
    osm_source="unused",
)


def _osm(ways: dict[int, tuple[list[tuple[float, float] | int], dict[str, str]]], relations: str = "") -> str:
    """XML with one node per coordinate (an int is a reference to a node that is not in the file)."""
    nodes, out_ways, nid = [], [], 1
    for wid, (coords, tags) in sorted(ways.items()):
        refs = []
        for i, c in enumerate(coords):
            if isinstance(c, int):
                refs.append(c)
            elif i > 0 and i == len(coords) - 1 and c == coords[0]:
                refs.append(refs[0])  # a closed way ends on its first node
            else:
                nodes.append(f'<node id="{nid}" version="1" lat="{c[1]:.7f}" lon="{c[0]:.7f}"/>')
                refs.append(nid)
                nid += 1
        nds = "".join(f'<nd ref="{r}"/>' for r in refs)
        tg = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        out_ways.append(f'<way id="{wid}" version="1">{nds}{tg}</way>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="s2r-tests">\n'
            + "\n".join(nodes + out_ways) + relations + "\n</osm>\n")


def _closed(pts):
    return pts + pts[:1]


B = {"building": "yes"}
GOOD = _closed([(2.0010, 48.0010), (2.0010 + D, 48.0010), (2.0010 + D, 48.0010 + D), (2.0010, 48.0010 + D)])
BOWTIE = _closed([(2.0015, 48.0010), (2.0015 + D, 48.0010 + D), (2.0015 + D, 48.0010), (2.0015, 48.0010 + D)])
COLLINEAR = _closed([(2.0020, 48.0010), (2.0020 + D, 48.0010), (2.0020 + 2 * D, 48.0010)])
SPIKE = _closed([(2.0010, 48.0015), (2.0010 + D, 48.0015), (2.0010 + 3 * D, 48.0015), (2.0010 + D, 48.0015),
                 (2.0010 + D, 48.0015 + D), (2.0010, 48.0015 + D)])  # folds back along its base
# valid for libosmium (coordinates have 1e-7° steps), ≈ 0.004 m²: gone after cleaning
SLIVER = _closed([(2.0020, 48.0015), (2.0020 + D / 10, 48.0015), (2.0020 + D / 20, 48.0015 + 1e-7)])
INCOMPLETE_WAY = [(2.0025, 48.0010), (2.0025 + D, 48.0010), 999_999, (2.0025, 48.0010 + D), (2.0025, 48.0010)]
OPEN_WAY = [(2.0025, 48.0015), (2.0025 + D, 48.0015), (2.0025 + D, 48.0015 + D)]
BROKEN = {1: (GOOD, B), 2: (BOWTIE, B), 3: (COLLINEAR, B), 4: (SPIKE, B), 5: (SLIVER, B), 6: (INCOMPLETE_WAY, B),
          7: (OPEN_WAY, B)}
EXPECTED_DROPPED = {"w3": DEGENERATE, "w5": DEGENERATE, "w6": INCOMPLETE, "w7": INVALID}


@pytest.fixture()
def broken_city(tmp_path: Path) -> CityConfig:
    p = tmp_path / "broken.osm"
    p.write_text(_osm(BROKEN))
    return replace(CITY, osm_source=str(p))


# ---- the pure repair -----------------------------------------------------------------------


def test_polygon_from_closed_way_reasons() -> None:
    geom, reason, detail = polygon_from_closed_way(BOWTIE)
    assert reason == REPAIRED and geom.is_valid and geom.geom_type == "MultiPolygon" and len(geom.geoms) == 2
    assert "Self-intersection" in detail
    assert geom.area == pytest.approx(D * D / 2, rel=1e-6)  # two triangles, each a quarter of the square
    geom, reason, _ = polygon_from_closed_way(SPIKE)
    assert reason == REPAIRED and geom.geom_type == "Polygon" and geom.area == pytest.approx(D * D, rel=1e-6)
    assert polygon_from_closed_way(COLLINEAR)[:2] == (None, DEGENERATE)
    assert polygon_from_closed_way([(0, 0), (1, 1), (0, 0), (1, 1)])[:2] == (None, DEGENERATE)
    geom, reason, detail = polygon_from_closed_way([(0, 0), None, (1, 1), (0, 1), (0, 0)])
    assert (geom, reason) == (None, INCOMPLETE) and detail == "1 of 5 nodes missing from the extract"


# ---- reader and builder --------------------------------------------------------------------


def test_reader_repairs_the_bowtie_and_lists_the_rest(broken_city: CityConfig) -> None:
    feats = read_osm(broken_city.osm_source)
    ids = feats["building"].ids
    assert "w1" in ids and "w2" in ids and "w4" in ids  # good, bow-tie (repaired), spike (libosmium cuts it)
    assert {r.osm_id for r in feats.repaired} == {"w2"}
    assert {(d.osm_id, d.reason) for d in feats.dropped} == {("w3", DEGENERATE), ("w6", INCOMPLETE), ("w7", INVALID)}


def test_build_lists_every_dropped_building_in_summary(tmp_path: Path, broken_city: CityConfig) -> None:
    path = build_or_load_city_model(broken_city, tmp_path / "out")
    summary = json.loads(path.with_name("summary.json").read_text())
    dropped = {d["id"]: d for d in summary["dropped_buildings"]}
    assert {k: d["reason"] for k, d in dropped.items()} == EXPECTED_DROPPED
    assert all(d["detail"] for d in dropped.values())
    assert "1 of 5 nodes missing" in dropped["w6"]["detail"] and "0.01 m²" in dropped["w5"]["detail"]
    assert [r["id"] for r in summary["repaired_buildings"]] == ["w2"]
    c = summary["counts"]
    assert (c["buildings"], c["buildings_dropped"], c["buildings_repaired"]) == (3, 4, 1)
    assert (c["buildings_dropped_incomplete"], c["buildings_dropped_invalid"], c["buildings_dropped_degenerate"]) == (1, 1, 2)
    # the bow-tie is in the model: roof triangles over both of its lobes
    model = CityModel.load(path)
    bowtie_local = shapely.transform(
        shapely.make_valid(shapely.Polygon(BOWTIE)),
        lambda xy: np.column_stack(broken_city.frame.lonlat_to_local(xy[:, 0], xy[:, 1])),
    )
    roof = model.meshes["roof"]
    cent = roof.vertices_local_m[roof.triangles][:, :, :2].astype(np.float64).mean(1)
    inside = shapely.contains_xy(bowtie_local, cent[:, 0], cent[:, 1])
    assert inside.sum() >= 2


def test_cli_prints_dropped_counts(tmp_path: Path, broken_city: CityConfig, capsys) -> None:
    reg = tmp_path / "cities.yaml"
    reg.write_text(
        "cities:\n  broken:\n    boundary_lonlat: [[2.0, 48.0], [2.003, 48.0], [2.003, 48.002], [2.0, 48.002]]\n"
        f"    reference_lonlat: [2.0015, 48.001]\n    osm_source: {broken_city.osm_source}\n"
    )
    assert cli_main(["build", "--city", "broken", "--registry", str(reg), "--out", str(tmp_path / "o"), "--no-preview"]) == 0
    out = capsys.readouterr().out
    assert "dropped     4 buildings (1 incomplete, 1 invalid, 2 degenerate" in out and "1 repaired" in out


def test_builder_repairs_outlines_geos_finds_invalid() -> None:
    """An area libosmium accepted but GEOS finds invalid is repaired by the builder and listed."""
    bowtie = shapely.Polygon(BOWTIE)
    feats = OSMFeatures(
        kinds={"building": FeatureSet(ids=["w9", "w1"], tags=[B, B], wkb=[shapely.to_wkb(bowtie), shapely.to_wkb(shapely.Polygon(GOOD))])},
        header_bbox_lonlat=None, sorted_on_read=False,
    )
    boundary, clip = city_clip_polygons(CITY, 200.0)
    solids, n_in_city = city_building_solids(feats, CITY, boundary, clip, 3.0)
    assert n_in_city == 2 and solids.counts["building_solids"] == 2
    assert [(r.osm_id, r.reason) for r in solids.repaired] == [("w9", REPAIRED)]
    assert "Self-intersection" in solids.repaired[0].detail and solids.dropped == []
    bowtie_m2, square_m2 = (shapely.area(solids.polygons[solids.solid == k]).sum() for k in (0, 1))
    assert bowtie_m2 == pytest.approx(square_m2 / 2, rel=1e-3)  # both lobes: half the same-size square


def test_only_dropped_buildings_near_the_city_are_listed(tmp_path: Path) -> None:
    far = [(2.02, 48.02), (2.02 + D, 48.02), 999_998, (2.02, 48.02)]  # incomplete, 2 km away
    p = tmp_path / "far.osm"
    p.write_text(_osm({1: (GOOD, B), 2: (far, B)}))
    model = build_city_model(replace(CITY, osm_source=str(p)), margin_m=100.0)
    assert model.meta["dropped_buildings"] == []


# ---- heights -------------------------------------------------------------------------------


def test_building_height_clamps_to_the_maximum() -> None:
    h = building_height({"building:levels": "250"}, 100.0, 3.0)
    assert (h.top_m, h.clamped_from_m, h.top_source) == (DEFAULT_MAX_HEIGHT_M, 750.0, "levels")
    h = building_height({"height": "900", "min_height": "800"}, 100.0, 3.0, max_height_m=300.0)
    assert (h.base_m, h.top_m, h.clamped_from_m) == (297.0, 300.0, 900.0)
    h = building_height({"height": "102"}, 100.0, 3.0)
    assert (h.top_m, h.clamped_from_m) == (102.0, None)
    assert building_height({"building:levels": "250"}, 100.0, 3.0, max_height_m=None).top_m == 750.0


def test_implausible_height_is_clamped_with_a_warning(tmp_path: Path, caplog) -> None:
    p = tmp_path / "tall.osm"
    p.write_text(_osm({1: (GOOD, {"building": "yes", "building:levels": "250"}), 2: (BOWTIE, B)}))
    city = replace(CITY, osm_source=str(p))
    with caplog.at_level(logging.WARNING, logger="s2r_data.osm.buildings"):
        model = build_city_model(city)
    assert model.meshes["wall"].vertices_local_m[:, 2].max() == pytest.approx(DEFAULT_MAX_HEIGHT_M)
    assert any("w1" in r.getMessage() and "750 m" in r.getMessage() and "building:levels=250" in r.getMessage()
               for r in caplog.records)
    assert model.meta["clamped_heights"] == [
        {"id": "w1", "height_m": 750.0, "clamped_to_m": DEFAULT_MAX_HEIGHT_M, "tags": "building:levels=250"}
    ]
    assert model.meta["counts"]["building_heights_clamped"] == 1
    low = build_city_model(city, max_height_m=120.0)
    assert low.meshes["wall"].vertices_local_m[:, 2].max() == pytest.approx(120.0)
    assert low.meta["build_config"]["max_height_m"] == 120.0


def test_max_height_is_validated() -> None:
    with pytest.raises(ValueError, match="max_height_m"):
        BuildConfig(max_height_m=4.0)


def test_helsinki_lists_the_buildings_cut_by_its_extract(helsinki_model) -> None:
    """The Helsinki extract is cut at its bounds: 54 building ways and 6 multipolygons lose nodes or
    member ways there; every one is listed (none was in the summary before)."""
    dropped = helsinki_model.meta["dropped_buildings"]
    assert {d["reason"] for d in dropped} == {INCOMPLETE}
    ways = [d for d in dropped if d["id"].startswith("w")]
    rels = [d for d in dropped if d["id"].startswith("r")]
    assert (len(ways), len(rels)) == (54, 6)
    assert all("nodes missing from the extract" in d["detail"] for d in ways)
    assert all(d["detail"].startswith("multipolygon:") for d in rels)
    assert helsinki_model.meta["counts"]["buildings_dropped_incomplete"] == 60
