"""`QMRIMaps`: per-voxel quantitative MRI parameters with their affine.

Units follow the hMRI toolbox: PD and MT in percent units (p.u.), R1, R2*, R2 in 1/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from seqinv.errors import InputError

# MPM data has no R2 map. Spin-echo R2 is R2* minus the reversible (dephasing) part R2'; in brain
# tissue at 3 T R2/R2* ≈ 12–14/18–25 (WM) and 10–12/14–18 (GM), about 0.65 (see docs/physics.md).
R2_FROM_R2S_RATIO = 0.65

MAP_NAMES = ("pd", "r1", "r2s", "mt", "r2")


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


@dataclass
class QMRIMaps:
    """PD (p.u.), R1 (1/s), R2* (1/s), MT (p.u.), optional R2 (1/s): tensors of one shape (..., D, H, W).

    `affine` maps voxel (i, j, k) to RAS+ mm; leading batch dimensions share it.
    """

    pd: torch.Tensor
    r1: torch.Tensor
    r2s: torch.Tensor
    mt: torch.Tensor
    r2: torch.Tensor | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        for name in MAP_NAMES:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _as_tensor(value))
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine has shape {self.affine.shape}; expected (4, 4)")

    @property
    def shape(self) -> torch.Size:
        return self.pd.shape

    def _maps(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in MAP_NAMES if getattr(self, n) is not None}

    def to(self, device=None, dtype=None) -> QMRIMaps:
        moved = {n: t.to(device=device, dtype=dtype) for n, t in self._maps().items()}
        return QMRIMaps(**moved, affine=self.affine.copy())

    def crop(self, slices) -> QMRIMaps:
        """Crop the last three (spatial) dims with three slices (step 1); the affine follows the crop."""
        slices = tuple(slices)
        if len(slices) != 3 or any(s.step not in (None, 1) for s in slices):
            raise InputError(f"crop needs three slices with step 1; got {slices!r}")
        spatial = self.shape[-3:]
        starts = [s.indices(n)[0] for s, n in zip(slices, spatial, strict=True)]
        cropped = {n: t[(..., *slices)] for n, t in self._maps().items()}
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.asarray(starts, dtype=np.float64) + self.affine[:3, 3]
        return QMRIMaps(**cropped, affine=affine)

    def r2_or_derived(self) -> torch.Tensor:
        """The R2 map, or R2* × `R2_FROM_R2S_RATIO` when there is none."""
        return self.r2 if self.r2 is not None else self.r2s * R2_FROM_R2S_RATIO

    def validate(self) -> QMRIMaps:
        """Raise `InputError` on mismatched shapes, NaN/Inf or negative values; return self."""
        for name, tensor in self._maps().items():
            if tensor.shape != self.shape:
                raise InputError(
                    f"map {name.upper()} has shape {tuple(tensor.shape)} but PD has {tuple(self.shape)}; "
                    "all maps must share one grid (resample them first)"
                )
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise InputError(
                    f"map {name.upper()} has {bad} NaN/Inf voxels; replace them with 0 (mask them)"
                )
            negative = int((tensor < 0).sum())
            if negative:
                raise InputError(
                    f"map {name.upper()} has {negative} negative voxels (min {float(tensor.min()):.4g}); "
                    "qMRI maps must be >= 0: clip them at 0"
                )
        return self
