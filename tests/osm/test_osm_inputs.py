"""Bad inputs get one clear error each; unsorted Overpass XML is sorted and gives the same model."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import osmium
import shapely
import pytest

from s2r_data.cities import CityConfig, load_city
from s2r_data.citymodel import MESH_CLASSES, CityModelError
from s2r_data.osm import (
    NoBuildingsError,
    OSMError,
    OSMFileCorruptError,
    OSMFileMissingError,
    OutsideExtentError,
    build_city_model,
)
from s2r_data.osm.reader import is_sorted, read_osm

DATA = Path(__file__).resolve().parents[2] / "data" / "osm"
SAMPLE_OSM = DATA / "paris-13e-olympiades.osm"

# a 220 m × 220 m city around (2.0, 48.0)
CITY = CityConfig(
    name="synthetic",
    boundary_lonlat=((2.0, 48.0), (2.003, 48.0), (2.003, 48.002), (2.0, 48.002)),
    reference_lonlat=(2.0015, 48.001),
    osm_source="unused",
)


def _city_with(path: Path, city: CityConfig = CITY) -> CityConfig:
    return replace(city, osm_source=str(path))


def test_synthetic_city_builds(tmp_path: Path, osm_tools) -> None:
    p = tmp_path / "ok.osm"
    p.write_text(osm_tools.osm_xml(buildings=[osm_tools.square(2.001, 48.001)], roads=[[(2.0, 48.0005), (2.003, 48.0005)]]))
    model = build_city_model(_city_with(p))
    assert model.meta["counts"]["buildings"] == 1 and model.meta["counts"]["roads"] == 1
    # the untagged square is 7.4 m × 11.1 m ≈ 83 m² → default 2 levels × 3 m
    assert model.meshes["wall"].vertices_local_m[:, 2].max() == pytest.approx(6.0)
    assert model.footprints().area == pytest.approx(83.0, rel=0.02)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSMFileMissingError, match="does not exist") as ei:
        build_city_model(_city_with(tmp_path / "nope.osm"))
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, CityModelError)
    assert "nope.osm" in str(ei.value)


def test_url_source_not_downloaded() -> None:
    city = replace(CITY, osm_source="https://example.invalid/s2r-test-never-downloaded.osm.pbf")
    with pytest.raises(OSMFileMissingError, match="download it to"):
        build_city_model(city)


@pytest.mark.parametrize(
    "name, content, city_name",
    [
        ("empty.osm", b"", None),
        ("garbage.osm", b"hello, this is not OSM\n", None),
        ("truncated.osm", SAMPLE_OSM.read_bytes()[:100_000], "sample"),  # header bounds readable
        ("truncated.osm.pbf", (DATA / "helsinki-centre.osm.pbf").read_bytes()[:1000], "helsinki"),
        ("garbage.osm.pbf", b"\x00\x01\x02garbage" * 100, None),
        ("no-objects.osm", b'<?xml version="1.0"?>\n<osm version="0.6"></osm>\n', None),
    ],
)
def test_corrupt_or_empty_file(tmp_path: Path, name: str, content: bytes, city_name: str | None) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    city = CITY if city_name is None else load_city(city_name)
    with pytest.raises(OSMFileCorruptError) as ei:
        build_city_model(_city_with(p, city))
    assert name in str(ei.value) and "re-download" in str(ei.value)


def test_no_buildings_in_city(tmp_path: Path, osm_tools) -> None:
    osm_xml, square = osm_tools.osm_xml, osm_tools.square
    p = tmp_path / "roads-only.osm"
    p.write_text(osm_xml(roads=[[(2.0, 48.0005), (2.003, 48.0005)]], bounds=(1.99, 47.99, 2.01, 48.01)))
    with pytest.raises(NoBuildingsError, match="synthetic"):
        build_city_model(_city_with(p))
    # buildings in the extract, but only far outside the city polygon (beyond the margin too)
    p2 = tmp_path / "far.osm"
    p2.write_text(osm_xml(buildings=[square(2.009, 48.009)], bounds=(1.99, 47.99, 2.01, 48.01)))
    with pytest.raises(NoBuildingsError, match=r"\(1 building areas read around it\)"):
        build_city_model(_city_with(p2))


def test_city_outside_extract_by_header_bounds(sample_city) -> None:
    moved = replace(
        sample_city,
        boundary_lonlat=tuple((lon + 5.0, lat) for lon, lat in sample_city.boundary_lonlat),
        reference_lonlat=(sample_city.reference_lonlat[0] + 5.0, sample_city.reference_lonlat[1]),
    )
    with pytest.raises(OutsideExtentError, match="outside the extent") as ei:
        build_city_model(moved)
    assert "paris-13e-olympiades.osm" in str(ei.value)


def test_city_outside_extract_without_bounds(tmp_path: Path, osm_tools) -> None:
    p = tmp_path / "elsewhere.osm"
    p.write_text(osm_tools.osm_xml(buildings=[osm_tools.square(10.0, 50.0)]))  # no <bounds>: extent from the data
    with pytest.raises(OutsideExtentError):
        build_city_model(_city_with(p))


def test_all_errors_share_a_base() -> None:
    for cls in (OSMFileMissingError, OSMFileCorruptError, NoBuildingsError, OutsideExtentError):
        assert issubclass(cls, OSMError) and issubclass(cls, CityModelError)


def _shuffled_copy(src: Path, dst: Path, mode: str, seed: int) -> None:
    text = src.read_text(encoding="utf-8")
    start, end = text.index("<node"), text.rindex("</osm>")
    elems = [m.group(0) for m in re.finditer(r"<(node|way|relation)\b[^>]*?(?:/>|>.*?</\1>)", text[start:end], flags=re.S)]
    assert len(elems) > 1000
    rng = random.Random(seed)
    if mode == "ways":
        ways = [e for e in elems if e.startswith("<way")]
        rng.shuffle(ways)
        elems = [e for e in elems if e.startswith("<node")] + ways + [e for e in elems if e.startswith("<relation")]
    else:
        rng.shuffle(elems)
    dst.write_text(text[:start] + "\n".join(elems) + "\n" + text[end:], encoding="utf-8")


@pytest.mark.parametrize("mode", ["ways", "everything", "pbf"])
def test_unsorted_input_gives_the_same_model(tmp_path: Path, sample_city, sample_model, mode: str) -> None:
    p = tmp_path / f"unsorted-{mode}.osm"
    _shuffled_copy(SAMPLE_OSM, p, "everything" if mode == "pbf" else mode, seed=7)
    if mode == "pbf":  # an unsorted PBF: only detected by libosmium while assembling areas
        xml, p = p, tmp_path / "unsorted.osm.pbf"
        writer = osmium.SimpleWriter(str(p))
        for obj in osmium.FileProcessor(str(xml)):
            writer.add(obj)
        writer.close()
    assert is_sorted(SAMPLE_OSM) and not is_sorted(p)
    model = build_city_model(replace(sample_city, osm_source=str(p)))
    assert model.meta["source"]["sorted_on_read"] is True
    assert sample_model.meta["source"]["sorted_on_read"] is False
    assert model.meta["counts"] == sample_model.meta["counts"]
    for name in MESH_CLASSES:
        a, b = model.meshes[name], sample_model.meshes[name]
        assert len(a.triangles) == len(b.triangles), name
        assert np.allclose(np.sort(a.vertices_local_m, axis=0), np.sort(b.vertices_local_m, axis=0)), name


def test_bbox_prefilter_keeps_everything_that_reaches_the_box() -> None:
    """Reading with a query box (as the builder does) loses no feature whose geometry touches it."""
    path = DATA / "liechtenstein-2013.osm.pbf"
    box = (9.50, 47.12, 9.54, 47.15)  # Vaduz
    everything, filtered = read_osm(path), read_osm(path, bbox_lonlat=box)
    q = shapely.box(*box)
    for kind, fs in everything.kinds.items():
        touching = {i for i, g in zip(fs.ids, fs.geometries_lonlat()) if shapely.intersects(g, q)}
        kept = set(filtered[kind].ids)
        assert touching <= kept, kind
        assert len(kept) <= len(fs)
    assert len(filtered["building"]) < len(everything["building"]) / 2
    assert filtered.data_bbox_lonlat == everything.data_bbox_lonlat  # extent covers skipped objects too
