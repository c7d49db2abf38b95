"""The hidden truth of realistic stand-in content: ``truth.json`` beside ``images.json``.

Read only by tests and benchmarks (never by the pipeline; the replay server serves
``images.json`` and ``images/`` only). Written by :mod:`s2r_data.mapillary.standin_content`.

``truth.json`` (format :data:`TRUTH_FORMAT`)::

    format, generator_version, city, seed, seeds {world, capture, errors, records}, plan_key,
    config {world, capture, errors, width, mount_height_m_reported},
    city_model {builder_version, cache_key, counts}      # the OSM model the world was made from
    images {image_id: {
        sequence, index,                                 # capture order within the sequence
        true_pose:      Pose.to_dict() (confidence "truth"; centre z = camera above the street),
        reported_pose:  Pose.to_dict() of pose_from_mapillary(record) (default mount height),
        true_hpr_deg:   [heading, pitch, roll] (grid heading, s2r_data.poses conventions),
        injected:       InjectedError.to_dict() (drift/noise/gross components and their sums),
        error:          reported − true: dx_m, dy_m, dz_m, horizontal_m, heading_deg, pitch_deg, roll_deg,
        has_rotation, gross, platform, along_track_m}}
    sequences {sequence_id: {route, direction, platform, mount_height_m, spacing_m, opposite_of, image_ids}}
    buildings {osm_id: {dx_m, dy_m, rotation_deg, pivot_xy_m, top_change_m, group, top_change_applied_m}}
    occluders [{id, kind, xy_m, heading_deg, size {...}, street}]

Angles in degrees, lengths in metres, positions in the city's ``local_m`` frame. ``error`` is
what the pipeline sees (the compass fallback of images without ``computed_rotation`` is level,
so their pitch/roll error is minus the true tilt); ``injected`` is what the generator drew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..poses import Pose

__all__ = ["TRUTH_FILENAME", "TRUTH_FORMAT", "ImageTruth", "StandinTruth", "load_truth", "truth_path"]

TRUTH_FILENAME = "truth.json"
TRUTH_FORMAT = "s2r-standin-truth/1"


@dataclass(frozen=True)
class ImageTruth:
    image_id: str
    sequence: str
    true_pose: Pose
    reported_pose: Pose
    error: dict[str, float]  # reported − true, as the pipeline sees it
    injected: dict[str, Any]  # the components drawn
    has_rotation: bool
    gross: str  # "" or position / heading / both
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StandinTruth:
    """Parsed ``truth.json``; ``raw`` holds the whole document."""

    city: str
    generator_version: str
    seed: int
    images: dict[str, ImageTruth]
    sequences: dict[str, dict[str, Any]]
    buildings: dict[str, dict[str, Any]]
    occluders: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def truth_path(content_dir: str | Path) -> Path:
    return Path(content_dir) / TRUTH_FILENAME


def load_truth(content_dir: str | Path) -> StandinTruth:
    """The truth of realistic replay content in ``content_dir`` (raises ``FileNotFoundError``
    naming the generator command when there is none, e.g. for exact-mode content)."""
    path = truth_path(content_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {content_dir} is not realistic stand-in content; generate it with "
            f"`python -m s2r_data.mapillary.sample_content --mode realistic --out {content_dir}`"
        )
    doc = json.loads(path.read_text())
    if doc.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r}, expected {TRUTH_FORMAT!r}; regenerate the content")
    images = {
        k: ImageTruth(
            k, str(v["sequence"]), Pose.from_dict(v["true_pose"]), Pose.from_dict(v["reported_pose"]), dict(v["error"]),
            dict(v["injected"]), bool(v["has_rotation"]), str(v["gross"]), v,
        )
        for k, v in doc["images"].items()
    }
    return StandinTruth(str(doc["city"]), str(doc["generator_version"]), int(doc["seed"]), images, dict(doc["sequences"]),
                        dict(doc["buildings"]), list(doc["occluders"]), doc)
