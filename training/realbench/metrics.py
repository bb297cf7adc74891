"""Metrics of the real-scan benchmark (NumPy/SciPy/torch only, so CI can test them without the bench extra).

Labels: 0 background, 1 CSF, 2 GM, 3 WM (the `ixi` task's).
"""

from __future__ import annotations

import math

import numpy as np

CLASSES = {1: "CSF", 2: "GM", 3: "WM"}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def dice_per_class(pred: np.ndarray, ref: np.ndarray, within: np.ndarray | None = None) -> dict[str, float]:
    """Dice of each tissue class and their mean ("mean"); `within` restricts both to a region."""
    if within is not None:
        pred, ref = np.where(within, pred, 0), np.where(within, ref, 0)
    out = {name: dice(pred == c, ref == c) for c, name in CLASSES.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def outside_percent(labelled: np.ndarray, mask: np.ndarray, voxel_mm, margin_mm: float = 5.0) -> float:
    """Percent of the labelled voxels farther than `margin_mm` (Euclidean, in mm) from the mask."""
    from scipy import ndimage

    labelled, mask = np.asarray(labelled, dtype=bool), np.asarray(mask, dtype=bool)
    n = int(labelled.sum())
    if n == 0:
        return 0.0
    if not mask.any():
        return 100.0
    distance_mm = ndimage.distance_transform_edt(~mask, sampling=np.asarray(voxel_mm, dtype=np.float64))
    return 100.0 * int((labelled & (distance_mm > margin_mm)).sum()) / n


def volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(CLASSES) + 1)
    return {name: float(counts[c]) * voxel_ml for c, name in CLASSES.items()}


def psnr_db(clean: np.ndarray, estimate: np.ndarray, peak: float, region: np.ndarray | None = None) -> float:
    """20 log10(peak / RMSE), over `region` when given."""
    diff = np.asarray(clean, dtype=np.float64) - np.asarray(estimate, dtype=np.float64)
    mse = float(np.mean(diff[region] ** 2 if region is not None else diff**2))
    return math.inf if mse == 0 else 20.0 * math.log10(peak / math.sqrt(mse))


def ssim_3d(
    clean: np.ndarray, estimate: np.ndarray, data_range: float, window: int = 7, sigma: float = 1.5
) -> float:
    """Mean 3D SSIM (Gaussian window, k1 0.01, k2 0.03, valid region) with L = `data_range`; the window
    is applied as three 1D passes. Thin volumes use a window no longer than the shortest axis."""
    import torch
    import torch.nn.functional as F

    window = min(window, *[n if n % 2 else n - 1 for n in np.shape(clean)])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x = torch.as_tensor(np.asarray(estimate, dtype=np.float64))  # float64: var = E[x^2] - E[x]^2 cancels
    y = torch.as_tensor(np.asarray(clean, dtype=np.float64))
    taps = torch.exp(-((torch.arange(window, dtype=torch.float64) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    stats = torch.stack([x, y, x * x, y * y, x * y])[None]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = window
        stats = F.conv3d(stats, taps.view(1, 1, *shape).repeat(5, 1, 1, 1, 1), groups=5)
    mu_x, mu_y, xx, yy, xy = stats[0]
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * (2 * cov + c2) / (var_x + var_y + c2)
    return float(ssim.mean())


def kmeans_labels(image: np.ndarray, mask: np.ndarray, classes: int = 3, iterations: int = 50) -> np.ndarray:
    """Plain k-means of the intensities inside `mask` (centres started at intensity quantiles), labels
    1..classes in increasing intensity (T1w: CSF, GM, WM); 0 outside."""
    values = np.asarray(image, dtype=np.float64)[mask]
    centres = np.quantile(values, (np.arange(classes) + 0.5) / classes)
    for _ in range(iterations):
        nearest = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array(
            [values[nearest == k].mean() if (nearest == k).any() else centres[k] for k in range(classes)]
        )
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    rank = np.empty(classes, dtype=np.uint8)
    rank[order] = np.arange(1, classes + 1)
    out = np.zeros(np.shape(image), dtype=np.uint8)
    out[mask] = rank[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)]
    return out
