"""Clinical acquisitions of a 1 mm image: lower in-plane resolution, thick slices with a slice profile and
gaps along one axis, partial coverage, and an intensity non-linearity (gamma).

`acquire` samples the 1 mm image as a scanner would (each acquired voxel integrates the image over its
profile: Gaussian in-plane, Gaussian or box across slices), then interpolates linearly back to the 1 mm grid
the model sees. Per axis that is one (n × n) matrix, so the whole operation is three small matrix products.
Draws (`draw_acquisition`) are records (`to_dict`) that replay exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from seqinv.errors import ParameterError

PROFILES = ("gaussian", "box")
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class Acquisition:
    """An acquired grid, relative to the 1 mm model grid.

    `resolution_mm`: acquired voxel size per axis (on `slice_axis`: the slice thickness, the FWHM of its
    profile). `gap_mm`: gap between slices (slice spacing = thickness + gap). `offset`: where the first
    slice lies, as a fraction of the spacing. `coverage`: ("top"|"bottom", kept fraction) of the head along
    the superior-inferior axis, or None. `gamma`: intensity non-linearity applied to the [0, 1] image.
    `window` < 1: the top of the range is clipped (scanner windowing or 8-bit exports saturate fat).
    """

    resolution_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    slice_axis: int = 2
    gap_mm: float = 0.0
    profile: str = "gaussian"
    offset: float = 0.0
    coverage: tuple[str, float] | None = None
    gamma: float = 1.0
    window: float = 1.0  # display window: image / window, clipped at 1 (saturates fat as windowed exports do)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ParameterError(f"slice profile {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.slice_axis not in (0, 1, 2):
            raise ParameterError(f"slice axis {self.slice_axis} is not 0, 1 or 2")
        if any(r <= 0 for r in self.resolution_mm) or self.gap_mm < 0:
            raise ParameterError(
                f"resolution {self.resolution_mm} mm / gap {self.gap_mm} mm must be > 0 / >= 0"
            )
        if self.gamma <= 0 or not 0 < self.window <= 1:
            raise ParameterError(f"gamma {self.gamma} / window {self.window} must be > 0 / in (0, 1]")

    @property
    def thickness_mm(self) -> float:
        return self.resolution_mm[self.slice_axis]

    def spacing_mm(self, axis: int) -> float:
        return self.resolution_mm[axis] + (self.gap_mm if axis == self.slice_axis else 0.0)

    def is_identity(self) -> bool:
        return all(r <= 1.0 for r in self.resolution_mm) and self.gap_mm == 0 and self.coverage is None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["resolution_mm"] = [round(r, 3) for r in self.resolution_mm]
        record["coverage"] = None if self.coverage is None else [self.coverage[0], round(self.coverage[1], 3)]
        return record


def thick_slices(thickness_mm: float, axis: int = 2, gap_mm: float = 0.0, inplane_mm: float = 1.0, **kw):
    """A 2D multi-slice acquisition: `thickness_mm` slices along `axis`, `inplane_mm` in-plane."""
    if axis not in (0, 1, 2):
        raise ParameterError(f"slice axis {axis} is not 0, 1 or 2")
    resolution = [inplane_mm] * 3
    resolution[axis] = thickness_mm
    return Acquisition(tuple(resolution), axis, gap_mm, **kw)


def _uniform(gen, low, high) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


@dataclass(frozen=True)
class AcquisitionPrior:
    """How `draw_acquisition` draws: a clinical (2D multi-slice) grid with probability `clinical_prob`."""

    clinical_prob: float = 0.5
    inplane_mm: tuple[float, float] = (0.6, 1.5)
    thickness_mm: tuple[float, float] = (1.0, 7.0)
    gap_prob: float = 0.5
    gap_fraction: tuple[float, float] = (0.0, 0.3)  # gap as a fraction of the thickness
    box_prob: float = 0.5  # box rather than Gaussian slice profile
    coverage_prob: float = 0.2
    coverage_kept: tuple[float, float] = (0.55, 0.9)
    gamma_log_sd: float = 0.3
    gamma_prob: float = 0.8
    window_prob: float = 0.3
    window: tuple[float, float] = (0.5, 1.0)


def draw_acquisition(gen: torch.Generator, prior: AcquisitionPrior | None = None) -> Acquisition:
    """A random acquisition: 1 mm 3D, or clinical with thick slices along a random axis; gamma always."""
    prior = prior or AcquisitionPrior()
    gamma = 1.0
    if _uniform(gen, 0, 1) < prior.gamma_prob:
        gamma = float(
            math.exp(max(-0.7, min(0.7, prior.gamma_log_sd * float(torch.randn((), generator=gen)))))
        )
    window = _uniform(gen, *prior.window) if _uniform(gen, 0, 1) < prior.window_prob else 1.0
    coverage = None
    if _uniform(gen, 0, 1) < prior.coverage_prob:
        coverage = ("top" if _uniform(gen, 0, 1) < 0.5 else "bottom", _uniform(gen, *prior.coverage_kept))
    if _uniform(gen, 0, 1) >= prior.clinical_prob:
        return Acquisition(coverage=coverage, gamma=gamma, window=window)
    axis = min(2, int(3 * _uniform(gen, 0, 1)))
    thickness = _uniform(gen, *prior.thickness_mm)
    gap = thickness * _uniform(gen, *prior.gap_fraction) if _uniform(gen, 0, 1) < prior.gap_prob else 0.0
    inplane = _uniform(gen, *prior.inplane_mm)
    profile = "box" if _uniform(gen, 0, 1) < prior.box_prob else "gaussian"
    return thick_slices(
        thickness,
        axis,
        gap,
        inplane,
        profile=profile,
        offset=_uniform(gen, 0, 1),
        coverage=coverage,
        gamma=gamma,
        window=window,
    )


def _profile_weights(positions: torch.Tensor, n: int, width_mm: float, profile: str) -> torch.Tensor:
    """(len(positions), n): weight of 1 mm voxel i in the sample at each position (profile integrated over
    the voxel [i − ½, i + ½], rows normalised)."""
    edges = torch.arange(n + 1, dtype=torch.float64) - 0.5
    rel = edges[None, :] - positions[:, None]
    if profile == "box":
        cdf = ((rel + width_mm / 2) / width_mm).clamp(0.0, 1.0)
    else:
        sigma = max(width_mm * FWHM_TO_SIGMA, 1e-3)
        cdf = 0.5 * (1.0 + torch.erf(rel / (sigma * math.sqrt(2.0))))
    weights = cdf[:, 1:] - cdf[:, :-1]
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)


def _interpolation(positions: torch.Tensor, n: int) -> torch.Tensor:
    """(n, len(positions)): linear interpolation from samples at `positions` to voxels 0..n-1 (clamped)."""
    x = torch.arange(n, dtype=torch.float64)
    spacing = float(positions[1] - positions[0]) if len(positions) > 1 else 1.0
    k = ((x - positions[0]) / spacing).clamp(0, len(positions) - 1)
    low = k.floor().long().clamp(max=max(len(positions) - 2, 0))
    frac = (k - low).clamp(0, 1)
    matrix = torch.zeros(n, len(positions), dtype=torch.float64)
    matrix[torch.arange(n), low] = 1.0 - frac
    if len(positions) > 1:
        matrix[torch.arange(n), low + 1] += frac
    return matrix


def axis_matrix(n: int, width_mm: float, spacing_mm: float, profile: str = "gaussian", offset: float = 0.0):
    """(n, n) float32: 1 mm → samples every `spacing_mm` with a profile of `width_mm` → back to 1 mm."""
    first = (offset % 1.0) * spacing_mm - spacing_mm  # one sample beyond each end: no extrapolation
    count = int(math.ceil((n - 1 - first) / spacing_mm)) + 2
    positions = first + spacing_mm * torch.arange(count, dtype=torch.float64)
    matrix = _interpolation(positions, n) @ _profile_weights(positions, n, width_mm, profile)
    return matrix.float()


def acquire(image: torch.Tensor, acq: Acquisition) -> torch.Tensor:
    """`image` (..., X, Y, Z) on the 1 mm grid as acquired by `acq`, back on the 1 mm grid (same shape).

    In-plane axes at <= 1 mm and 3D 1 mm acquisitions are left as they are (the model grid is 1 mm).
    Coverage and gamma are not applied here (`cut_coverage`, `apply_gamma`).
    """
    out = image
    for axis in range(3):
        width, spacing = acq.resolution_mm[axis], acq.spacing_mm(axis)
        if width <= 1.0 and spacing <= 1.0:
            continue
        profile = acq.profile if axis == acq.slice_axis else "gaussian"
        offset = acq.offset if axis == acq.slice_axis else 0.0
        dim = out.dim() - 3 + axis
        n = out.shape[dim]
        matrix = axis_matrix(n, width, spacing, profile, offset).to(out.device, out.dtype)
        out = torch.movedim(torch.movedim(out, dim, -1) @ matrix.t(), -1, dim)
    return out.contiguous()


def apply_gamma(image01: torch.Tensor, gamma: float, window: float = 1.0) -> torch.Tensor:
    """Intensity non-linearity of an image in [0, 1]: clip at `window`, rescale, then the power `gamma`."""
    if window < 1.0:
        image01 = (image01 / window).clamp(max=1.0)
    return image01 if gamma == 1.0 else image01.clamp(min=0.0).pow(gamma)


def coverage_mask(z_mm: torch.Tensor, head_low_mm: float, head_high_mm: float, coverage) -> torch.Tensor:
    """True where the superior-inferior coordinate `z_mm` is inside the acquired slab.

    `coverage` = ("top", f): the top of the head is cut off and the lower fraction f of [low, high] is kept;
    ("bottom", f): the bottom (neck) is cut off.
    """
    if coverage is None:
        return torch.ones_like(z_mm, dtype=torch.bool)
    side, kept = coverage
    if side == "top":
        return z_mm <= head_low_mm + kept * (head_high_mm - head_low_mm)
    return z_mm >= head_high_mm - kept * (head_high_mm - head_low_mm)
