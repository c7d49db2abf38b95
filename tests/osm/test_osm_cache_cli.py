"""build_or_load_city_model cache (reuse, invalidation, atomicity) and the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from s2r_data.citymodel import CityModel
from s2r_data.osm import BUILDER_VERSION, MODEL_FILENAME, OSMFileCorruptError, OSMPathIsFolderError, build_or_load_city_model
from s2r_data.osm import builder as builder_mod
from s2r_data.osm.__main__ import main as cli_main


@pytest.fixture()
def sample_copy(tmp_path: Path, sample_city):
    """The sample city reading a private copy of its OSM file (so tests may change the bytes)."""
    src = tmp_path / "src" / "paris.osm"
    src.parent.mkdir()
    shutil.copyfile(sample_city.local_osm_path(), src)
    return replace(sample_city, osm_source=str(src)), src


def _count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = builder_mod._build

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(builder_mod, "_build", counting)
    return calls


def test_cache_reuse_and_invalidation(tmp_path: Path, sample_copy, monkeypatch) -> None:
    city, src = sample_copy
    out = tmp_path / "out"
    calls = _count_builds(monkeypatch)

    path = build_or_load_city_model(city, out)
    assert path == out / MODEL_FILENAME and path.is_file() and (out / "summary.json").is_file()
    assert len(calls) == 1
    meta = CityModel.load(path).meta
    assert meta["builder_version"] == BUILDER_VERSION and meta["source"]["file"] == "paris.osm"
    mtime = path.stat().st_mtime_ns

    assert build_or_load_city_model(city, out) == path  # same bytes, version, settings: reused
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime

    build_or_load_city_model(city, out, force=True)
    assert len(calls) == 2

    build_or_load_city_model(city, out, margin_m=300.0)  # other settings
    assert len(calls) == 3
    assert CityModel.load(path).meta["build_config"]["margin_m"] == 300.0

    with open(src, "a", encoding="utf-8") as fh:  # same data, other bytes → other sha256
        fh.write("<!-- touched -->\n")
    build_or_load_city_model(city, out, margin_m=300.0)
    assert len(calls) == 4
    build_or_load_city_model(city, out, margin_m=300.0)
    assert len(calls) == 4

    monkeypatch.setattr(builder_mod, "BUILDER_VERSION", "s2r-osm-test-next")  # new builder version
    build_or_load_city_model(city, out, margin_m=300.0)
    assert len(calls) == 5
    assert CityModel.load(path).meta["builder_version"] == "s2r-osm-test-next"


def test_unreadable_cache_is_rebuilt(tmp_path: Path, sample_copy, monkeypatch) -> None:
    city, _ = sample_copy
    out = tmp_path / "out"
    out.mkdir()
    (out / MODEL_FILENAME).write_bytes(b"PK\x03\x04 half a zip")
    calls = _count_builds(monkeypatch)
    path = build_or_load_city_model(city, out)
    assert len(calls) == 1
    assert CityModel.load(path).meta["counts"]["buildings"] == 18


def test_failed_build_writes_nothing(tmp_path: Path, sample_copy) -> None:
    city, src = sample_copy
    src.write_bytes(src.read_bytes()[:50_000])  # truncated: header readable, body corrupt
    out = tmp_path / "out"
    with pytest.raises(OSMFileCorruptError):
        build_or_load_city_model(city, out)
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_rebuild_keeps_previous_model(tmp_path: Path, sample_copy) -> None:
    city, src = sample_copy
    out = tmp_path / "out"
    path = build_or_load_city_model(city, out)
    before = path.read_bytes()
    src.write_bytes(src.read_bytes()[:50_000])
    with pytest.raises(OSMFileCorruptError):
        build_or_load_city_model(city, out)
    assert path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["city_model.npz", "summary.json"]


def test_cli_build_prints_summary_and_writes_preview(tmp_path: Path, capsys) -> None:
    out = tmp_path / "city" / "sample"
    assert cli_main(["build", "--city", "sample", "--out", str(out), "--px-per-m", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "18 solids" in text and "OpenStreetMap contributors" in text and "preview" in text
    assert (out / "city_model.npz").is_file() and (out / "preview.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["buildings"] == 18 and summary["classes"]["wall"]["triangles"] > 0


def test_cli_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert cli_main(["build", "--city", "atlantis", "--out", str(tmp_path / "a")]) == 2
    assert "unknown city 'atlantis'" in capsys.readouterr().err
    bad = tmp_path / "bad.osm"
    bad.write_text("not osm")
    assert cli_main(["build", "--city", "sample", "--osm", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "bad.osm" in capsys.readouterr().err


def _registry(tmp_path: Path, osm_source: str) -> Path:
    reg = tmp_path / "my-cities.yaml"
    reg.write_text(
        "cities:\n  mine:\n    boundary_lonlat: [[2.3626, 48.8192], [2.3675, 48.8192], [2.3675, 48.8224], [2.3626, 48.8224]]\n"
        f"    reference_lonlat: [2.3651, 48.8208]\n    osm_source: {osm_source}\n"
    )
    return reg


def test_cli_errors_name_the_registry_and_osm_path_the_user_gave(tmp_path: Path, capsys, sample_city) -> None:
    reg = _registry(tmp_path, "missing/extract.osm.pbf")
    assert cli_main(["build", "--city", "mine", "--registry", str(reg), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert str(reg) in err and "osm_source" in err and "data/cities.yaml" not in err and "extract.osm.pbf" in err

    missing = tmp_path / "nope.osm.pbf"
    assert cli_main(["build", "--city", "sample", "--osm", str(missing), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--osm" in err and "does not exist" in err and "cities.yaml" not in err

    # a registry whose city lies where its (real) extract has no buildings: NoBuildingsError names that registry
    far = _registry(tmp_path, sample_city.osm_source)
    far.write_text(far.read_text().replace("48.8192", "48.8160").replace("48.8224", "48.8170").replace("48.8208", "48.8165"))
    assert cli_main(["build", "--city", "mine", "--registry", str(far), "--out", str(tmp_path / "c"), "--margin-m", "0"]) == 2
    err = capsys.readouterr().err
    assert str(far) in err and "data/cities.yaml" not in err


def test_a_folder_as_osm_path_gets_its_own_message(tmp_path: Path, capsys, sample_city) -> None:
    folder = tmp_path / "extracts"
    folder.mkdir()
    shutil.copyfile(sample_city.local_osm_path(), folder / "paris.osm")
    with pytest.raises(OSMPathIsFolderError, match=r"is a folder, not an OSM file.*OSM files in it: paris\.osm"):
        build_or_load_city_model(sample_city, tmp_path / "out", osm_path=folder)
    assert cli_main(["build", "--city", "sample", "--osm", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "holds no OSM file" in err and "does not exist" not in err
