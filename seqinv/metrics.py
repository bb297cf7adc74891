"""The one place of seqinv's figures: PSNR, SSIM, Dice (per class, mean tissue) and HD95.

Everything that publishes or chooses by a number uses these: `seqinv evaluate` (training/evaluate.py), the
real-scan benchmark (training/realbench/), the default denoiser's validation (training/denoise_resnet.py)
and the scripts of benchmarks/. tests/test_metrics.py checks each against MONAI.

Inputs are NumPy arrays or CPU torch tensors; sums and means run in float64.
"""

from __future__ import annotations

import math

import numpy as np

#: The tissue classes of label maps (0 background, 1 CSF, 2 GM, 3 WM): the `ixi` task's.
TISSUE_CLASSES = ("csf", "gm", "wm")


def _array(values, dtype=None) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


# ---- intensities ---------------------------------------------------------------------------------------


def psnr_db(clean, estimate, peak: float, region=None) -> float:
    """20 log10(peak / RMSE) in dB, over the voxels of `region` (a mask) when given; inf when equal."""
    diff = _array(clean, np.float64) - _array(estimate, np.float64)
    if region is not None:
        diff = diff[_array(region, bool)]
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 20.0 * math.log10(peak / math.sqrt(mse))


def psnr_pair(clean, estimate) -> dict[str, float]:
    """PSNR twice: `psnr_l1_db` with peak 1 (the paper's, on z-scored images) and `psnr_range_db` with
    peak = the clean image's intensity range."""
    clean = _array(clean, np.float64)
    value_range = float(clean.max() - clean.min())
    return {
        "psnr_l1_db": psnr_db(clean, estimate, 1.0),
        "psnr_range_db": psnr_db(clean, estimate, value_range),
    }


def ssim_3d(clean, estimate, data_range: float, window: int = 7, sigma: float = 1.5) -> float:
    """Mean 3D SSIM (Gaussian window `window` with std `sigma`, k1 0.01, k2 0.03, valid region) with
    L = `data_range`: MONAI's `SSIMMetric`, computed as three 1D passes. Thin volumes use a window no
    longer than their shortest axis."""
    import torch
    import torch.nn.functional as F

    window = min(window, *[n if n % 2 else n - 1 for n in np.shape(clean)])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x = torch.as_tensor(_array(estimate, np.float64))  # float64: var = E[x^2] - E[x]^2 cancels
    y = torch.as_tensor(_array(clean, np.float64))
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


# ---- labels --------------------------------------------------------------------------------------------


def dice(a, b) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    a, b = _array(a, bool), _array(b, bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def dice_per_class(pred, truth, labels, within=None) -> dict[str, float]:
    """Dice of each foreground class c (index >= 1 of `labels`, named by it): 1 when absent from both.
    `within` (a mask) restricts both label maps to a region."""
    pred, truth = _array(pred), _array(truth)
    if within is not None:
        inside = _array(within, bool)
        pred, truth = np.where(inside, pred, 0), np.where(inside, truth, 0)
    return {name: dice(pred == c, truth == c) for c, name in enumerate(labels) if c > 0}


def mean_tissue_dice(probs, truth) -> float:
    """Mean Dice of CSF, GM and WM (labels 1-3) of the argmax of `probs` (C, X, Y, Z) against `truth`."""
    pred = np.argmax(_array(probs), axis=0)
    scores = dice_per_class(pred, truth, ("background", *TISSUE_CLASSES))
    return float(np.mean([scores[name] for name in TISSUE_CLASSES]))


def hd95_per_class(pred, truth, labels, spacing_mm) -> dict[str, float]:
    """Symmetric 95th-percentile Hausdorff distance in mm per foreground class, as MONAI's
    `compute_hausdorff_distance(percentile=95)` computes it (tests/test_metrics.py compares the two):
    surface voxels (the mask less its erosion), distances from each surface to the other's, the larger
    of the two 95th percentiles. A class absent from one side gives inf, from both nan."""
    pred, truth = _array(pred, np.int64), _array(truth, np.int64)
    return {name: _hd95(pred == c, truth == c, spacing_mm) for c, name in enumerate(labels) if c > 0}


def _hd95(pred: np.ndarray, truth: np.ndarray, spacing_mm) -> float:
    from scipy import ndimage

    if not pred.any() or not truth.any():
        return math.nan if not pred.any() and not truth.any() else math.inf
    edges = [m & ~ndimage.binary_erosion(m) for m in (pred, truth)]
    directed = []
    for a, b in (edges, edges[::-1]):
        distance = ndimage.distance_transform_edt(~b, sampling=spacing_mm)
        directed.append(float(np.percentile(distance[a], 95)))
    return max(directed)
