"""Validated harvest settings (frozen dataclass), built once and passed explicitly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = [
    "HarvestConfig",
    "ImageSize",
    "CoverageLayer",
    "GRAPH_FIELDS",
    "DEFAULT_GRAPH_URL",
    "DEFAULT_TILES_URL",
    "PANO_CAMERA_TYPES",
]

ImageSize = Literal["2048", "original"]
CoverageLayer = Literal["mly1_computed_public", "mly1_public"]

DEFAULT_GRAPH_URL = "https://graph.mapillary.com"
DEFAULT_TILES_URL = "https://tiles.mapillary.com"
PANO_CAMERA_TYPES = ("spherical", "equirectangular")

# Everything the harvest keeps (pose, camera, grouping) plus the two thumbnail URLs, which are
# used at once and never stored.
GRAPH_FIELDS: tuple[str, ...] = (
    "id",
    "computed_rotation",
    "computed_geometry",
    "geometry",
    "computed_compass_angle",
    "compass_angle",
    "computed_altitude",
    "altitude",
    "atomic_scale",
    "camera_type",
    "captured_at",
    "sequence",
    "is_pano",
    "width",
    "height",
    "exif_orientation",
    "creator",
    "make",
    "model",
    "thumb_2048_url",
    "thumb_original_url",
    "quality_score",
    "merge_cc",
)

_LAYERS = ("mly1_computed_public", "mly1_public")
_SIZES = ("2048", "original")


@dataclass(frozen=True, kw_only=True)
class HarvestConfig:
    """How to talk to Mapillary. Defaults follow the documented budgets (the lowest quoted).

    Rates are per minute; ``*_burst`` is the token-bucket capacity (requests that may go out
    back to back after an idle period).
    """

    graph_url: str = DEFAULT_GRAPH_URL  # Entity API base (tests: the replay server)
    tiles_url: str = DEFAULT_TILES_URL  # coverage vector tiles base
    layer: CoverageLayer = "mly1_computed_public"  # SfM positions (match what we place); or GPS
    max_concurrency: int = 16  # simultaneous HTTP requests (Graph + image downloads)
    graph_rate_per_min: float = 10_000.0  # Graph budget (search budget; /:id is quoted at 60k/min)
    graph_burst: int = 20
    tiles_rate_per_min: float = 60.0  # undocumented per-IP throttle at ~60-370/min: stay low
    tiles_burst: int = 1
    tiles_jitter: bool = True  # shifted-exponential gaps between tile requests (same mean rate)
    image_rate_per_min: float | None = None  # CDN downloads; None = only max_concurrency bounds them
    image_burst: int = 8
    max_retries: int = 5  # per request, for transient errors (timeouts, 5xx, 429, code 4, bad JSON)
    backoff_base_s: float = 1.0  # first back-off; doubles per attempt, full jitter
    backoff_max_s: float = 60.0
    timeout_s: float = 60.0  # per request (total)
    batch_size: int = 200  # ids per `images?image_ids=` call (mapillary-js uses 200)
    image_size: ImageSize = "2048"  # thumb_2048_url, or the full-resolution thumb_original_url
    incremental: bool = False  # re-read coverage of finished tiles; fetch only ids not yet in the table
    retry_quarantined: bool = False  # look again at quarantined ids (fresh metadata, fresh download)
    progress: bool = True  # tqdm bars (tiles, images)
    seed: int | None = None  # jitter RNG seed (None = OS entropy)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"HarvestConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("graph_url", "tiles_url"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.startswith(("http://", "https://")):
                bad(name, "must be an http(s) base URL, e.g. 'https://graph.mapillary.com'")
            object.__setattr__(self, name, v.rstrip("/"))
        if self.layer not in _LAYERS:
            bad("layer", f"must be one of {_LAYERS}")
        if self.image_size not in _SIZES:
            bad("image_size", f"must be one of {_SIZES}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            bad("max_concurrency", "must be an integer >= 1")
        for name in ("graph_rate_per_min", "tiles_rate_per_min"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0 requests per minute")
        if self.image_rate_per_min is not None and not self.image_rate_per_min > 0:
            bad("image_rate_per_min", "must be > 0 or None (unlimited)")
        for name in ("graph_burst", "tiles_burst", "image_burst"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            bad("max_retries", "must be an integer >= 0")
        if not (self.backoff_base_s >= 0 and self.backoff_max_s >= self.backoff_base_s):
            bad("backoff_base_s", "need 0 <= backoff_base_s <= backoff_max_s")
        if not self.timeout_s > 0:
            bad("timeout_s", "must be > 0 seconds")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 200:
            bad("batch_size", "must be an integer in [1, 200]")

    @property
    def thumb_field(self) -> str:
        return "thumb_2048_url" if self.image_size == "2048" else "thumb_original_url"

    def replace(self, **changes: Any) -> "HarvestConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HarvestConfig":
        """Build from a YAML/JSON mapping; unknown keys are an error (typos must not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown HarvestConfig keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
