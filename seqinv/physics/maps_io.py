"""Read a folder of qMRI maps (PD, R1, R2*, MT, optional R2) as `QMRIMaps`.

Accepted names (case-insensitive, `.nii` or `.nii.gz`): plain `PD`, `R1`, `R2s`, `MT`, `R2`, or the hMRI
toolbox's `<subject>_PD`, `<subject>_R1`, `<subject>_R2s_OLS`, `<subject>_MTsat`. Units: PD and MT in p.u.,
R1 and R2* in 1/s; an R1 map in 1/ms is detected from its value range and converted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from seqinv.errors import InputError
from seqinv.physics.maps import QMRIMaps

# map key → stem patterns (full match, case-insensitive)
NAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "pd": (r"pd", r".*_pd"),
    "r1": (r"r1", r".*_r1"),
    "r2s": (r"r2s", r"r2star", r".*_r2s_ols", r".*_r2s", r".*_r2star"),
    "mt": (r"mt", r"mtsat", r".*_mtsat", r".*_mt"),
    "r2": (r"r2", r".*_r2"),
}
REQUIRED = ("pd", "r1", "r2s", "mt")
# Plausible medians of the non-zero voxels (head/brain), after unit conversion.
PLAUSIBLE_MEDIAN: dict[str, tuple[float, float, str]] = {
    "pd": (5.0, 200.0, "p.u. (WM ≈ 69)"),
    "r1": (0.1, 5.0, "1/s (WM ≈ 1)"),
    "r2s": (0.5, 200.0, "1/s (WM ≈ 20)"),
    "mt": (0.01, 10.0, "p.u. (WM ≈ 1.5)"),
    "r2": (0.3, 150.0, "1/s (WM ≈ 13)"),
}
R1_PER_MS_MAX_MEDIAN = 0.01  # an R1 median below this is 1/ms (brain 0.0002–0.0015 /ms)


def _stem(path: Path) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", path.name, flags=re.IGNORECASE)


def find_map_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Map key → file for the qMRI maps in `folder` (InputError if required ones are missing or ambiguous)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass a folder holding PD, R1, R2s and MT NIfTI maps")
    niftis = sorted(p for p in folder.iterdir() if re.search(r"\.nii(\.gz)?$", p.name, re.IGNORECASE))
    found: dict[str, Path] = {}
    for key, patterns in NAME_PATTERNS.items():
        hits = [p for p in niftis if any(re.fullmatch(pat, _stem(p), re.IGNORECASE) for pat in patterns)]
        if len(hits) > 1:
            names = ", ".join(p.name for p in hits)
            raise InputError(f"{folder}: several files look like the {key.upper()} map ({names}); keep one")
        if hits:
            found[key] = hits[0]
    missing = [k for k in REQUIRED if k not in found]
    if missing:
        have = ", ".join(p.name for p in niftis) or "no NIfTI files"
        raise InputError(
            f"{folder}: missing the {'/'.join(k.upper() for k in missing)} map(s) (found: {have}); expected "
            "PD, R1, R2s, MT (.nii/.nii.gz) or hMRI names *_PD, *_R1, *_R2s_OLS, *_MTsat"
        )
    return found


def _read(path: Path):
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for broken files
        raise InputError(f"{path}: cannot read it as NIfTI ({err}); check the file") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: has shape {data.shape}; a qMRI map must be one 3D volume")
    return data, image.affine.astype(np.float64)


def _clean_or_check(key: str, path: Path, data: np.ndarray, clean: bool) -> np.ndarray:
    bad = ~np.isfinite(data)
    if bad.any():
        if not clean:
            raise InputError(
                f"{path}: {key.upper()} map has {int(bad.sum())} NaN/Inf voxels; "
                "set them to 0 (or use --clean)"
            )
        data = np.where(bad, 0.0, data).astype(np.float32)
    negative = data < 0
    if negative.any():
        if not clean:
            raise InputError(
                f"{path}: {key.upper()} map has {int(negative.sum())} negative voxels "
                f"(min {data.min():.4g}); qMRI maps must be >= 0: clip them at 0 (or use --clean)"
            )
        data = np.maximum(data, 0.0)
    return data


def _median_positive(data: np.ndarray) -> float:
    positive = data[data > 0]
    return float(np.median(positive)) if positive.size else 0.0


def _check_units(key: str, path: Path, data: np.ndarray) -> np.ndarray:
    median = _median_positive(data)
    if key == "r1" and 0 < median < R1_PER_MS_MAX_MEDIAN:
        data, median = data * 1000.0, median * 1000.0  # 1/ms → 1/s
    low, high, unit = PLAUSIBLE_MEDIAN[key]
    if not low <= median <= high:
        raise InputError(
            f"{path}: {key.upper()} map median {median:.4g} (non-zero voxels) is outside the plausible range "
            f"[{low:g}, {high:g}] {unit}; check its units and scaling"
        )
    return data


def load_maps(folder: str | os.PathLike, *, clean: bool = False) -> QMRIMaps:
    """Read and check the qMRI maps in `folder`; all maps must share one grid (shape and affine).

    `clean=True` sets NaN/Inf voxels to 0 and clips negative values at 0 instead of failing.
    """
    files = find_map_files(folder)
    arrays, reference = {}, None
    for key, path in files.items():
        data, affine = _read(path)
        if reference is None:
            reference = (key, path, data.shape, affine)
        elif data.shape != reference[2]:
            raise InputError(
                f"{path}: shape {data.shape} differs from {reference[1].name} {reference[2]}; "
                "resample all maps to one grid"
            )
        elif not np.allclose(affine, reference[3], atol=1e-3):
            raise InputError(
                f"{path}: affine differs from {reference[1].name} (max difference "
                f"{np.abs(affine - reference[3]).max():.3g} mm); the maps must share one grid"
            )
        data = _clean_or_check(key, path, data, clean)
        arrays[key] = torch.from_numpy(_check_units(key, path, data))
    return QMRIMaps(**arrays, affine=reference[3]).validate()
