"""Shared fixtures: small generated replay content in tmp dirs, a replay server, a fast config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from s2r_data.cities import CityConfig, load_city
from s2r_data.mapillary import HarvestConfig
from s2r_data.mapillary.replay import FaultConfig, ReplayServer
from s2r_data.mapillary.sample_content import Placement, make_records, placeholder_jpeg, write_content

TOKEN = "MLY|4242424242424242|0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONTENT = REPO / "data" / "sample" / "replay"


@pytest.fixture(scope="session")
def city() -> CityConfig:
    return load_city("sample")


def grid_placements(n: int) -> list[Placement]:
    """n placements on a grid inside the sample boundary, alternating between its two z14 tiles
    (their edge runs at y ≈ +54 m in the sample's local frame)."""
    out = []
    for i in range(n):
        y = (-60.0 if i % 2 == 0 else 100.0) + 9.0 * (i // 18)
        out.append(Placement(-80.0 + 9.0 * ((i // 2) % 9), y, (37.0 * i) % 360.0, f"s{i // 6}"))
    return out


def good_records(city: CityConfig, n: int, seed: int = 0) -> list[dict[str, Any]]:
    return make_records(grid_placements(n), city.frame, seed=seed)


def make_bad_records(city: CityConfig, seed: int = 99) -> dict[str, dict[str, Any]]:
    """One record per permanent problem, keyed by the expected status prefix/reason fragment."""
    base = make_records(grid_placements(30)[24:30], city.frame, seed=seed)
    perspective, not2to1, rotated, nopose, deleted, corrupt = base
    perspective.update(camera_type="perspective")
    not2to1.update(width=4000, height=3000)
    rotated.update(exif_orientation=6)
    for k in ("computed_rotation", "computed_compass_angle", "compass_angle"):
        nopose.pop(k, None)
    deleted["_replay_deleted"] = True
    corrupt["_replay_corrupt_image"] = True
    return {
        "quarantined:not_pano: camera_type": perspective,
        "quarantined:not_2to1": not2to1,
        "quarantined:exif_orientation": rotated,
        "no_pose:no_pose: no_orientation": nopose,
        "missing:not_found": deleted,
        "quarantined:image_": corrupt,
    }


def build_content(root: Path, records: list[dict[str, Any]], width: int = 128) -> Path:
    images = {r["id"]: placeholder_jpeg(width, seed=i) for i, r in enumerate(records)}
    return write_content(root, records, images)


def fast_config(srv: ReplayServer, **kw: Any) -> HarvestConfig:
    base = dict(
        graph_url=srv.graph_url,
        tiles_url=srv.tiles_url,
        backoff_base_s=0.005,
        backoff_max_s=0.02,
        tiles_rate_per_min=60_000.0,
        tiles_burst=5,
        progress=False,
        timeout_s=10.0,
        seed=0,
    )
    base.update(kw)
    return HarvestConfig(**base)


@pytest.fixture
def small_content(tmp_path: Path, city: CityConfig) -> tuple[Path, list[dict[str, Any]]]:
    recs = good_records(city, 8)
    return build_content(tmp_path / "content", recs), recs


@pytest.fixture
def server_factory():
    started: list[ReplayServer] = []

    def make(content: Path | None, faults: FaultConfig | None = None, token: str = TOKEN) -> ReplayServer:
        srv = ReplayServer(content, token, faults).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


def copy_sample_content(dst: Path) -> Path:
    """The committed sample content, copied so tests may add to it."""
    shutil.copytree(SAMPLE_CONTENT, dst)
    return dst
