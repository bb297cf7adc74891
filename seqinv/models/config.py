"""Architecture and weight metadata stored as `config.json` next to `model.safetensors`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from seqinv import __version__
from seqinv.errors import ParameterError, WeightsError
from seqinv.tasks import CONFIG_TASKS, TASKS

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


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and feed it the input it was trained on.

    `features` are the widths of the 5 encoder stages; `decoder_features` the width of the last U-Net
    decoder stage. `spacing_mm`, `patch_size` and `normalization` describe the expected input;
    `patch_size` is the sliding-window size inference uses (fine-tuning records at least 96³, whatever
    its training patches were; those are in `training["options"]`). `task` says what the outputs are
    (features, segment, denoise); `task_name` which task of seqinv/tasks.py the model serves ("" in
    configs saved before it was recorded).
    """

    arch: str = "encoder"
    preset: str = "paper"
    features: tuple[int, ...] = PRESETS["paper"][0]
    decoder_features: int = PRESETS["paper"][1]
    dropout: float = 0.2
    pooling: str = "mean"
    in_channels: int = 1
    out_channels: int = 1
    task: str = "features"
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

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.labels = list(self.labels)
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
        return cls(**values)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ParameterError(f"arch {self.arch!r} is not one of {ARCHS}")
        if self.task not in CONFIG_TASKS:
            raise ParameterError(f"task {self.task!r} is not one of {CONFIG_TASKS}")
        if self.task_name and self.task_name not in TASKS:
            raise ParameterError(f"task_name {self.task_name!r} is not one of {tuple(TASKS)}")
        if self.task_name and TASKS[self.task_name].config_task != self.task:
            raise ParameterError(
                f"task_name {self.task_name!r} needs task {TASKS[self.task_name].config_task!r}, "
                f"not {self.task!r}"
            )
        if self.arch == "denoiser":
            self._validate_denoiser()
        elif len(self.features) != 5 or min(self.features) < 1:
            raise ParameterError(f"features must be 5 positive widths, got {self.features}")
        if self.decoder_features < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ParameterError(
                "decoder_features, in_channels and out_channels must be >= 1, got "
                f"{self.decoder_features}, {self.in_channels}, {self.out_channels}"
            )
        if self.nonlocal_stage is not None and self.arch != "denoiser":
            raise ParameterError("nonlocal_stage is a residual denoiser's (arch 'denoiser') second stage")
        if self.pooling not in POOLINGS:
            raise ParameterError(f"pooling {self.pooling!r} is not one of {POOLINGS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.task == "segment" and self.labels and len(self.labels) != self.out_channels:
            raise ParameterError(
                f"{len(self.labels)} labels {self.labels} for {self.out_channels} output channels; "
                "give one label name per output channel"
            )

    def _validate_denoiser(self) -> None:
        # a ResidualDenoiser: `features` are the widths of its hidden convolutions (at least two)
        from seqinv.inference.nonlocal_stage import NonlocalStage

        if self.task != "denoise":
            raise ParameterError(f"a denoiser model has task 'denoise', not {self.task!r}")
        NonlocalStage.from_config(self.nonlocal_stage)
        if len(self.features) < 2 or min(self.features) < 1:
            raise ParameterError(f"a denoiser needs at least 2 positive hidden widths, got {self.features}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"{source}: unknown config fields {unknown}; expected only {sorted(known)}")
        try:
            return cls(**data)
        except (ParameterError, TypeError, ValueError) as err:
            raise WeightsError(f"{source}: invalid config: {err}") from err
