"""Shared helpers for the renderer tests (tests needing Blender are marked ``blender``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import pytest

from s2r_data.citymodel import CityModel
from s2r_data.poses import Pose
from s2r_data.render import RenderResult, RenderSettings, load_sim_passes, render_poses

HAVE_BPY = importlib.util.find_spec("bpy") is not None


def render_model(tmp_dir: Path, model: CityModel, poses: Sequence[Pose], settings: RenderSettings, **kw) -> tuple[list[RenderResult], dict]:
    """Save ``model`` under ``tmp_dir``, render ``poses``, return results and ``{image_id: SimPasses}``."""
    model_path = model.save(tmp_dir / "city_model.npz")
    results = render_poses(model_path, poses, tmp_dir / "out", settings, progress=False, **kw)
    passes = {}
    if settings.mode == "labels":
        passes = {r.image_id: load_sim_passes(r.path) for r in results if r.status in ("ok", "skipped_existing")}
    return results, passes


@pytest.fixture(autouse=True)
def _require_bpy_for_blender_tests(request):
    # The render extra is part of the test environment (make test installs it); a missing bpy is a
    # setup error, reported as a failure, not a skip.
    if request.node.get_closest_marker("blender") and not HAVE_BPY:
        pytest.fail('bpy is not installed: pip install -e ".[render]"')
