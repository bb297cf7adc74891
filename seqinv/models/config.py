"""Architecture and weight metadata stored as `config.json` next to `model.safetensors`."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seqinv import __version__
from seqinv.errors import ParameterError, WeightsError
from seqinv.tasks import OUTPUT_KINDS, TASKS

#: Bumped when the weight layout or config schema changes incompatibly.
FORMAT_VERSION = 1

ARCHS = ("encoder", "unet", "denoiser")
#: How the encoder pools its last map into h: the paper's global mean, or the global max.
POOLINGS = ("mean", "max")

#: name -> (encoder widths of the 5 stages, final U-Net decoder width)
PRESETS: dict[str, tuple[tuple[int, int, int, int, int], int]] = {
    "tiny": ((4, 8, 16, 32, 64), 4),  # tests
    # the bundled CPU default: 0.88 M encoder parameters, ~28 GFLOP per 96³ U-Net window (4x less than small)
    "mini": ((8, 16, 32, 64, 128), 8),
    # the bundled CPU default since 0.2: thin full- and half-resolution stages, 11.7 GFLOP per 96³ U-Net
    # window, 0.38 s per window on 2 AVX2 cores (mini: 28.7 GFLOP, 0.96 s), for the ≤ 20 s per head target
    "lite": ((4, 8, 32, 64, 128), 4),
    "small": ((16, 32, 64, 128, 256), 16),  # 3.5 M encoder parameters
    "paper": ((64, 128, 256, 512, 768), 32),  # the paper's network, 40.6 M encoder parameters
}

#: The 96³ sliding window of inference (and of models whose config does not say otherwise).
DEFAULT_WINDOW: tuple[int, int, int] = (96, 96, 96)

DEFAULT_NORMALIZATION = {"type": "percentile_zscore", "lower": 0.5, "upper": 99.5}

# Allowed ranges of config values: a config.json outside them (a typo, a tampered file) would otherwise
# end in a traceback deep in torch, or in an allocation of hundreds of GiB, instead of one line.
#: Channels of one layer (the paper's widest stage: 768).
WIDTH_RANGE = (1, 2048)
IN_CHANNELS_RANGE = (1, 16)
#: Output channels (segmentation classes).
OUT_CHANNELS_RANGE = (1, 512)
#: Hidden convolutions of a residual denoiser (the bundled one: 10).
DENOISER_DEPTH_RANGE = (2, 64)
#: Model grid spacing (mm): finer than 0.25 mm multiplies a head's grid by > 64 against 1 mm.
SPACING_RANGE_MM = (0.25, 10.0)
#: Sliding-window size per axis (voxels): the encoder halves 4 times; 512 covers a head at 0.5 mm.
PATCH_RANGE = (16, 512)
NORMALIZATIONS = ("percentile_zscore", "percentile_scale")
ZSCORE_MODES = (None, False, True, "foreground", "all")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and feed it the input it was trained on.

    `features` are the widths of the 5 encoder stages; `decoder_features` the width of the last U-Net
    decoder stage. `spacing_mm`, `patch_size` and `normalization` describe the expected input;
    `patch_size` is the sliding-window size inference uses (fine-tuning records at least 96³, whatever
    its training patches were; those are in `training["options"]`). `output_kind` says what the outputs
    are (features, segment, denoise; stored as config.json's `task` key, and readable as `config.task`, a
    deprecated alias); `task_name` which task of seqinv/tasks.py the model serves ("" in configs saved
    before it was recorded).
    """

    arch: str = "encoder"
    preset: str = "paper"
    features: tuple[int, ...] = PRESETS["paper"][0]
    decoder_features: int = PRESETS["paper"][1]
    dropout: float = 0.2
    pooling: str = "mean"
    in_channels: int = 1
    out_channels: int = 1
    output_kind: str = "features"  # config.json key "task" (OUTPUT_KIND_KEY)
    task_name: str = ""
    labels: list[str] = field(default_factory=list)
    spacing_mm: tuple[float, ...] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, ...] = DEFAULT_WINDOW
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    format_version: int = FORMAT_VERSION
    seqinv_version: str = __version__
    name: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # the residual denoiser's second stage (seqinv.inference.nonlocal_stage): search, h, weight; None: none
    nonlocal_stage: dict[str, Any] | None = None

    @property
    def task(self) -> str:
        """Deprecated alias of `output_kind` (the name of its config.json key)."""
        return self.output_kind

    @task.setter
    def task(self, value: str) -> None:
        self.output_kind = value

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in _items("features", self.features, _is_int, "integers"))
        self.spacing_mm = tuple(float(s) for s in _items("spacing_mm", self.spacing_mm, _is_real, "numbers"))
        self.patch_size = tuple(int(p) for p in _items("patch_size", self.patch_size, _is_int, "integers"))
        self.labels = _items("labels", self.labels, lambda v: isinstance(v, str), "strings")
        self.validate()

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides: Any) -> ModelConfig:
        """Config of a named preset (`tiny`, `lite`, `mini`, `small`, `paper`); keyword overrides replace
        fields."""
        if preset not in PRESETS:
            raise ParameterError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        features, decoder_features = PRESETS[preset]
        values = {"preset": preset, "features": features, "decoder_features": decoder_features}
        values.update(overrides)
        if "output_kind" in values:  # the new name beats a caller's default for the old one
            values.pop("task", None)
        return cls(**values)

    def validate(self) -> None:
        """Kinds, then sizes, then the input contract; each refusal names the field, value and range."""
        self._validate_kinds()
        self._validate_sizes()
        self._validate_input()

    def _validate_kinds(self) -> None:
        if self.arch not in ARCHS:
            raise ParameterError(f"arch {self.arch!r} is not one of {ARCHS}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ParameterError(f"task {self.output_kind!r} is not one of {OUTPUT_KINDS}")
        if self.task_name and self.task_name not in TASKS:
            raise ParameterError(f"task_name {self.task_name!r} is not one of {tuple(TASKS)}")
        if self.task_name and TASKS[self.task_name].output_kind != self.output_kind:
            raise ParameterError(
                f"task_name {self.task_name!r} needs task {TASKS[self.task_name].output_kind!r}, "
                f"not {self.output_kind!r}"
            )
        if self.nonlocal_stage is not None and self.arch != "denoiser":
            raise ParameterError("nonlocal_stage is a residual denoiser's (arch 'denoiser') second stage")
        if self.pooling not in POOLINGS:
            raise ParameterError(f"pooling {self.pooling!r} is not one of {POOLINGS}")
        for name in ("preset", "name", "seqinv_version"):
            if not isinstance(getattr(self, name), str):
                raise ParameterError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.training, dict):
            raise ParameterError(f"training must be a JSON object, got {self.training!r}")

    def _validate_sizes(self) -> None:
        if self.arch == "denoiser":
            self._validate_denoiser()
        elif len(self.features) != 5 or min(self.features) < 1:
            raise ParameterError(f"features must be 5 positive widths, got {self.features}")
        for width in self.features:
            _check_range("features", width, WIDTH_RANGE, f"widths {list(self.features)}")
        _check_range("decoder_features", self.decoder_features, WIDTH_RANGE, integer=True)
        _check_range("in_channels", self.in_channels, IN_CHANNELS_RANGE, integer=True)
        _check_range("out_channels", self.out_channels, OUT_CHANNELS_RANGE, integer=True)
        if not (_is_real(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ParameterError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.output_kind == "segment" and self.labels and len(self.labels) != self.out_channels:
            raise ParameterError(
                f"{len(self.labels)} labels {self.labels} for {self.out_channels} output channels; "
                "give one label name per output channel"
            )
        if len(set(self.labels)) != len(self.labels) or not all(self.labels):
            raise ParameterError(f"labels {self.labels} must be distinct, non-empty names (one per output)")

    def _validate_denoiser(self) -> None:
        # a ResidualDenoiser: `features` are the widths of its hidden convolutions (at least two)
        from seqinv.inference.nonlocal_stage import NonlocalStage

        if self.output_kind != "denoise":
            raise ParameterError(f"a denoiser model has task 'denoise', not {self.output_kind!r}")
        if self.nonlocal_stage is not None and not isinstance(self.nonlocal_stage, dict):
            raise ParameterError(f"nonlocal_stage must be a JSON object or null, got {self.nonlocal_stage!r}")
        for key, value in (self.nonlocal_stage or {}).items():  # NonlocalStage checks ranges of numbers
            if key in ("h", "weight") and not _is_real(value):
                raise ParameterError(f"nonlocal_stage {key} must be a number, got {value!r}")
        NonlocalStage.from_config(self.nonlocal_stage)
        if len(self.features) < 2 or min(self.features) < 1:
            raise ParameterError(f"a denoiser needs at least 2 positive hidden widths, got {self.features}")
        _check_range("number of features (hidden layers)", len(self.features), DENOISER_DEPTH_RANGE)

    def _validate_input(self) -> None:
        if len(self.spacing_mm) != 3:
            raise ParameterError(f"spacing_mm must be 3 voxel sizes (mm), got {list(self.spacing_mm)}")
        for size in self.spacing_mm:
            _check_range("spacing_mm", size, SPACING_RANGE_MM, f"{list(self.spacing_mm)} mm")
        if len(self.patch_size) != 3:
            raise ParameterError(f"patch_size must be 3 window sizes (voxels), got {list(self.patch_size)}")
        for size in self.patch_size:
            _check_range("patch_size", size, PATCH_RANGE, f"{list(self.patch_size)} voxels")
        _check_normalization(self.normalization)

    def to_dict(self) -> dict[str, Any]:
        """The config.json object: fields in order, `output_kind` under its key `task`."""
        out = {_json_key(k): v for k, v in dataclasses.asdict(self).items()}
        for key in ("features", "spacing_mm", "patch_size"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Strict: a newer format or unknown fields raise `WeightsError` naming them."""
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise WeightsError(f"{source}: missing or invalid format_version {version!r}; not a seqinv model")
        if version > FORMAT_VERSION:
            raise WeightsError(
                f"{source}: format_version {version} is newer than this seqinv ({__version__}) reads "
                f"(<= {FORMAT_VERSION}); upgrade with `pip install -U seqinv`"
            )
        known = {_json_key(f.name) for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"{source}: unknown config fields {unknown}; expected only {sorted(known)}")
        try:
            return cls(**data)
        except (ParameterError, TypeError, ValueError) as err:
            raise WeightsError(
                f"{source}: invalid config: {err}; re-export the model, or correct the file"
            ) from err


#: The config.json key of `ModelConfig.output_kind` (published configs are pinned by sha256: it stays).
OUTPUT_KIND_KEY = "task"


def _json_key(name: str) -> str:
    return OUTPUT_KIND_KEY if name == "output_kind" else name


def _accept_task_keyword(init: Callable) -> Callable:
    """`ModelConfig(task=...)`, the config.json key and the old name, sets `output_kind`. When both are
    given `task` wins: `dataclasses.replace(config, task=...)` passes the old `output_kind` along."""

    @functools.wraps(init)
    def wrapper(self, *args: Any, task: str | None = None, **kwargs: Any) -> None:
        if task is not None:
            kwargs["output_kind"] = task
        init(self, *args, **kwargs)

    return wrapper


ModelConfig.__init__ = _accept_task_keyword(ModelConfig.__init__)


# ---- value checks ---------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _items(name: str, values: Any, accept: Callable[[Any], bool], kind: str) -> list:
    """`values` as a list whose items all pass `accept`, or one error naming the field."""
    if not isinstance(values, (list, tuple)) or not all(accept(v) for v in values):
        raise ParameterError(f"{name} must be a list of {kind}, got {values!r}")
    return list(values)


def _check_range(
    name: str, value: Any, bounds: tuple[float, float], context: str = "", integer: bool = False
) -> None:
    low, high = bounds
    if not (_is_int(value) if integer else _is_real(value)):
        kind = "an integer" if integer else "a number"
        raise ParameterError(f"{name} must be {kind} from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        where = f" (in {context})" if context else ""
        raise ParameterError(f"{name} {value!r}{where} is outside the allowed range {low} to {high}")


def _check_normalization(norm: Any) -> None:
    if not isinstance(norm, dict):
        raise ParameterError(f"normalization must be a JSON object, got {norm!r}")
    kind = norm.get("type", "percentile_zscore")
    if kind not in NORMALIZATIONS:
        raise ParameterError(f"normalization type {kind!r} is not one of {NORMALIZATIONS}")
    if kind == "percentile_scale":
        _check_percentile("normalization percentile", norm.get("percentile", 99.0))
        return
    lower, upper = norm.get("lower", 0.5), norm.get("upper", 99.5)
    _check_percentile("normalization lower", lower)
    _check_percentile("normalization upper", upper)
    if not lower < upper:
        raise ParameterError(
            f"normalization lower {lower!r} must be below upper {upper!r} (percentiles, 0 to 100)"
        )
    if not isinstance(norm.get("clip", True), bool):
        raise ParameterError(f"normalization clip must be true or false, got {norm['clip']!r}")
    if norm.get("zscore", "foreground") not in ZSCORE_MODES:
        raise ParameterError(f"normalization zscore {norm['zscore']!r} is not one of {ZSCORE_MODES}")


def _check_percentile(name: str, value: Any) -> None:
    if not _is_real(value):
        raise ParameterError(f"{name} must be a number (a percentile, 0 to 100), got {value!r}")
    _check_range(name, value, (0.0, 100.0))
