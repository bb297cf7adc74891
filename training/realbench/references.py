"""Reference masks and tissue maps for the real scans, computed once per scan file and cached.

The cache folder holds one sub-folder per scan file, named by the file's sha256 (so an edited scan gets new
references) and `RECIPE` (bumped when a recipe below changes). Every file is written atomically.

Recipes (what the benchmark compares against; none of them is seqinv):
- brain mask, T1w scans: deepbet (`deepbet.run_bet`, its bundled weights, CPU, threshold 0.5);
- brain mask, skull-stripped scans (CIT168): the non-zero voxels, holes filled;
- brain mask, chris_PD: chris_t1's deepbet mask carried by a rigid registration (SimpleITK, Mattes MI);
- brain mask, T2w (deepbet is trained on T1w only): the deepbet mask of the MNI152 2 mm T1w template
  carried by an affine (12 dof) registration of the template onto the T2w; an approximate reference;
- tissue (sharp T1w only): ANTs Atropos (antspyx) with N4 bias correction inside the reference mask,
  3 classes started by k-means, MRF smoothing 0.2; classes ordered by mean intensity (CSF < GM < WM);
- floor: plain 3-class k-means of the raw intensities inside the reference mask (`metrics.kmeans_labels`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.realbench.grids import carry_mask, register

RECIPE = "r1"
DEFAULT_CACHE = Path("~/.cache/seqinv/real-bench")

#: how each reference brain mask is made (the scan specs name one)
MASK_RECIPES = {
    "deepbet": "deepbet",
    "nonzero": "non-zero (skull-stripped)",
    "rigid:chris_t1": "chris_t1's deepbet, rigid",
    "affine:MNI152_T1_2mm": "MNI152 deepbet, affine (approx.)",
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEQINV_REAL_CACHE", DEFAULT_CACHE)).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Cache:
    """Arrays (.npy), transforms (.tfm) and small JSON records under one folder per scan file."""

    def __init__(self, root: Path, sha256: str):
        self.folder = Path(root) / f"{sha256[:16]}-{RECIPE}"
        self.hits, self.misses = 0, 0

    def array(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        value = np.asarray(compute())
        self._write(path, lambda tmp: np.save(tmp, value))
        return value

    def record(self, name: str, compute: Callable[[], dict]) -> dict:
        path = self.folder / f"{name}.json"
        if path.is_file():
            self.hits += 1
            return json.loads(path.read_text(encoding="utf-8"))
        self.misses += 1
        value = compute()
        self._write(path, lambda tmp: Path(tmp).write_text(json.dumps(value), encoding="utf-8"))
        return value

    def transform(self, name: str, compute: Callable):
        import SimpleITK as sitk

        path = self.folder / f"{name}.tfm"
        if path.is_file():
            self.hits += 1
            return sitk.ReadTransform(str(path))
        self.misses += 1
        value = compute()
        self._write(path, lambda tmp: sitk.WriteTransform(value, str(tmp)))
        return sitk.ReadTransform(str(path))  # the same object type on a hit and a miss

    def _write(self, path: Path, write: Callable) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ masks
def deepbet_mask(path: Path, shape) -> np.ndarray:
    """deepbet's brain mask of a T1w file (it works on files: the mask goes to a temporary NIfTI)."""
    import tempfile

    import nibabel as nib
    from deepbet import run_bet

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mask.nii.gz"
        run_bet([str(path)], mask_paths=[str(out)], no_gpu=True, threshold=0.5)
        mask = np.asarray(nib.load(str(out)).dataobj) > 0
    if mask.shape != tuple(shape):
        raise RuntimeError(f"deepbet returned a {mask.shape} mask for a {tuple(shape)} scan")
    return mask


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(data) > 0)


def carried_mask(fixed, moving, moving_mask: np.ndarray, kind: str) -> tuple[np.ndarray, object]:
    """`moving_mask` (on `moving`'s grid) carried onto `fixed`'s grid by registering moving onto fixed;
    `fixed`/`moving` are `seqinv.io.Volume`s. Returns (mask, transform fixed -> moving points)."""
    transform = register(fixed.data, fixed.affine, moving.data, moving.affine, kind)
    return carry_mask(moving_mask, moving.affine, fixed.shape, fixed.affine, transform), transform


# ------------------------------------------------------------------------------------------------ tissue
def to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTs image (float32) of `data` (X, Y, Z) on the grid of the RAS `affine`."""
    import ants

    from training.realbench.grids import RAS_TO_LPS

    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return ants.from_numpy(
        np.asarray(data, dtype=np.float32),
        origin=tuple(lps[:3, 3]),
        spacing=tuple(spacing),
        direction=lps[:3, :3] / spacing,
    )


def atropos_labels(data: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ANTs Atropos 3-class labels inside `mask` after N4 (see the module docstring), 1..3 by intensity."""
    import ants

    image, ants_mask = to_ants(data, affine), to_ants(mask, affine)
    corrected = ants.n4_bias_field_correction(image, mask=ants_mask)
    seg = ants.atropos(a=corrected, x=ants_mask, i="kmeans[3]", m="[0.2,1x1x1]", c="[5,0]")
    raw = seg["segmentation"].numpy().astype(np.uint8)
    values = corrected.numpy()
    means = [values[raw == k].mean() if (raw == k).any() else np.inf for k in (1, 2, 3)]
    rank = np.zeros(4, dtype=np.uint8)
    rank[1 + np.argsort(means)] = (1, 2, 3)
    return np.where(mask, rank[raw], 0).astype(np.uint8)
