"""Validated render settings (frozen dataclass), shared by the supervisor and the Blender worker."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = [
    "RenderSettings",
    "RenderMode",
    "RenderBackend",
    "BACKENDS",
    "DeviceChoice",
    "BadPosePolicy",
    "DEFAULT_PHOTO_SAMPLES",
    "CLIP_START_M",
    "MIN_WIDTH_PX",
    "MAX_WIDTH_PX",
    "check_width",
]

RenderMode = Literal["labels", "photo"]
RenderBackend = Literal["blender", "raycast"]
DeviceChoice = Literal["auto", "cpu", "gpu"]
BadPosePolicy = Literal["render", "skip"]

_MODES = ("labels", "photo")
BACKENDS = ("blender", "raycast")  # one module each: s2r_data.render.<name>_backend
_DEVICES = ("auto", "cpu", "gpu")
_BAD_POSE_POLICIES = ("render", "skip")
DEFAULT_PHOTO_SAMPLES = 4  # ≈3 s per 1024×512 on 2 cores; a little noise reads as sensor noise
CLIP_START_M = 0.05  # near clip of the panorama camera (both backends): nearer surfaces are not seen
MIN_WIDTH_PX = 8
# 16384 × 8192 = 134 M pixels ≈ 2.4 GB of labels-mode passes per panorama: anything wider is a typo.
MAX_WIDTH_PX = 16384


def check_width(width: object) -> None:
    """Raise ``ValueError`` unless ``width`` is an even integer in [MIN_WIDTH_PX, MAX_WIDTH_PX]."""
    if isinstance(width, bool) or not isinstance(width, int) or width % 2 or not MIN_WIDTH_PX <= width <= MAX_WIDTH_PX:
        raise ValueError(
            f"width={width!r}: must be an even integer in [{MIN_WIDTH_PX}, {MAX_WIDTH_PX}] px (height = width / 2); "
            "typical widths are 512, 1024, 2048 or 4096"
        )


@dataclass(frozen=True, kw_only=True)
class RenderSettings:
    """How to render a batch of panoramas.

    ``height`` is always ``width // 2`` (full-sphere equirectangular, square pixels in angle).
    ``labels`` mode: Diffuse-BSDF class colours, black world, no lights, 1 sample, passes
    DiffCol/Normal/Depth/Material Index → ``<image_id>.npz``. ``photo`` mode: sun + sky, textured
    Principled materials, ``samples`` (default 4) and AgX → ``<image_id>.jpg``.

    ``backend``: ``"blender"`` (Cycles in a supervised worker process; the reference, and the only
    one for photo mode) or ``"raycast"`` (Embree first-hit ray casting in this process, labels mode
    only, the same pixels ≈ 5-10× faster). Blender-only fields (samples, device, timeouts,
    restart_every, denoise) are ignored by the ray caster; ``threads`` sets both.
    """

    width: int = 1024  # pixels; even; height = width // 2
    clip_end_m: float = 20_000.0  # farther surfaces count as sky
    threads: int = 0  # Cycles threads (fixed); 0 = all CPU cores of this machine
    samples: int | None = None  # None = mode default (labels 1, photo 4)
    timeout_s: float = 300.0  # per pose, from sending the pose to Blender's reply (+ startup_timeout_s for a worker's first pose)
    startup_timeout_s: float = 180.0  # bpy import + scene build of one worker process
    restart_every: int = 1000  # poses per Blender process (bounds memory growth)
    device: DeviceChoice = "auto"  # auto = GPU if Cycles finds one, else CPU
    mode: RenderMode = "labels"
    on_bad_pose: BadPosePolicy = "render"  # flagged poses (outside/inside building): render or skip
    denoise: bool = False  # photo mode only (OpenImageDenoise); labels never denoise
    compress: bool = False  # zip-deflate the per-pose .npz (≈3× smaller, slower to write)
    jpeg_quality: int = 88  # photo mode
    max_consecutive_failures: int = 5  # then the rest of the batch is marked failed (not retried)
    backend: RenderBackend = "blender"  # "blender" (reference, photo mode) | "raycast" (fast, labels only)

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> None:
            raise ValueError(f"RenderSettings.{field}={getattr(self, field)!r}: {why}")

        try:
            check_width(self.width)
        except ValueError as e:
            raise ValueError(f"RenderSettings.{e}") from None
        if not self.clip_end_m > 1.0:
            bad("clip_end_m", "must be > 1 m (use 10-20 km for cities)")
        if not isinstance(self.threads, int) or self.threads < 0:
            bad("threads", "must be an integer >= 0 (0 = all cores)")
        if self.mode not in _MODES:
            bad("mode", f"must be one of {_MODES}")
        if self.backend not in BACKENDS:
            bad("backend", f"must be one of {BACKENDS}")
        if self.backend == "raycast" and self.mode != "labels":
            bad("backend", "the ray caster renders labels mode only; photo mode needs backend='blender'")
        if self.device not in _DEVICES:
            bad("device", f"must be one of {_DEVICES}")
        if self.on_bad_pose not in _BAD_POSE_POLICIES:
            bad("on_bad_pose", f"must be one of {_BAD_POSE_POLICIES}")
        if self.samples is not None:
            if not isinstance(self.samples, int) or self.samples < 1:
                bad("samples", "must be an integer >= 1 or None (mode default)")
            if self.mode == "labels" and self.samples != 1:
                bad("samples", "labels mode needs exactly 1 sample (anti-aliasing would blend class colours at edges)")
        if self.mode == "labels" and self.denoise:
            bad("denoise", "labels mode never denoises (it would alter DiffCol/Normal)")
        if not self.timeout_s > 0:
            bad("timeout_s", "must be > 0")
        if not self.startup_timeout_s > 0:
            bad("startup_timeout_s", "must be > 0")
        if not isinstance(self.restart_every, int) or self.restart_every < 1:
            bad("restart_every", "must be an integer >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", "must be in [1, 100]")
        if not isinstance(self.max_consecutive_failures, int) or self.max_consecutive_failures < 1:
            bad("max_consecutive_failures", "must be an integer >= 1")

    @property
    def height(self) -> int:
        return self.width // 2

    @property
    def resolved_samples(self) -> int:
        if self.samples is not None:
            return self.samples
        return 1 if self.mode == "labels" else DEFAULT_PHOTO_SAMPLES

    @property
    def resolved_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    @property
    def output_suffix(self) -> str:
        return ".npz" if self.mode == "labels" else ".jpg"

    def pixel_settings(self) -> dict[str, Any]:
        """The fields that change output pixels (part of every output's content key); threads,
        timeouts, device, compression and failure policies do not."""
        d: dict[str, Any] = {"mode": self.mode, "width": self.width, "clip_end_m": float(self.clip_end_m)}
        if self.mode == "photo":
            d.update(samples=self.resolved_samples, denoise=self.denoise, jpeg_quality=self.jpeg_quality)
        return d

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RenderSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown RenderSettings fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(d))
