"""Quality-control montage: axial, coronal and sagittal slices with the labels overlaid, as a PNG.

Drawn with numpy and written with SimpleITK (no plotting library needed). Inputs are on the 1 mm RAS
model grid, so every view has square pixels and a fixed orientation (anterior/superior up).
"""

from __future__ import annotations

import os

import numpy as np

from seqinv.io import atomic_path

#: RGB colours of labels 1, 2, 3, ... (label 0 is not drawn).
COLOURS = np.array(
    [[230, 60, 60], [60, 200, 80], [70, 130, 240], [240, 200, 40], [200, 80, 220], [40, 210, 210]],
    dtype=np.float32,
)
ALPHA = 0.45


def _views(volume: np.ndarray, n_slices: int) -> list[list[np.ndarray]]:
    """n slices per axis through the middle 80 % of the volume, rotated for display."""
    rows = []
    for axis in (2, 1, 0):  # axial, coronal, sagittal
        size = volume.shape[axis]
        positions = np.linspace(0.1 * size, 0.9 * size - 1, n_slices).round().astype(int)
        rows.append([np.rot90(np.take(volume, int(p), axis=axis)) for p in positions])
    return rows


def _tile(rows: list[list[np.ndarray]], fill: float) -> np.ndarray:
    height = max(s.shape[0] for row in rows for s in row)
    width = max(s.shape[1] for row in rows for s in row)
    out = []
    for row in rows:
        tiles = []
        for s in row:
            tile = np.full((height, width), fill, dtype=np.float32)
            top, left = (height - s.shape[0]) // 2, (width - s.shape[1]) // 2
            tile[top : top + s.shape[0], left : left + s.shape[1]] = s
            tiles.append(tile)
        out.append(np.concatenate(tiles, axis=1))
    return np.concatenate(out, axis=0)


def montage(image: np.ndarray, labels: np.ndarray | None = None, n_slices: int = 5) -> np.ndarray:
    """RGB uint8 montage (3 rows: axial, coronal, sagittal) of `image` with `labels` overlaid."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    grey_tiles = _tile(_views(grey.astype(np.float32), n_slices), 0.0)
    rgb = np.repeat(grey_tiles[..., None] * 255.0, 3, axis=-1)
    if labels is not None:
        label_tiles = _tile(_views(labels.astype(np.float32), n_slices), 0.0).astype(int)
        for value in range(1, int(label_tiles.max()) + 1):
            where = label_tiles == value
            colour = COLOURS[(value - 1) % len(COLOURS)]
            rgb[where] = (1 - ALPHA) * rgb[where] + ALPHA * colour
    return rgb.round().clip(0, 255).astype(np.uint8)


def write_montage(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Write the montage as a PNG (atomically)."""
    import SimpleITK as sitk

    rgb = montage(image, labels)
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp))


def write_grid(path: str | os.PathLike, rows: list[list[np.ndarray]]) -> None:
    """Write rows of 2D grey images (values in [0, 1]) as one PNG grid, atomically (e.g. denoising
    panels: one row per scan)."""
    import SimpleITK as sitk

    grey = np.clip(_tile(rows, 0.0), 0, 1)
    rgb = np.repeat((grey[..., None] * 255.0).round().astype(np.uint8), 3, axis=-1)
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp))
