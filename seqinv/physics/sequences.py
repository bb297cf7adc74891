"""MRI sequence parameters as frozen dataclasses (SI units: seconds, degrees).

Each class checks physical validity on construction and raises `ParameterError` with the value received,
the valid range and a hint. `to_dict()` is the log / replay record; `sequence_from_dict` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from seqinv.errors import ParameterError

# Sanity bounds for any sequence (catch milliseconds passed as seconds and similar slips).
MAX_TIME_S = 100.0
MAX_FLIP_DEG = 180.0


def _check_time(name: str, value: float, *, low: float = 0.0, high: float = MAX_TIME_S) -> None:
    if not (math.isfinite(value) and low < value <= high):
        hint = " (times are in seconds: did you pass milliseconds?)" if value > high else ""
        raise ParameterError(f"{name}={value!r} is outside the valid range ({low:g}, {high:g}] s{hint}")


def _check_flip(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 < value <= MAX_FLIP_DEG):
        raise ParameterError(f"{name}={value!r} is outside the valid range (0, {MAX_FLIP_DEG:g}] degrees")


def _check_less(small: str, small_v: float, big: str, big_v: float) -> None:
    if not small_v < big_v:
        raise ParameterError(f"{small}={small_v:g} s must be shorter than {big}={big_v:g} s; shorten {small}")


class _Sequence:
    """Shared helpers; subclasses are frozen dataclasses with a `name` class variable."""

    name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.name, **dataclasses.asdict(self)}

    def replace(self, **changes: Any) -> _Sequence:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FSE(_Sequence):
    """Fast/turbo spin echo: S = PD·(1 − e^(−R1·TR))·e^(−R2·TE)."""

    tr_s: float
    te_s: float
    name: ClassVar[str] = "fse"

    def __post_init__(self) -> None:
        _check_time("tr_s", self.tr_s)
        _check_time("te_s", self.te_s)
        _check_less("te_s", self.te_s, "tr_s", self.tr_s)


@dataclass(frozen=True)
class GRE(_Sequence):
    """Spoiled gradient echo (FLASH) with MT saturation; Ernst steady state."""

    tr_s: float
    te_s: float
    flip_deg: float
    name: ClassVar[str] = "gre"

    def __post_init__(self) -> None:
        _check_time("tr_s", self.tr_s)
        _check_time("te_s", self.te_s)
        _check_flip("flip_deg", self.flip_deg)
        _check_less("te_s", self.te_s, "tr_s", self.tr_s)


@dataclass(frozen=True)
class SPGR(GRE):
    """Same equation as GRE; a separate name because its training prior uses short TRs (T1-weighting)."""

    name: ClassVar[str] = "spgr"


@dataclass(frozen=True)
class FLAIR(_Sequence):
    """Fluid-attenuated inversion recovery (magnitude): S = PD·e^(−R2·TE)·|1 − 2e^(−R1·TI) + e^(−R1·TR)|."""

    tr_s: float
    te_s: float
    ti_s: float
    name: ClassVar[str] = "flair"

    def __post_init__(self) -> None:
        for key in ("tr_s", "te_s", "ti_s"):
            _check_time(key, getattr(self, key))
        _check_less("te_s", self.te_s, "tr_s", self.tr_s)
        _check_less("ti_s", self.ti_s, "tr_s", self.tr_s)


@dataclass(frozen=True)
class MPRAGE(_Sequence):
    """MP-RAGE, one inversion + one GRE train of `n_exc` pulses, `esp_s` apart, read at the train centre.

    TI is measured from the inversion to the centre of the train; TR is the inversion-to-inversion time.
    """

    tr_s: float
    ti_s: float
    te_s: float
    flip_deg: float
    n_exc: int
    esp_s: float
    inv_eff: float = 0.96
    name: ClassVar[str] = "mprage"

    def __post_init__(self) -> None:
        for key in ("tr_s", "ti_s", "te_s", "esp_s"):
            _check_time(key, getattr(self, key))
        _check_flip("flip_deg", self.flip_deg)
        _check_n_exc(self.n_exc)
        _check_inv_eff(self.inv_eff)
        _check_less("te_s", self.te_s, "esp_s", self.esp_s)
        half_train = self.n_exc * self.esp_s / 2
        _check_gap("ti_s − n_exc·esp_s/2 (inversion to train start)", self.ti_s - half_train)
        _check_gap("tr_s − ti_s − n_exc·esp_s/2 (train end to inversion)", self.tr_s - self.ti_s - half_train)


@dataclass(frozen=True)
class MP2RAGE(_Sequence):
    """MP2RAGE (Marques et al. 2010): two GRE trains after each inversion; the image is the UNI ratio."""

    tr_s: float
    ti1_s: float
    ti2_s: float
    te_s: float
    flip1_deg: float
    flip2_deg: float
    n_exc: int
    esp_s: float
    inv_eff: float = 0.96
    name: ClassVar[str] = "mp2rage"

    def __post_init__(self) -> None:
        for key in ("tr_s", "ti1_s", "ti2_s", "te_s", "esp_s"):
            _check_time(key, getattr(self, key))
        _check_flip("flip1_deg", self.flip1_deg)
        _check_flip("flip2_deg", self.flip2_deg)
        _check_n_exc(self.n_exc)
        _check_inv_eff(self.inv_eff)
        _check_less("te_s", self.te_s, "esp_s", self.esp_s)
        train = self.n_exc * self.esp_s
        _check_gap("ti1_s − n_exc·esp_s/2", self.ti1_s - train / 2)
        _check_gap("ti2_s − ti1_s − n_exc·esp_s", self.ti2_s - self.ti1_s - train)
        _check_gap("tr_s − ti2_s − n_exc·esp_s/2", self.tr_s - self.ti2_s - train / 2)


def _check_n_exc(n_exc: int) -> None:
    if isinstance(n_exc, bool) or int(n_exc) != n_exc or not 2 <= n_exc <= 1024:
        raise ParameterError(f"n_exc={n_exc!r} must be an integer in [2, 1024] (excitations per echo train)")


def _check_inv_eff(inv_eff: float) -> None:
    if not (math.isfinite(inv_eff) and 0.0 <= inv_eff <= 1.0):
        raise ParameterError(f"inv_eff={inv_eff!r} is outside the valid range [0, 1] (inversion efficiency)")


def _check_gap(what: str, gap_s: float) -> None:
    if not gap_s > 0:
        raise ParameterError(
            f"{what} = {gap_s:.4g} s must be > 0; lengthen TI/TR or shorten the echo train (n_exc·esp_s)"
        )


SEQUENCES: dict[str, type[_Sequence]] = {cls.name: cls for cls in (MPRAGE, GRE, SPGR, FSE, FLAIR, MP2RAGE)}

# Typical clinical 3 T values used when a parameter is not given (CLI `seqinv simulate`).
TYPICAL: dict[str, dict[str, float]] = {
    "mprage": dict(tr_s=2.3, ti_s=0.9, te_s=3e-3, flip_deg=9.0, n_exc=176, esp_s=7e-3, inv_eff=0.96),
    "gre": dict(tr_s=0.6, te_s=20e-3, flip_deg=20.0),
    "spgr": dict(tr_s=20e-3, te_s=4e-3, flip_deg=25.0),
    "fse": dict(tr_s=5.0, te_s=0.1),
    "flair": dict(tr_s=9.0, te_s=0.12, ti_s=2.5),
    "mp2rage": dict(
        tr_s=5.0,
        ti1_s=0.7,
        ti2_s=2.5,
        te_s=3e-3,
        flip1_deg=4.0,
        flip2_deg=5.0,
        n_exc=176,
        esp_s=7e-3,
        inv_eff=0.96,
    ),
}


def sequence_class(name: str) -> type[_Sequence]:
    """The dataclass for a sequence name, or a `ParameterError` listing the valid names."""
    key = str(name).lower()
    if key not in SEQUENCES:
        raise ParameterError(f"unknown sequence {name!r}; choose one of: {', '.join(SEQUENCES)}")
    return SEQUENCES[key]


def make_sequence(name: str, **params: Any) -> _Sequence:
    """A sequence with typical values for every parameter not given (None values are ignored)."""
    cls = sequence_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ParameterError(
            f"sequence {cls.name!r} has no parameter {unknown[0]!r}; valid: {', '.join(sorted(fields))}"
        )
    values = {**TYPICAL[cls.name], **{k: v for k, v in params.items() if v is not None}}
    if "n_exc" in values:
        values["n_exc"] = _as_int(values["n_exc"])
    return cls(**values)


def _as_int(value: Any) -> int:
    if float(value) != int(float(value)):
        raise ParameterError(f"n_exc={value!r} must be an integer")
    return int(float(value))


def sequence_from_dict(record: dict[str, Any]) -> _Sequence:
    """Rebuild a sequence from its `to_dict()` record (exact replay: no defaults are filled in)."""
    if "sequence" not in record:
        raise ParameterError(f"sequence record {record!r} has no 'sequence' key")
    params = {k: v for k, v in record.items() if k != "sequence"}
    cls = sequence_class(record["sequence"])
    try:
        return cls(**params)
    except TypeError as err:
        raise ParameterError(f"bad parameters for sequence {cls.name!r}: {err}") from None
