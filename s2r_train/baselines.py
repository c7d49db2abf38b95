"""Reference predictors a trained translator must beat: the class-mean and nearest-neighbour baselines.

Both are "models" that see only what the generator sees (the render of a query) and are fitted on
the **train split only** (never a val/test pixel):

* :class:`ClassMeanBaseline` paints every pixel with the mean photo colour of its class (the label
  channel: sky, ground, road, …), measured over the valid photo pixels of every train panorama,
  each pixel weighted by the solid angle it covers (cos latitude), so crops of any view direction
  are matched on average. A class that no train pixel has gets the mean photo colour of all train
  pixels. A network that loses to this lookup table has learned nothing beyond the labels.
* :class:`NearestNeighbourBaseline` answers with the train **photo** whose render is closest to
  the query's render, warped by nothing: renders are compared as whole panoramas in the camera
  frame at a small size (:func:`render_descriptor`: DiffCol, world normals, log depth, sky), and a
  crop query gets the same view (yaw, pitch, FOV, flip) of the matched train photo. It shows how
  much a model gains over "retrieve a similar street".

Images are float tensors in [−1, 1] (the trainer's layout); labels are class indices.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .splits import splits_present_hint

__all__ = ["ClassMeanBaseline", "fit_class_mean", "NearestNeighbourBaseline", "fit_nearest_neighbour",
           "render_descriptor", "DESCRIPTOR_HW"]

DESCRIPTOR_HW = (32, 64)  # panorama size (rows, cols) at which renders are compared
_LOG_DEPTH_MAX_M = 200.0


def _split_rows(reader, split: str) -> list[int]:
    splits = reader.index.column("split").to_pylist()
    rows = [i for i, s in enumerate(splits) if s == split]
    if not rows:
        have = sorted({s for s in splits if s is not None})
        raise ValueError(f"{reader.loc.url}: no samples in split {split!r} to fit a baseline on "
                         f"({splits_present_hint(reader.loc.url, have)})")
    return rows


def _coarsest_level(reader, max_width: int) -> int:
    """The pyramid level to read: the smallest one still at least ``max_width`` wide (level 0 if none)."""
    level = 0
    while level < reader.pyramid_levels and (reader.width >> (level + 1)) >= max_width:
        level += 1
    return level


@dataclass(frozen=True)
class ClassMeanBaseline:
    """Per-class mean photo colour, ``colours`` (num_classes, 3) in [−1, 1]."""

    colours: torch.Tensor
    pixel_weight: torch.Tensor  # (num_classes,) solid angle (sr) of the train pixels behind each colour
    source_ids: tuple[str, ...]  # the train samples it was fitted on

    @property
    def num_classes(self) -> int:
        return int(self.colours.shape[0])

    def predict(self, label: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class indices → (B, 3, H, W) image in [−1, 1]."""
        idx = label.long().clamp(0, self.num_classes - 1)
        return self.colours.to(label.device)[idx].permute(0, 3, 1, 2).contiguous()

    def to_dict(self) -> dict:
        return {"colours_srgb_minus1_1": self.colours.tolist(), "solid_angle_sr": self.pixel_weight.tolist(),
                "num_train_samples": len(self.source_ids)}


def _solid_angle_weights(height: int) -> np.ndarray:
    """(H, 1) solid angle of one equirect pixel per row (any width; cos latitude × pixel area)."""
    lat = (0.5 - (np.arange(height) + 0.5) / height) * math.pi
    return (np.cos(lat) * (math.pi / height) * (2 * math.pi / (2 * height)))[:, None]


def fit_class_mean(url: str | os.PathLike, *, split: str = "train", num_classes: int = 7,
                   max_width: int = 512) -> ClassMeanBaseline:
    """Mean valid photo colour per class over the ``split`` panoramas (solid-angle weighted).

    Reads the smallest pyramid level at least ``max_width`` wide (the mean of a 2×2-averaged photo
    is the mean of the photo, up to label/mask sampling at block corners)."""
    from s2r_data.store import open_dataset

    reader = open_dataset(url)
    rows = _split_rows(reader, split)
    level = _coarsest_level(reader, max_width)
    sums = np.zeros((num_classes, 3), np.float64)
    weights = np.zeros(num_classes, np.float64)
    total, total_w = np.zeros(3, np.float64), 0.0
    for i in rows:
        label = reader.read(i, "label", level=level)[0].astype(np.int64).clip(0, num_classes - 1)
        real = reader.read(i, "real", level=level).astype(np.float64) / 127.5 - 1.0
        valid = reader.read(i, "mask", channels=1, level=level).astype(bool)
        w = np.broadcast_to(_solid_angle_weights(label.shape[0]), label.shape) * valid
        weights += np.bincount(label.ravel(), w.ravel(), minlength=num_classes)
        for c in range(3):
            sums[:, c] += np.bincount(label.ravel(), (real[c] * w).ravel(), minlength=num_classes)
        total += (real * w).reshape(3, -1).sum(1)
        total_w += float(w.sum())
    if total_w <= 0:
        raise ValueError(f"{reader.loc.url}: the {split} split has no valid photo pixels to fit the class means on")
    colours = np.where(weights[:, None] > 0, sums / np.maximum(weights, 1e-300)[:, None], total / total_w)
    ids = reader.image_ids
    return ClassMeanBaseline(torch.as_tensor(colours, dtype=torch.float32), torch.as_tensor(weights, dtype=torch.float32),
                             tuple(ids[i] for i in rows))


def render_descriptor(sim_m: np.ndarray, label: np.ndarray, *, size_hw: tuple[int, int] = DESCRIPTOR_HW) -> torch.Tensor:
    """A panorama's render as a small vector for nearest-neighbour search: DiffCol (3), world
    normal (3), log depth in [0, 1] (1) and the sky mask (1), area-averaged to ``size_hw``.

    ``sim_m`` (7, H, W) as stored (depth in metres, 0 on sky); ``label`` (H, W) class indices."""
    sim = torch.as_tensor(np.asarray(sim_m, dtype=np.float32))
    sky = torch.as_tensor(np.asarray(label) == 0, dtype=torch.float32)[None]
    depth = sim[6:7].clamp(1.0, _LOG_DEPTH_MAX_M)
    log_depth = torch.log(depth) / math.log(_LOG_DEPTH_MAX_M) * (1 - sky) + sky
    x = torch.cat([sim[0:3].clamp(0, 1), sim[3:6].clamp(-1, 1) * (1 - sky), log_depth, sky], 0)
    return F.adaptive_avg_pool2d(x[None], size_hw)[0].flatten()


@dataclass(frozen=True)
class NearestNeighbourBaseline:
    """Train render descriptors and the row (in the train split's order) each one belongs to."""

    descriptors: torch.Tensor  # (N_train, D)
    source_ids: tuple[str, ...]

    def match(self, query: torch.Tensor) -> torch.Tensor:
        """(B, D) or (D,) query descriptors → (B,) positions in ``source_ids`` of the closest
        train renders (mean squared difference; ties → the first)."""
        q = query.reshape(-1, self.descriptors.shape[1]).float()
        return torch.cdist(q, self.descriptors.float()).argmin(1)


def fit_nearest_neighbour(url: str | os.PathLike, *, split: str = "train",
                          size_hw: tuple[int, int] = DESCRIPTOR_HW) -> NearestNeighbourBaseline:
    """Descriptors of every ``split`` render (read at the smallest pyramid level ≥ 4× the descriptor)."""
    from s2r_data.store import open_dataset

    reader = open_dataset(url)
    rows = _split_rows(reader, split)
    level = _coarsest_level(reader, 4 * size_hw[1])
    desc = [render_descriptor(reader.read(i, "sim", level=level), reader.read(i, "label", level=level)[0],
                              size_hw=size_hw) for i in rows]
    ids = reader.image_ids
    return NearestNeighbourBaseline(torch.stack(desc), tuple(ids[i] for i in rows))
