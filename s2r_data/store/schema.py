"""Dataset layout constants: array specs, channel tables, codec choice and the Parquet index schema.

Everything a reader needs to interpret the store without s2r is also written into the Zarr group
attributes (``s2r_dataset``) and the Parquet schema metadata (``schema_version``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..citymodel import CLASSES

__all__ = [
    "DATASET_VERSION",
    "INDEX_SCHEMA_VERSION",
    "INDEX_SCHEMA",
    "SIM_CHANNELS",
    "REAL_CHANNELS",
    "MASK_CHANNELS",
    "ARRAY_NAMES",
    "ArraySpec",
    "array_specs",
    "level_name",
    "chunk_side",
    "CodecChoice",
    "DEFAULT_CODEC",
    "group_attributes",
    "StoreSpec",
    "SLOTS_MEANING",
    "ROW_FIELDS_FROM_CALLER",
]

DATASET_VERSION = "1"
INDEX_SCHEMA_VERSION = "1"

# (name, unit, frame / meaning)
SIM_CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("diffcol_r", "1", "linear DiffCol colour in [0, 1], class colour (s2r_data.citymodel.CLASSES)"),
    ("diffcol_g", "1", "linear DiffCol colour in [0, 1]"),
    ("diffcol_b", "1", "linear DiffCol colour in [0, 1]"),
    ("normal_x", "1", "world surface normal in local_m (x east), unit length, 0 on sky"),
    ("normal_y", "1", "world surface normal in local_m (y north)"),
    ("normal_z", "1", "world surface normal in local_m (z up)"),
    ("depth_m", "m", "Euclidean distance from the camera centre, metres, 0 on sky"),
)
REAL_CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("red", "uint8", "photo sRGB"),
    ("green", "uint8", "photo sRGB"),
    ("blue", "uint8", "photo sRGB"),
)
MASK_CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("sky", "0/1", "1 where the render hit nothing (label 0, depth 0)"),
    ("valid", "0/1", "1 where the photo pixel is usable (e.g. 0 on the capture vehicle)"),
)
ARRAY_NAMES = ("sim", "label", "real", "mask")


def level_name(array: str, level: int) -> str:
    """Zarr array name of pyramid ``level`` (0 = full resolution): ``sim``, ``sim_l1``, …"""
    return array if level == 0 else f"{array}_l{level}"


def chunk_side(size_px: int, preferred_px: int) -> int:
    """Largest power-of-two-fraction of ``preferred_px`` that divides ``size_px`` (≥ 1)."""
    c = min(preferred_px, size_px)
    while c > 1 and size_px % c:
        c //= 2
    return max(c, math.gcd(c, size_px))


@dataclass(frozen=True)
class CodecChoice:
    """Blosc settings for every array (chosen by measurement, see docs/benchmarks-loader.md)."""

    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "shuffle"

    def codec(self):
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.cname == "zstd-plain":
            return ZstdCodec(level=self.clevel)
        return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle)

    def to_json(self) -> dict[str, Any]:
        return {"cname": self.cname, "clevel": self.clevel, "shuffle": self.shuffle}


# Blosc lz4 + byte shuffle: ~20 % more bytes than Blosc zstd but several times faster to write and
# faster to decode, which is what the crop loader is bound by (docs/benchmarks-loader.md).
DEFAULT_CODEC = CodecChoice()


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    channels: int
    height: int
    width: int
    chunk: tuple[int, int]  # (y, x) read unit


def array_specs(height: int, width: int, levels: int, chunk_px: int) -> list[ArraySpec]:
    """Arrays of a dataset with full-resolution ``height`` × ``width`` and ``levels`` extra
    pyramid levels (each half the previous resolution)."""
    specs = []
    for level in range(levels + 1):
        h, w = height >> level, width >> level
        chunk = (chunk_side(h, chunk_px), chunk_side(w, chunk_px))
        for name, dtype, c in (("sim", "float16", 7), ("label", "uint8", 1), ("real", "uint8", 3), ("mask", "uint8", 2)):
            specs.append(ArraySpec(level_name(name, level), dtype, c, h, w, chunk))
    return specs


def group_attributes(*, height: int, width: int, city: str, levels: int, chunk_px: int, codec: CodecChoice) -> dict:
    def table(rows):
        return [{"name": n, "unit": u, "meaning": m} for n, u, m in rows]

    return {
        "s2r_dataset": {
            "dataset_version": DATASET_VERSION,
            "index_schema_version": INDEX_SCHEMA_VERSION,
            "city": city,
            "height": height,
            "width": width,
            "pyramid_levels": levels,
            "pyramid": "level k = 2^k × 2^k average pooling of level 0 (label, masks: nearest "
            "= top-left pixel of the block; normals/depth averaged over non-sky pixels only); "
            "array names <name>_l<k>",
            "chunk_px": chunk_px,
            "codec": codec.to_json(),
            "projection": "equirectangular, s2r_data.equirect: pixel centres at integers, row 0 on "
            "top, column (W-1)/2 = camera forward, px wraps at the seam",
            "frames": {
                "normals": "local_m (city tmerc: x east, y north, z up)",
                "depth": "Euclidean metres from the camera centre",
                "sky": "label 0, DiffCol 0, normal 0, depth 0",
            },
            "arrays": {
                "sim": {"dtype": "float16", "shape": "(N, 7, H, W)", "channels": table(SIM_CHANNELS)},
                "label": {"dtype": "uint8", "shape": "(N, 1, H, W)", "channels": [{"name": "class", "unit": "index", "meaning": "class index, see classes"}]},
                "real": {"dtype": "uint8", "shape": "(N, 3, H, W)", "channels": table(REAL_CHANNELS)},
                "mask": {"dtype": "uint8", "shape": "(N, 2, H, W)", "channels": table(MASK_CHANNELS)},
            },
            "classes": [
                {"index": c.index, "name": c.name, "colour_linear": list(c.colour_linear)} for c in CLASSES
            ],
            "sample_axis": SLOTS_MEANING,
            "committed_samples": 0,
            "committed_samples_meaning": COMMITTED_COUNT_MEANING,
        }
    }


SLOTS_MEANING = (
    "axis 0 of every array is a slot, not a sample: shape[0] is the capacity (grown ×2 as needed), "
    "at least the number of committed samples. Slot zarr_index holds the sample whose index row "
    "(index.parquet or index.d/<image_id>.parquet) names it; a slot no committed row names is unused "
    "(reads as fill value 0) or holds an uncommitted write (crashed or in flight): ignore it. "
    "See docs/dataset.md"
)
COMMITTED_COUNT_MEANING = (
    "rows of index.parquet at the last compaction (s2r store compact; every build-dataset run ends "
    "with one). Samples committed since are in index.d/ fragments: read index.parquet and index.d/*.parquet "
    "(names not starting with '.'), union by image_id"
)


@dataclass(frozen=True)
class StoreSpec:
    """What a dataset store holds: full-resolution panorama size (2:1), city, extra pyramid levels,
    inner chunk side and codec. A writer and the store it opens must agree on :meth:`identity`."""

    height: int
    width: int
    city: str
    pyramid_levels: int = 1
    chunk_px: int = 256
    codec: CodecChoice = DEFAULT_CODEC

    def __post_init__(self) -> None:
        if self.width != 2 * self.height or self.height <= 0:
            raise ValueError(f"panoramas are 2:1; got height={self.height}, width={self.width}")
        if self.pyramid_levels < 0 or self.height % (1 << self.pyramid_levels):
            raise ValueError(f"height {self.height} is not divisible by 2^{self.pyramid_levels} (pyramid_levels)")
        if self.chunk_px < 1:
            raise ValueError(f"chunk_px={self.chunk_px}: must be >= 1")

    def arrays(self) -> list[ArraySpec]:
        return array_specs(self.height, self.width, self.pyramid_levels, self.chunk_px)

    def attributes(self) -> dict:
        return group_attributes(height=self.height, width=self.width, city=self.city, levels=self.pyramid_levels,
                                chunk_px=self.chunk_px, codec=self.codec)

    def identity(self) -> dict[str, Any]:
        """The attributes an existing store must match (``s2r_dataset`` keys)."""
        return {"height": self.height, "width": self.width, "city": self.city, "pyramid_levels": self.pyramid_levels}


_UTC_MS = pa.timestamp("ms", tz="UTC")

INDEX_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("tile", pa.string()),  # "z/x/y"
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("x_local_m", pa.float64()),
        pa.field("y_local_m", pa.float64()),
        pa.field("z_local_m", pa.float64()),
        # row-major 3×3 rotation local_m → cam_opensfm (s2r_data.poses.Pose.R_world_to_cam_opensfm).
        # Required: every rendered sample has a pose (and pyarrow 25 cannot read back null
        # fixed-size lists from Parquet: "Expected all lists to be of size=9").
        pa.field("R_world_to_cam_opensfm", pa.list_(pa.float64(), 9), nullable=False),
        pa.field("heading_deg", pa.float64()),
        pa.field("pitch_deg", pa.float64()),
        pa.field("roll_deg", pa.float64()),
        pa.field("pose_confidence", pa.string()),
        pa.field("captured_at", _UTC_MS),
        pa.field("sequence_id", pa.string()),
        pa.field("harvest_status", pa.string()),
        pa.field("render_status", pa.string()),
        pa.field("split", pa.string()),  # null until s2r_train.splits.assign_splits
        pa.field("vis_index", pa.int16()),  # 0..N-1 for the N visualisation samples, else null
        pa.field("alignment_score", pa.float32()),
        pa.field("zarr_index", pa.int64(), nullable=False),
        pa.field("written_at", _UTC_MS, nullable=False),
        pa.field("outside_bounds", pa.bool_()),
        pa.field("inside_building", pa.bool_()),
        pa.field("render_time_s", pa.float32()),
        # pose alignment (s2r_data.align; null when the build did not align). The pose columns above
        # are the rendered (adopted) pose; alignment_score is the score there (s2r_data.align.score:
        # [0, 1], higher = better aligned). Variable-size lists: nullable (see the note above).
        pa.field("alignment_score_before", pa.float32()),  # at the reported pose
        pa.field("alignment_status", pa.string()),  # s2r_data.align.pipeline.STATUSES
        pa.field("alignment_flags", pa.string()),  # comma-separated, e.g. "refinement_not_better,poorly_aligned"
        pa.field("alignment_edge_cost_deg", pa.float32()),  # the score's edge distance at the adopted pose
        pa.field("reported_x_local_m", pa.float64()),  # the pose Mapillary reported (pose_from_mapillary)
        pa.field("reported_y_local_m", pa.float64()),
        pa.field("reported_z_local_m", pa.float64()),
        pa.field("reported_R_world_to_cam_opensfm", pa.list_(pa.float64())),  # 9 floats, row-major
        pa.field("pose_correction", pa.list_(pa.float64())),  # adopted − reported: Δheading°, Δpitch°, Δroll°, Δx m, Δy m, Δz m
    ],
    metadata={"schema_version": INDEX_SCHEMA_VERSION, "producer": "s2r_data.store"},
)

# Columns the writer fills itself; everything else in INDEX_SCHEMA may come in ``row``.
_WRITER_FIELDS = {"image_id", "city", "zarr_index", "written_at"}
ROW_FIELDS_FROM_CALLER = tuple(f.name for f in INDEX_SCHEMA if f.name not in _WRITER_FIELDS)
