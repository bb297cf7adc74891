"""Training priors over sequence parameters: the one documented table (docs/physics.md, "Training priors").

`draw_sequence` samples a kind (each equally likely), then its parameters, and redraws until the
sequence dataclass accepts them (TE < TR, TI < TR, MP-RAGE tp > 0 and td > 0, ...). The returned
dataclass's `.to_dict()` is the record to log; `sequence_from_dict` replays it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from seqinv.errors import ParameterError
from seqinv.physics.sequences import SEQUENCES, sequence_class


def _uniform01(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, device=generator.device, dtype=torch.float64))


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, generator: torch.Generator) -> float:
        return self.low + (self.high - self.low) * _uniform01(generator)


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def sample(self, generator: torch.Generator) -> float:
        log_low, log_high = math.log(self.low), math.log(self.high)
        return math.exp(log_low + (log_high - log_low) * _uniform01(generator))


@dataclass(frozen=True)
class IntUniform:
    low: int  # inclusive
    high: int  # inclusive

    def sample(self, generator: torch.Generator) -> int:
        return min(self.high, self.low + int((self.high - self.low + 1) * _uniform01(generator)))


@dataclass(frozen=True)
class TimesTE:
    """A parameter tied to TE (the echo spacing of a GRE train, esp ≈ 2·TE)."""

    factor: float


ms = 1e-3
# Each kind equally likely (a kind listed twice in `kinds` is drawn twice as often).
# Times in seconds, angles in degrees. Fixes of the reference / paper are in
# docs/physics.md (MPRAGE TR in seconds not N(23, 2.3); clinical FLAIR with TI < TR; MP2RAGE ranges).
PRIORS: dict[str, dict[str, Uniform | LogUniform | IntUniform | TimesTE]] = {
    "mprage": {
        "tr_s": Uniform(1.9, 2.5),
        "ti_s": Uniform(0.6, 1.2),
        "te_s": Uniform(2 * ms, 4 * ms),
        "flip_deg": Uniform(5.0, 12.0),
        "n_exc": IntUniform(100, 200),
        "esp_s": TimesTE(2.0),
        "inv_eff": Uniform(0.8, 1.0),
    },
    "gre": {
        "tr_s": LogUniform(5 * ms, 5.0),
        "te_s": LogUniform(2 * ms, 80 * ms),
        "flip_deg": Uniform(5.0, 50.0),
    },
    "spgr": {
        "tr_s": LogUniform(5 * ms, 800 * ms),
        "te_s": LogUniform(2 * ms, 80 * ms),
        "flip_deg": Uniform(5.0, 50.0),
    },
    # TE from 8 ms, not the paper's 20: proton-density FSE (the first echo of dual-echo FSE) uses TE 8-15 ms
    "fse": {"tr_s": LogUniform(2.0, 8.0), "te_s": LogUniform(8 * ms, 150 * ms)},
    "flair": {"tr_s": Uniform(6.0, 11.0), "te_s": Uniform(80 * ms, 140 * ms), "ti_s": Uniform(1.8, 2.8)},
    "mp2rage": {
        "tr_s": Uniform(4.5, 6.5),
        "ti1_s": Uniform(0.6, 1.1),
        "ti2_s": Uniform(2.0, 3.3),
        "te_s": Uniform(2 * ms, 4 * ms),
        "flip1_deg": Uniform(3.0, 6.0),
        "flip2_deg": Uniform(3.0, 7.0),
        "n_exc": IntUniform(120, 192),
        "esp_s": TimesTE(2.0),
        "inv_eff": Uniform(0.8, 1.0),
    },
}
DEFAULT_KINDS: tuple[str, ...] = tuple(PRIORS)
MAX_REDRAWS = 1000


def _draw_params(kind: str, generator: torch.Generator) -> dict[str, float]:
    table = PRIORS[kind]
    params = {k: d.sample(generator) for k, d in table.items() if not isinstance(d, TimesTE)}
    params.update({k: d.factor * params["te_s"] for k, d in table.items() if isinstance(d, TimesTE)})
    return params


def unknown_kinds(kinds) -> list[str]:
    """The names in `kinds` that are not sequence kinds of `PRIORS`."""
    return [k for k in kinds if k not in PRIORS]


def draw_sequence(generator: torch.Generator, kinds=None):
    """A random, physically valid sequence of one of `kinds` (default: every kind in `PRIORS`)."""
    kinds = tuple(DEFAULT_KINDS if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))
    unknown = unknown_kinds(kinds)
    if unknown or not kinds:
        raise ParameterError(
            f"unknown sequence kind(s) {unknown or kinds!r}; choose from: {', '.join(PRIORS)}"
        )
    kind = kinds[min(len(kinds) - 1, int(len(kinds) * _uniform01(generator)))]
    cls = sequence_class(kind)
    for _ in range(MAX_REDRAWS):
        try:
            return cls(**_draw_params(kind, generator))
        except ParameterError:
            continue  # physically invalid draw (e.g. TE ≥ TR): redraw
    raise ParameterError(f"PRIORS[{kind!r}] gave no valid sequence in {MAX_REDRAWS} draws; widen its ranges")


def random_receive_field(
    shape, generator: torch.Generator, strength: float = 0.3, *, control_points: int = 4, device=None
):
    """Smooth positive multiplicative receive (bias) field of `shape` (..., D, H, W), float32.

    exp(strength · f), f trilinearly upsampled from `control_points`³ N(0, 1) values per volume, so the
    gain varies by about ±strength (log scale) over the field of view. The control points come from
    `generator` (so the field is the same on any device); the upsampling runs on `device` (default: the
    generator's).
    """
    import torch.nn.functional as F

    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise ParameterError(f"receive field shape {shape} needs at least 3 (spatial) dimensions")
    batch = math.prod(shape[:-3])
    coarse = torch.randn(
        (batch, 1, *(control_points,) * 3), generator=generator, device=generator.device, dtype=torch.float32
    )
    if device is not None:
        coarse = coarse.to(device)
    smooth = F.interpolate(coarse, size=shape[-3:], mode="trilinear", align_corners=True)
    return smooth.mul_(strength).exp_().reshape(shape)


__all__ = ["DEFAULT_KINDS", "PRIORS", "SEQUENCES", "draw_sequence", "random_receive_field", "unknown_kinds"]
