"""Denoising on real scans: noise protocols, the denoisers (seqinv, dipy non-local means, BM4D), scores.

Protocols (the scan itself is the "clean" image: real scans carry their own noise, so a denoiser that also
removes some of it loses a little PSNR against it):
- `gaussian-0.2`: the paper's; the scan z-scored as seqinv preprocesses it (`normalize_intensity`:
  0.5-99.5 percentile rescale, z-score over the head), plus N(0, 0.2^2); PSNR with L = 1;
- `rician-3%`, `rician-8%`: the scan divided by its 99th percentile inside the head (so L = 1), Rician
  noise of std 0.03 / 0.08: sqrt((x + n1)^2 + n2^2).
Scores: PSNR over the region (L = 1), PSNR over the head only, 3D SSIM over the region (L = the clean
region's range for z-scored images, 1 for the Rician ones).

The region is a slab (`denoise_region`): BM4D needs ~80 us per voxel on one core, so whole heads for six
scans and three protocols would take hours. Every method gets the same slab as input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seqinv.metrics import psnr_db, ssim_3d

PROTOCOLS = {"gaussian-0.2": ("gaussian", 0.2), "rician-3%": ("rician", 0.03), "rician-8%": ("rician", 0.08)}
METHODS = ("seqinv", "nlmeans", "bm4d")
SLAB_MM = 12.0
MARGIN_MM = 10.0


@dataclass
class DenoiseCase:
    """One scan under one protocol: the clean and noisy region, its affine, head mask, noise std."""

    scan: str
    protocol: str
    noise: str
    sigma: float
    clean: np.ndarray
    noisy: np.ndarray
    affine: np.ndarray
    head: np.ndarray
    data_range: float


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the superior direction."""
    directions = np.asarray(affine)[:3, :3] / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def denoise_region(
    affine: np.ndarray, brain: np.ndarray, slab_mm: float = SLAB_MM, margin_mm: float = MARGIN_MM
):
    """The slab of `slab_mm` axial thickness centred on the brain's centroid, cut in-plane to the brain's
    bounding box + `margin_mm` (skull and scalp edges stay in, most of the air goes): a tuple of slices."""
    axis = axial_axis(affine)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    n = max(1, int(round(slab_mm / spacing[axis])))
    occupied = np.argwhere(brain)
    centre = float(occupied[:, axis].mean())
    start = int(np.clip(round(centre - (n - 1) / 2), 0, brain.shape[axis] - n))
    box = []
    for a in range(3):
        if a == axis:
            box.append(slice(start, start + n))
        else:
            margin = int(round(margin_mm / spacing[a]))
            lo, hi = occupied[:, a].min() - margin, occupied[:, a].max() + 1 + margin
            box.append(slice(int(max(lo, 0)), int(min(hi, brain.shape[a]))))
    return tuple(box)


def region_affine(affine: np.ndarray, box) -> np.ndarray:
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] += out[:3, :3] @ np.array([s.start for s in box], dtype=np.float64)
    return out


def clean_image(data: np.ndarray, head: np.ndarray, noise: str) -> tuple[np.ndarray, float]:
    """The whole scan in the protocol's units (z-scored, or / its 99th percentile in the head)."""
    if noise == "gaussian":
        from seqinv.models.config import DEFAULT_NORMALIZATION
        from seqinv.preprocess import normalize_intensity

        return normalize_intensity(np.asarray(data, dtype=np.float32), DEFAULT_NORMALIZATION)[0], math.nan
    scale = float(np.percentile(data[head], 99))
    return (np.asarray(data, dtype=np.float32) / scale).astype(np.float32), 1.0


def add_noise(clean: np.ndarray, noise: str, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if noise == "gaussian":
        return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    real = clean + sigma * rng.standard_normal(clean.shape)
    return np.sqrt(real**2 + (sigma * rng.standard_normal(clean.shape)) ** 2).astype(np.float32)


def scores(case: DenoiseCase, estimate: np.ndarray) -> dict[str, float]:
    data_range = case.data_range if math.isfinite(case.data_range) else float(np.ptp(case.clean))
    return {
        "psnr_db": psnr_db(case.clean, estimate, 1.0),
        "psnr_head_db": psnr_db(case.clean, estimate, 1.0, case.head),
        "ssim": ssim_3d(case.clean, estimate, data_range),
    }


# ------------------------------------------------------------------------------------------------ methods
def seqinv_denoiser(model, threads: int, passes: int | None = None) -> Callable[[DenoiseCase], np.ndarray]:
    from seqinv.inference import InferenceSettings, denoise_volume
    from seqinv.io import Volume

    settings = InferenceSettings(device="cpu", threads=threads)

    def run(case: DenoiseCase) -> np.ndarray:
        volume = Volume(data=np.ascontiguousarray(case.noisy), affine=case.affine)
        return denoise_volume(volume, model, settings, sigma=case.sigma, passes=passes).image

    return run


def nlmeans_denoiser(threads: int) -> Callable[[DenoiseCase], np.ndarray]:
    from dipy.denoise.nlmeans import nlmeans

    def run(case: DenoiseCase) -> np.ndarray:
        rician = case.noise == "rician"
        # dipy clips negatives: z-scored (Gaussian) inputs are shifted to >= 1 first, Rician ones keep 0
        offset = 0.0 if rician else 1.0 - min(float(case.noisy.min()), 0.0)
        out = nlmeans(
            (case.noisy + offset).astype(np.float32), case.sigma, rician=rician, num_threads=threads
        )
        return np.asarray(out, dtype=np.float32) - offset

    return run


def bm4d_denoiser() -> Callable[[DenoiseCase], np.ndarray]:
    import bm4d

    def run(case: DenoiseCase) -> np.ndarray:
        return np.asarray(bm4d.bm4d(case.noisy.astype(np.float64), case.sigma), dtype=np.float32)

    return run


def timed(fn: Callable, case: DenoiseCase) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn(case)
    return out, time.perf_counter() - start
