"""What the real-scan benchmark measures besides seqinv/metrics.py (whose PSNR, SSIM and Dice it uses):
tissue Dice with its mean, labels outside the brain, volumes, k-means labels. NumPy/SciPy only, so CI can
test them without the bench extra.

Labels: 0 background, 1 CSF, 2 GM, 3 WM (the tissue task's).
"""

from __future__ import annotations

import numpy as np

from seqinv.metrics import dice_per_class

CLASSES = {1: "CSF", 2: "GM", 3: "WM"}


def tissue_dice(pred: np.ndarray, ref: np.ndarray, within: np.ndarray | None = None) -> dict[str, float]:
    """Dice of each tissue class (`CLASSES` names) and their mean ("mean"); `within` restricts both to a
    region (seqinv/metrics.py `dice_per_class`)."""
    out = dice_per_class(pred, ref, ["background", *CLASSES.values()], within)
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
