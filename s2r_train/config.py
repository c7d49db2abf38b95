"""Training configuration: one YAML with ``network``, ``train``, ``data`` and ``eval`` blocks.

The YAML is parsed into frozen, keyword-only dataclasses and validated on load. Every error
names the bad key by its dotted path (``train.lr_g``) and says what was expected, so a typo
fails before anything is built. Rules that span fields live in ``__post_init__``.

Nothing downstream receives a ``Config`` it does not need: model constructors take
explicit arguments (see ``s2r_train.models.build_generator``), and the trainer unpacks
the blocks it uses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

__all__ = [
    "ConfigError",
    "ConditioningConfig",
    "GeneratorConfig",
    "DiscriminatorConfig",
    "NetworkConfig",
    "TrainConfig",
    "DataConfig",
    "EvalConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "apply_overrides",
    "PRESET_DIR",
]

PRESET_DIR = Path(__file__).parent / "configs"

SIM_CHANNELS = 7  # DiffCol(3) + world Normal(3) + depth(1), the Dataset item contract


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range.

    The message starts with the dotted key (``train.lr_g: ...``)."""


def _fail(key: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {msg}")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        _fail(key, msg)


def _check_crop_angles(prefix: str, *, pitch_key: str, pitch_deg: tuple[float, float], fov_key: str,
                       fov_deg: tuple[float, float]) -> None:
    """Perspective-crop angle ranges (pitch, horizontal FOV), in degrees, as ``[lo, hi]``."""
    lo, hi = fov_deg
    _check(0 < lo <= hi < 180, f"{prefix}.{fov_key}", f"need 0 < lo <= hi < 180, got {fov_deg}")
    lo, hi = pitch_deg
    _check(-90 <= lo <= hi <= 90, f"{prefix}.{pitch_key}", f"need -90 <= lo <= hi <= 90, got {pitch_deg}")


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True, kw_only=True)
class ConditioningConfig:
    """How the 7-channel sim item becomes the generator input (see ``conditioning.py``)."""

    depth_encoding: Literal["linear", "log", "inverse"] = "linear"  # linear = as the Dataset gives it
    depth_range_m: tuple[float, float] = (0.0, 200.0)  # range the Dataset used: d01 = (d - lo) / (hi - lo)
    depth_min_m: float = 1.0  # clip for log / inverse depth, metres
    sky_channel: bool = False  # append the sky mask as a channel
    normals_frame: Literal["world", "camera"] = "world"  # rotate normals into the crop camera frame
    label_onehot: bool = False  # append the class-index one-hot map
    num_classes: int = 7  # s2r_data.citymodel.CLASSES
    view_direction: bool = False  # append each pixel's unit viewing ray in local_m (3 channels)

    def __post_init__(self) -> None:
        lo, hi = self.depth_range_m
        _check(0.0 <= lo < hi, "network.conditioning.depth_range_m", f"need 0 <= lo < hi, got {self.depth_range_m}")
        _check(self.depth_min_m > 0, "network.conditioning.depth_min_m", f"must be > 0, got {self.depth_min_m}")
        _check(self.num_classes >= 1, "network.conditioning.num_classes", "must be >= 1")

    @property
    def in_channels(self) -> int:
        return (SIM_CHANNELS + int(self.sky_channel) + 3 * int(self.view_direction)
                + (self.num_classes if self.label_onehot else 0))


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    arch: Literal["spade", "unet"] = "spade"
    base_filters: int = 64  # SPADE nf (thesis 64) / U-net ngf (thesis 128)
    norm: Literal["none", "instance", "batch", "sync_batch"] = "instance"  # SPADE: parameter-free norm before the modulation; U-net: the middle levels' norm
    spectral_norm: bool = True
    num_upsampling_layers: Literal["normal", "more", "most"] = "normal"  # SPADE: 5 / 6 / 7 upsamplings
    spade_hidden: int = 128  # hidden channels of the SPADE gamma/beta net
    use_vae: bool = False  # SPADE style encoder (multimodal output, KL loss)
    z_dim: int = 256
    unet_levels: int = 8  # U-net down/up levels (thesis 7-8)

    def __post_init__(self) -> None:
        _check(self.base_filters >= 1, "network.generator.base_filters", "must be >= 1")
        _check(self.spade_hidden >= 1, "network.generator.spade_hidden", "must be >= 1")
        _check(self.z_dim >= 1, "network.generator.z_dim", "must be >= 1")
        _check(1 <= self.unet_levels <= 10, "network.generator.unet_levels", f"must be in [1, 10], got {self.unet_levels}")
        _check(not (self.use_vae and self.arch != "spade"), "network.generator.use_vae", "the VAE style encoder exists only for arch: spade")

    @property
    def downsample_factor(self) -> int:
        """Input height/width must be a multiple of this."""
        if self.arch == "spade":
            return 2 ** {"normal": 5, "more": 6, "most": 7}[self.num_upsampling_layers]
        return 2**self.unet_levels


@dataclass(frozen=True, kw_only=True)
class DiscriminatorConfig:
    num_scales: int = 1  # 1 = PatchGAN, 2+ = multi-scale (pix2pixHD)
    n_layers: int = 3
    base_filters: int = 64
    norm: Literal["none", "instance", "batch"] = "instance"
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        _check(1 <= self.num_scales <= 4, "network.discriminator.num_scales", f"must be in [1, 4], got {self.num_scales}")
        _check(1 <= self.n_layers <= 6, "network.discriminator.n_layers", f"must be in [1, 6], got {self.n_layers}")
        _check(self.base_filters >= 1, "network.discriminator.base_filters", "must be >= 1")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    mode: Literal["paired", "cycle"] = "paired"  # cycle = CycleGAN (two G/D pairs) for unpaired data
    gan_loss: Literal["bce", "hinge", "ls"] = "hinge"
    lambda_gan: float = 1.0
    lambda_l1: float = 1.0
    lambda_l2: float = 0.0  # squared error (conditional mean: PSNR's loss), weighted and masked like L1
    adversarial_start_nimg: int = 0  # L1-only warm-up: no D updates and no adversarial/feature terms before this
    l1_alignment_weighting: bool = False  # weight L1 and L2 per pair by batch["alignment"] in [0, 1]
    lambda_feat: float = 10.0  # D feature matching
    lambda_vgg: float = 0.0  # perceptual loss; needs perceptual_weights_path
    perceptual_weights_path: str | None = None  # local VGG-19 state_dict (.pt); never downloaded
    lambda_kl: float = 0.05  # only with generator.use_vae
    lambda_cycle: float = 10.0  # only in mode: cycle
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas_g: tuple[float, float] = (0.0, 0.999)
    betas_d: tuple[float, float] = (0.0, 0.999)
    d_steps_per_g: int = 1  # D updates per G update (on the same batch)
    grad_clip_norm: float | None = None
    batch_size: int = 4  # per process (GPU)
    epochs: int = 100
    ema: bool = True
    ema_beta: float = 0.999
    ema_start_nimg: int = 0  # before this, G_ema copies G
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "bf16"
    channels_last: bool = True  # only applied on CUDA
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms + no TF32; resume is bitwise
    seed: int = 0
    checkpoint_every_epochs: int = 1
    samples_every_epochs: int = 1  # fixed-sample grids and val scores every N epochs (small datasets: raise it)
    checkpoint_every_nimg: int | None = None  # overrides the epoch cadence when set
    keep_last: int = 3
    max_nonfinite_steps: int = 20  # consecutive skipped (non-finite) steps before stopping
    max_quarantined_fraction: float = 0.05  # stop when more of the train samples than this are damaged (NaN/Inf)
    log_every_steps: int = 50
    num_vis_samples: int = 4
    val_batches: int = 4  # batches of the val split scored per epoch (0 = none), crops at the eval.crop_* angles
    num_workers: int = 2
    cpu_threads: int | None = None  # torch intra-op threads when training on the CPU; null = torch's default

    def __post_init__(self) -> None:
        for k in ("lambda_gan", "lambda_l1", "lambda_l2", "lambda_feat", "lambda_vgg", "lambda_kl", "lambda_cycle"):
            _check(getattr(self, k) >= 0, f"train.{k}", f"must be >= 0, got {getattr(self, k)}")
        for k in ("lr_g", "lr_d"):
            _check(getattr(self, k) > 0, f"train.{k}", f"must be > 0, got {getattr(self, k)}")
        for k in ("betas_g", "betas_d"):
            b1, b2 = getattr(self, k)
            _check(0 <= b1 < 1 and 0 <= b2 < 1, f"train.{k}", f"each beta must be in [0, 1), got {getattr(self, k)}")
        _check(self.lambda_vgg == 0 or self.perceptual_weights_path is not None, "train.perceptual_weights_path",
               "lambda_vgg > 0 needs a local VGG-19 weights file (nothing is downloaded); set the path or lambda_vgg: 0")
        _check(self.d_steps_per_g >= 1, "train.d_steps_per_g", "must be >= 1")
        _check(self.grad_clip_norm is None or self.grad_clip_norm > 0, "train.grad_clip_norm", "must be > 0 or null")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(0 <= self.ema_beta < 1, "train.ema_beta", f"must be in [0, 1), got {self.ema_beta}")
        _check(self.ema_start_nimg >= 0, "train.ema_start_nimg", "must be >= 0")
        _check(self.checkpoint_every_epochs >= 1, "train.checkpoint_every_epochs", "must be >= 1")
        _check(self.samples_every_epochs >= 1, "train.samples_every_epochs", "must be >= 1")
        _check(self.checkpoint_every_nimg is None or self.checkpoint_every_nimg >= 1, "train.checkpoint_every_nimg", "must be >= 1 or null")
        _check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        _check(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")
        _check(0.0 <= self.max_quarantined_fraction <= 1.0, "train.max_quarantined_fraction",
               f"must be in [0, 1], got {self.max_quarantined_fraction}")
        _check(self.adversarial_start_nimg >= 0, "train.adversarial_start_nimg", "must be >= 0")
        _check(not (self.mode == "cycle" and self.adversarial_start_nimg > 0), "train.adversarial_start_nimg",
               "the L1 warm-up exists only in mode: paired (cycle training is adversarial from the start)")
        _check(self.adversarial_start_nimg == 0 or self.lambda_l1 > 0 or self.lambda_l2 > 0 or self.lambda_vgg > 0,
               "train.adversarial_start_nimg",
               "a reconstruction warm-up needs lambda_l1, lambda_l2 or lambda_vgg > 0: there is nothing else to train on before it ends")
        _check(self.log_every_steps >= 1, "train.log_every_steps", "must be >= 1")
        _check(self.num_vis_samples >= 0, "train.num_vis_samples", "must be >= 0")
        _check(self.val_batches >= 0, "train.val_batches", "must be >= 0")
        _check(self.num_workers >= 0, "train.num_workers", "must be >= 0")
        _check(self.cpu_threads is None or self.cpu_threads >= 1, "train.cpu_threads", "must be >= 1 or null")
        _check(not (self.mode == "cycle" and self.l1_alignment_weighting), "train.l1_alignment_weighting",
               "not used in mode: cycle (no paired L1 there)")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    url: str | None = None  # dataset URL (Zarr store) or synthetic://N; the CLI --dataset overrides
    crop_size: int = 256  # square perspective crops, pixels
    fov_deg: tuple[float, float] = (60.0, 100.0)  # horizontal FOV range of random crops
    pitch_deg: tuple[float, float] = (-10.0, 30.0)
    hflip: bool = True
    train_split: str = "train"
    val_split: str = "val"
    min_alignment_score: float | None = None  # train only on pairs whose alignment_score is >= this (null: all)

    def __post_init__(self) -> None:
        _check(self.crop_size >= 8, "data.crop_size", f"must be >= 8, got {self.crop_size}")
        _check(self.min_alignment_score is None or 0.0 <= self.min_alignment_score <= 1.0, "data.min_alignment_score",
               f"must be in [0, 1] (alignment scores are) or null, got {self.min_alignment_score}")
        _check_crop_angles("data", pitch_key="pitch_deg", pitch_deg=self.pitch_deg, fov_key="fov_deg", fov_deg=self.fov_deg)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluation against baselines (``s2r_train.evaluate``): at the end of every training run on
    a dataset store and by ``s2r-train eval``. Crops and FID sets are fixed by ``crop_seed``."""

    at_end: bool = True  # evaluate when a training run ends (store datasets; synthetic runs skip it)
    crops_per_panorama: int = 8  # perspective crops per held-out panorama (views from crop_seed)
    crop_seed: int = 2024
    # angles of the scored crops: fixed here, not taken from data.*, so that recipes that train on
    # other views (e.g. the demo's steeper pitches) are scored on the same crops as every other
    crop_pitch_deg: tuple[float, float] = (-10.0, 30.0)
    crop_fov_deg: tuple[float, float] = (60.0, 100.0)  # horizontal
    fid_crops: int = 64  # crops in the FID/KID sets (the first ones of the fixed crops; 0 = no FID/KID)
    panoramas: bool = True  # also score whole panoramas (tiled and direct translation)
    pano_width: int | None = None  # equirect width for whole-panorama scores; null = the crops' angular resolution
    grid_rows: int = 6  # rows of the crop and panorama image grids

    def __post_init__(self) -> None:
        _check(self.crops_per_panorama >= 1, "eval.crops_per_panorama", "must be >= 1")
        _check(self.fid_crops == 0 or self.fid_crops >= 2, "eval.fid_crops", "must be 0 (off) or >= 2")
        _check(self.pano_width is None or (self.pano_width >= 16 and self.pano_width % 2 == 0), "eval.pano_width",
               "must be an even number >= 16, or null")
        _check(self.grid_rows >= 0, "eval.grid_rows", "must be >= 0")
        _check_crop_angles("eval", pitch_key="crop_pitch_deg", pitch_deg=self.crop_pitch_deg, fov_key="crop_fov_deg",
                           fov_deg=self.crop_fov_deg)


@dataclass(frozen=True, kw_only=True)
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        g, t, d = self.network.generator, self.train, self.data
        f = g.downsample_factor
        _check(d.crop_size % f == 0, "data.crop_size",
               f"{d.crop_size} is not a multiple of {f}, which network.generator ({g.arch}, "
               f"{g.num_upsampling_layers if g.arch == 'spade' else f'{g.unet_levels} levels'}) needs; "
               "change the crop size or the number of up/down-sampling layers")
        _check(not (g.arch == "spade" and g.norm == "instance" and d.crop_size < 2 * f), "data.crop_size",
               f"SPADE with instance norm needs crops of at least {2 * f} px (a head map of 2x2 or more); "
               "use fewer upsampling layers or bigger crops")
        _check(not (g.use_vae and t.mode == "cycle"), "network.generator.use_vae", "not supported in train.mode: cycle")
        _check(not (g.norm == "batch" and t.batch_size < 2), "network.generator.norm",
               "batch norm needs train.batch_size >= 2; use instance norm at batch 1")
        _check(not (self.network.discriminator.norm == "batch" and t.batch_size < 2), "network.discriminator.norm",
               "batch norm needs train.batch_size >= 2; use instance or none")
        cond = self.network.conditioning
        _check(not (t.mode == "cycle" and cond.label_onehot), "network.conditioning.label_onehot",
               "the one-hot label map cannot be reconstructed in mode: cycle; turn it off")


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _parse_value(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        _fail(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        _check(value in args, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f"expected a list of {len(args)} values, got {value!r}")
        _check(len(value) == len(args), key, f"expected {len(args)} values, got {len(value)}")
        return tuple(_parse_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(value, tp, key)
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # programming error


def _parse_dataclass(data: Any, cls: type, prefix: str) -> Any:
    where = prefix or "config"
    if data is None:
        data = {}
    _check(isinstance(data, Mapping), where, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        k = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        _fail(k, f"unknown key; valid keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _parse_value(value, hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a plain dict (e.g. parsed YAML) into a ``Config``; raises ``ConfigError``."""
    return _parse_dataclass(data, Config, "")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain, YAML/JSON-able dict with every field resolved (defaults filled in)."""
    return _to_plain(config)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            _fail(dotted, "cannot set a key below a non-mapping value")
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings (value parsed as YAML) to a config dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: an override must look like train.lr_g=2e-4")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    return data


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (``thesis``, ``s2r``, ``tiny``) or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        return p
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"{name_or_path}: unknown preset; known presets: {known}, or pass a .yaml path")
    return candidate


def load_config(path_or_preset: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or preset name), apply ``key=value`` overrides, validate."""
    path = resolve_preset(path_or_preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with network/train/data/eval blocks")
    apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
