"""What a job is asked to do, checked once: `SegmentOptions`, `DenoiseOptions`, `EmbedOptions`.

The CLI and the Python API build one frozen options object per job and pass it down (files -> one file ->
one volume); each value is checked here, when the object is made, and nowhere else. What depends on
the model (`--passes` and `--nonlocal` need the residual denoiser) is checked once per job, when the job
meets its model (`seqinv.inference.core`).

    from seqinv.inference.options import SegmentOptions
    options = SegmentOptions(task="ixi", grid="model", refine=False)
    options = SegmentOptions.build(task="ixi", grid="model", fast=True, threads=2)   # keywords, as the API
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from seqinv.errors import ParameterError
from seqinv.inference.sliding import InferenceSettings
from seqinv.tasks import SEGMENT_TASKS

#: Grids segment labels can be returned on: the input's own, or the model's 1 mm RAS grid.
GRIDS = ("input", "model")
#: `InferenceSettings` fields, which option keywords may name directly (`threads=2`).
SETTING_NAMES = tuple(f.name for f in fields(InferenceSettings))
#: Window overlap of `fast` runs.
FAST_OVERLAP = 0.25


def make_settings(settings: Any = None, fast: bool = False, **values) -> InferenceSettings:
    """`InferenceSettings` from an object or a dict, with keyword fields on top (None: not given).

    `fast`: windows overlap 0.25 (unless `overlap` is given with it) and no TTA.
    """
    base = settings.to_dict() if isinstance(settings, InferenceSettings) else dict(settings or {})
    base.update({k: v for k, v in values.items() if v is not None})
    if fast:
        if base.get("tta"):
            raise ParameterError("--fast and --tta contradict each other; pick one")
        base["overlap"] = FAST_OVERLAP if values.get("overlap") is None else values["overlap"]
    return InferenceSettings(**base)


class _Options:
    """`build`: options from keywords, over a base object (None values are not given)."""

    settings: InferenceSettings

    @classmethod
    def build(cls, options: Any = None, fast: bool = False, settings: Any = None, **values):
        base = options if options is not None else cls()
        own = {f.name for f in fields(cls)} - {"settings"}
        unknown = sorted(set(values) - own - set(SETTING_NAMES))
        if unknown:
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        given = {k: v for k, v in values.items() if k in own and v is not None}
        if fast:
            given = {**cls._fast(base), **given}
        tuned = {k: v for k, v in values.items() if k in SETTING_NAMES}
        chosen = make_settings(base.settings if settings is None else settings, fast, **tuned)
        return replace(base, settings=chosen, **given)

    @classmethod
    def _fast(cls, base) -> dict:
        """Option values `fast` implies (on top of the settings')."""
        return {}

    def _check_settings(self) -> None:
        object.__setattr__(self, "settings", make_settings(self.settings))  # a copy: frozen, ours


@dataclass(frozen=True)
class SegmentOptions(_Options):
    """A segmentation job. `task` (None: the one the model's config records) sets the masking rules of
    seqinv/tasks.py; `head_mask` and `refine` None follow the task; `grid` "input" or "model" (the
    model's 1 mm grid); `probs` keeps the class probabilities; `volume` picks one volume of 4D inputs."""

    task: str | None = "ixi"
    probs: bool = False
    head_mask: bool | None = None
    refine: bool | None = None
    grid: str = "input"
    volume: int | None = None
    settings: InferenceSettings = field(default_factory=InferenceSettings)

    def __post_init__(self) -> None:
        self._check_settings()
        if self.task is not None and self.task not in SEGMENT_TASKS:
            raise ParameterError(
                f"unknown task {self.task!r} for segment; expected one of {', '.join(SEGMENT_TASKS)}"
            )
        if self.grid not in GRIDS:
            raise ParameterError(f"--grid {self.grid!r} is not one of {', '.join(GRIDS)}")

    def recorded(self, brain_source: Any = None) -> dict:
        """What a sidecar records and `--skip-existing` matches: the options that change the labels."""
        return {
            "task": self.task,
            "input_volume": self.volume,
            "grid": self.grid,
            "head_mask": self.head_mask,
            "refine": self.refine,
            "brain_mask_model": getattr(brain_source, "sha256", None),
            "overlap": self.settings.overlap,
            "tta": self.settings.tta,
        }


@dataclass(frozen=True)
class DenoiseOptions(_Options):
    """A denoising job. `sigma`: the noise std in input units (None: estimated); `passes`: flipped copies
    the residual denoiser averages (1, 2, 4, 8; None: 2, 8 with `settings.tta`); `nonlocal_stage`: None as
    the model's config says, False the network alone, True the stage even where the config has none."""

    sigma: float | None = None
    passes: int | None = None
    nonlocal_stage: bool | None = None
    volume: int | None = None
    settings: InferenceSettings = field(default_factory=InferenceSettings)

    def __post_init__(self) -> None:
        from seqinv.inference.denoising import check_passes

        self._check_settings()
        if self.sigma is not None and not self.sigma > 0:
            raise ParameterError(
                f"--sigma {self.sigma} must be > 0 (noise std in the input's intensity units)"
            )
        if self.passes is not None:
            check_passes(self.passes)

    @classmethod
    def _fast(cls, base) -> dict:
        return {"passes": 1} if base.passes is None else {}

    def recorded(self) -> dict:
        return {
            "input_volume": self.volume,
            "sigma": self.sigma,
            "passes": self.passes,
            "nonlocal_stage": self.nonlocal_stage,
            "overlap": self.settings.overlap,
            "tta": self.settings.tta,
        }


@dataclass(frozen=True)
class EmbedOptions(_Options):
    """An embedding job: `volume` picks one volume of 4D inputs."""

    volume: int | None = None
    settings: InferenceSettings = field(default_factory=InferenceSettings)

    def __post_init__(self) -> None:
        self._check_settings()

    def recorded(self) -> dict:
        return {"input_volume": self.volume, "overlap": self.settings.overlap}
