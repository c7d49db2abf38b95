"""Photo ↔ city-model alignment: a per-pair alignment score and pose refinement (issue 12).

Pure functions over arrays (photos, render passes, poses) plus a ray-caster handle
(:class:`s2r_data.render.raycast.RaycastScene`); no Prefect, no bpy. One module per job:

* :mod:`.pose_vector` — a pose as six numbers (heading, pitch, roll, x, y, z), corrections;
* :mod:`.projection` — projecting 3-D points into the panorama, with Jacobians;
* :mod:`.model_edges` — the model's photo-relevant 3-D edges and their visible sample points;
* :mod:`.photo_edges` — oriented photo edges, distance transforms, sub-pixel edge search, sky;
* :mod:`.render_edges` — discontinuities of render passes (any backend);
* :mod:`.score` — the alignment score (documented scale in [0, 1], higher = better);
* :mod:`.solver` — robust Levenberg–Marquardt for the six numbers;
* :mod:`.refine` — per-image refinement (coarse heading, position grid, fine edges);
* :mod:`.sequence` — the smooth per-sequence prior;
* :mod:`.pipeline` — sequences → refined poses + scores + the never-worse decision;
* :mod:`.overlay` — edge overlays and score histograms for reports;
* :mod:`.dataset` — score and refine an existing dataset (``s2r align``).
* :mod:`.index_summary` — a dataset index's alignment in numbers (``s2r store info``).

Method, physics and measured accuracy: ``docs/alignment.md``.
"""

from .model_edges import EdgeKind, ModelEdges, extract_model_edges
from .photo_edges import PhotoError
from .pipeline import AlignConfig, AlignInput, AlignOutcome, align_images, align_sequence
from .pose_vector import PoseCorrection
from .refine import RefineConfig, RefineResult, refine_pose
from .score import SCORE_DOC, AlignmentScore, ScoreConfig, score_pair
from .sequence import SequenceConfig

__all__ = [
    "AlignConfig",
    "AlignInput",
    "AlignOutcome",
    "AlignmentScore",
    "EdgeKind",
    "ModelEdges",
    "PhotoError",
    "PoseCorrection",
    "RefineConfig",
    "RefineResult",
    "SCORE_DOC",
    "ScoreConfig",
    "SequenceConfig",
    "align_images",
    "align_sequence",
    "extract_model_edges",
    "refine_pose",
    "score_pair",
]
