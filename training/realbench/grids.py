"""Grids of the real-scan benchmark: NumPy (RAS affine) <-> SimpleITK (LPS), resampling between grids,
rigid/affine registration, and thick-slice degradation with a realistic slice profile.

Arrays are (X, Y, Z) in voxel order with a voxel -> RAS+ mm affine, as `seqinv.io.Volume`. SimpleITK works
in LPS and stores arrays as (Z, Y, X); the two helpers below are the only place that knows it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of `data` (X, Y, Z) on the grid of the RAS `affine`."""
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(data (X, Y, Z), RAS affine) of a SimpleITK image."""
    lps = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), RAS_TO_LPS @ lps


def resample(
    data: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, ...],
    target_affine: np.ndarray,
    transform: sitk.Transform | None = None,
    order: int = 1,
    fill: float = 0.0,
) -> np.ndarray:
    """`data` (on `affine`'s grid) sampled on the grid (`shape`, `target_affine`); `order` 0 nearest, 1
    linear. `transform` maps target-grid physical points to source-grid points (what registration returns
    with the target as the fixed image)."""
    reference = to_sitk(np.zeros(tuple(shape), dtype=np.uint8), target_affine)
    interp = sitk.sitkNearestNeighbor if order == 0 else sitk.sitkLinear
    source = to_sitk(np.asarray(data, dtype=np.float32), affine)
    out = sitk.Resample(source, reference, transform or sitk.Transform(), interp, float(fill))
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def resample_probs(probs: np.ndarray, affine: np.ndarray, shape, target_affine, transform=None) -> np.ndarray:
    """Labels (argmax) on the target grid from class probabilities (C, X, Y, Z) resampled linearly: a
    coarse grid's labels compared on a fine grid without nearest-neighbour blocks."""
    fills = [1.0] + [0.0] * (len(probs) - 1)
    moved = [
        resample(p, affine, shape, target_affine, transform, 1, f) for p, f in zip(probs, fills, strict=True)
    ]
    return np.argmax(np.stack(moved), axis=0).astype(np.uint8)


def register(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    kind: str = "rigid",
    fixed_mask: np.ndarray | None = None,
    seed: int = 0,
) -> sitk.Transform:
    """Rigid (6 dof) or affine (12 dof) registration by Mattes mutual information (multi-contrast safe),
    three resolution levels, started from the images' centres of mass. Returns the transform mapping fixed
    physical points to moving ones: `resample(moving, ..., fixed grid, transform)` aligns moving on fixed."""
    f = sitk.Cast(to_sitk(fixed, fixed_affine), sitk.sitkFloat32)
    m = sitk.Cast(to_sitk(moving, moving_affine), sitk.sitkFloat32)
    base = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    initial = sitk.CenteredTransformInitializer(f, m, base, sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(to_sitk(np.asarray(fixed_mask, dtype=np.uint8), fixed_affine))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    return reg.Execute(f, m)


def carry_mask(mask: np.ndarray, affine: np.ndarray, shape, target_affine, transform) -> np.ndarray:
    """A binary mask moved onto another grid (linear interpolation of the mask, then >= 0.5)."""
    return resample(mask.astype(np.float32), affine, shape, target_affine, transform, 1) >= 0.5


# ------------------------------------------------------------------------------------------------ degrade
def degraded_grid(shape, affine: np.ndarray, voxel_mm) -> tuple[tuple[int, ...], np.ndarray]:
    """The coarse grid with voxel edges `voxel_mm` covering the same field of view as (`shape`, `affine`):
    same axes, n' = round(n * s / s'), first coarse voxel centred where its slab of fine voxels is."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    factor = np.asarray(voxel_mm, dtype=np.float64) / spacing
    new_shape = tuple(max(1, int(round(n / f))) for n, f in zip(shape, factor, strict=True))
    new_affine = np.array(affine, dtype=np.float64)
    new_affine[:3, :3] = affine[:3, :3] * factor
    new_affine[:3, 3] = affine[:3, :3] @ ((factor - 1.0) / 2.0) + affine[:3, 3]
    return new_shape, new_affine


def slice_profile_blur(
    data: np.ndarray, affine: np.ndarray, voxel_mm, profile: str = "gaussian"
) -> np.ndarray:
    """Blur along each axis so the effective resolution becomes `voxel_mm` (what a scanner with that voxel
    size would see). Gaussian: FWHM = the target edge, less the source's own (FWHM ~ its voxel edge, added
    in quadrature). Boxcar: a uniform slab of the target width (an ideal rectangular slice profile)."""
    from scipy import ndimage

    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    target = np.asarray(voxel_mm, dtype=np.float64)
    out = np.asarray(data, dtype=np.float32)
    if profile == "gaussian":
        sigma_mm = np.sqrt(np.clip(target**2 - spacing**2, 0.0, None)) / FWHM_PER_SIGMA
        return ndimage.gaussian_filter(out, sigma=(sigma_mm / spacing).tolist(), mode="nearest")
    if profile == "boxcar":
        for axis, (t, s) in enumerate(zip(target, spacing, strict=True)):
            width = int(round(t / s))
            if width > 1:
                out = ndimage.uniform_filter1d(out, width, axis=axis, mode="nearest")
        return out
    raise ValueError(f"slice profile {profile!r}: expected gaussian or boxcar")


def degrade(
    data: np.ndarray, affine: np.ndarray, voxel_mm, profile: str = "gaussian"
) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) of the scan as acquired at `voxel_mm`: slice-profile blur, then linear sampling at
    the coarse voxel centres (not nearest neighbour: that would keep fine detail a thick slice averages)."""
    shape, new_affine = degraded_grid(data.shape, affine, voxel_mm)
    blurred = slice_profile_blur(data, affine, voxel_mm, profile)
    return resample(blurred, affine, shape, new_affine, order=1), new_affine
