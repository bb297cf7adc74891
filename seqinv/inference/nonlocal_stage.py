"""The residual denoiser's second stage: non-local averaging of the noisy scan, guided by the network's
estimate.

Each voxel becomes a weighted mean of the noisy voxels in its search cube (radius `search`), weighted by
how alike their 3×3×3 neighbourhoods are in the network's output: exp(−mean squared difference / (h σ)²).
The weights come from the denoised image, so they are nearly free of noise and pick out truly similar
voxels; averaging the *noisy* values then removes noise the network left, as BM3D's second (Wiener) stage
does with its first estimate. The result is blended with the network's output (`weight` of it the
averaged image). Rician noise (as the noise estimate found it, else any image without negative values)
averages the squared values and takes off the bias 2σ² (E[M²] = ν² + 2σ²); Gaussian noise averages the
values themselves.

Runs on the stored grid in slabs (a halo of `search` + 1 voxels), so memory stays a few slab-sized arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from seqinv.errors import ParameterError

#: Patch radius of the similarity (3×3×3 neighbourhoods).
PATCH_RADIUS = 1
#: Slices of axis 0 per slab (plus the halo): keeps the working arrays near cache size.
SLAB = 24
#: An axis with voxels over this many times the finest is a thick-slice axis (`axis_extents`).
THICK_RATIO = 1.5


@dataclass(frozen=True)
class NonlocalStage:
    """Parameters of the second stage, as a model's config records them (`nonlocal_stage`)."""

    search: int = 2  # search cube radius in voxels
    h: float = 0.8  # similarity width, in units of the noise std
    weight: float = 0.6  # share of the averaged image in the output (the rest: the network's)

    def __post_init__(self) -> None:
        if not (isinstance(self.search, int) and not isinstance(self.search, bool) and 1 <= self.search <= 4):
            raise ParameterError(f"nonlocal_stage search must be an integer 1-4, got {self.search!r}")
        if not (math.isfinite(self.h) and self.h > 0):
            raise ParameterError(f"nonlocal_stage h must be > 0, got {self.h!r}")
        if not 0.0 < self.weight <= 1.0:
            raise ParameterError(f"nonlocal_stage weight must be in (0, 1], got {self.weight!r}")

    @classmethod
    def from_config(cls, value: dict[str, Any] | None) -> NonlocalStage | None:
        if value is None:
            return None
        unknown = sorted(set(value) - {"search", "h", "weight"})
        if unknown:
            raise ParameterError(f"nonlocal_stage: unknown fields {unknown}; expected search, h, weight")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_offsets(radii: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """One offset of each ± pair in the search box (radius per axis; the centre left out): a pair's
    weight serves both voxels, so half the offsets cover the box."""
    spans = [range(-r, r + 1) for r in radii]
    return [(x, y, z) for x in spans[0] for y in spans[1] for z in spans[2] if (x, y, z) > (0, 0, 0)]


def axis_extents(search: int, spacing: tuple[float, ...] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(search radius, patch radius) per axis. An axis whose voxels are over `THICK_RATIO` times the finest
    (thick slices) is neither searched nor in the patches: its neighbours lie millimetres away, and on
    held-out 3 mm slices an in-plane search beat the 3D one by 0.4-1.0 dB."""
    if spacing is None:
        return (search,) * 3, (PATCH_RADIUS,) * 3
    finest = min(spacing)
    thin = [s <= THICK_RATIO * finest for s in spacing]
    return tuple(search if t else 0 for t in thin), tuple(PATCH_RADIUS if t else 0 for t in thin)


def _box_sum(x: Any, patch: tuple[int, ...]) -> Any:
    """Sums over the 3-voxel window of each axis with patch radius 1 (that axis shrinks by 2)."""
    if patch[0]:
        x = x[:-2] + x[1:-1] + x[2:]
    if patch[1]:
        x = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    if patch[2]:
        x = x[:, :, :-2] + x[:, :, 1:-1] + x[:, :, 2:]
    return x


def _shifted(a: Any, start: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    return a[start[0] : start[0] + shape[0], start[1] : start[1] + shape[1], start[2] : start[2] + shape[2]]


def _average_padded(
    values: Any, pilot: Any, radii: tuple[int, ...], patch: tuple[int, ...], scale: float
) -> Any:
    """Weighted means over the interior of arrays padded by radius + patch radius on each axis."""
    import torch

    pad = tuple(r + q for r, q in zip(radii, patch, strict=True))
    inner = tuple(n - 2 * p for n, p in zip(values.shape, pad, strict=True))
    grown = tuple(
        n + 2 * r for n, r in zip(inner, radii, strict=True)
    )  # voxels that can pair with one inside
    num = torch.zeros(grown)
    den = torch.zeros(grown)
    core = tuple(slice(r, r + n) for r, n in zip(radii, inner, strict=True))
    num[core] += _shifted(values, pad, inner)
    den[core] += 1.0
    for d in pair_offsets(radii):
        lo = tuple(max(0, -k) for k in d)  # the pair (j, j + d), j over `grown` shifted by lo
        size = tuple(n - abs(k) for n, k in zip(values.shape, d, strict=True))
        far = tuple(a + k for a, k in zip(lo, d, strict=True))
        diff = (_shifted(pilot, lo, size) - _shifted(pilot, far, size)).square_()
        w = _box_sum(diff, patch).mul_(scale).exp_()
        near_at = tuple(slice(a, a + n) for a, n in zip(lo, w.shape, strict=True))
        far_at = tuple(slice(a, a + n) for a, n in zip(far, w.shape, strict=True))
        num[near_at] += w * _shifted(values, tuple(a + q for a, q in zip(far, patch, strict=True)), w.shape)
        den[near_at] += w
        num[far_at] += w * _shifted(values, tuple(a + q for a, q in zip(lo, patch, strict=True)), w.shape)
        den[far_at] += w
    return num[core] / den[core]


def guided_average(
    values: np.ndarray,
    pilot: np.ndarray,
    sigma: float,
    search: int,
    h: float,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """`values` averaged over voxels whose neighbourhoods in `pilot` look alike (module doc); `spacing`
    (voxel sizes) leaves thick-slice axes out of the search and the patches (`axis_extents`)."""
    import torch

    radii, patch = axis_extents(search, spacing)
    pad = [r + q for r, q in zip(radii, patch, strict=True)]
    patch_voxels = float(np.prod([2 * q + 1 for q in patch]))
    scale = -1.0 / (patch_voxels * (h * sigma) ** 2)
    widths = [(p, p) for p in pad]
    v = np.pad(np.asarray(values, dtype=np.float32), widths, mode="edge")
    p = np.pad(np.asarray(pilot, dtype=np.float32), widths, mode="edge")
    out = np.empty(np.shape(values), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, out.shape[0], SLAB):
            stop = min(start + SLAB, out.shape[0])
            part = slice(start, stop + 2 * pad[0])
            block = _average_padded(torch.from_numpy(v[part]), torch.from_numpy(p[part]), radii, patch, scale)
            out[start:stop] = block.numpy()
    return out


#: Noise-estimate methods (`seqinv.inference.denoising.estimate_noise`) that say which noise the scan has.
RICIAN_METHODS = {"background-rayleigh": True, "background-gaussian": False}


def apply_stage(
    noisy: np.ndarray,
    estimate: np.ndarray,
    sigma: float,
    stage: NonlocalStage,
    rician: bool | None = None,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """The stage's output from the noisy scan and the network's `estimate` (same grid, input units).
    `rician`: the noise is Rician (None: when the scan has no negative values); `spacing`: voxel sizes
    (thick-slice axes are not searched; None: every axis is)."""
    if not (math.isfinite(sigma) and sigma > 1e-30):
        raise ParameterError(f"the noise std must be > 0 for the non-local stage, got {sigma}")
    noisy = np.asarray(noisy, dtype=np.float32)
    if rician is None:
        rician = float(noisy.min()) >= 0
    if rician:  # magnitude image: average M² and remove its bias
        second = guided_average(noisy**2, estimate, sigma, stage.search, stage.h, spacing)
        averaged = np.sqrt(np.maximum(second - 2.0 * sigma**2, 0.0))
    else:
        averaged = guided_average(noisy, estimate, sigma, stage.search, stage.h, spacing)
    w = stage.weight
    return (w * averaged + (1.0 - w) * np.asarray(estimate, dtype=np.float32)).astype(np.float32)
