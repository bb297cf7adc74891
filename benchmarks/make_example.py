"""Make the bundled example volume `seqinv/data/example_t1w.nii.gz`.

MP-RAGE of the physics phantom (seed 12345) with Rician noise, 1 mm, whole head cropped to its bounding
box (4 mm margin; air beyond the margin zeroed), stored as int16 with scl_slope = sigma (about 3 MB).

    python benchmarks/make_example.py [--out seqinv/data/example_t1w.nii.gz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 12345
MARGIN_VOX = 4
NOISE_FRACTION = 0.02  # Rician sigma as a fraction of the 99th-percentile signal


def main() -> None:
    import nibabel as nib
    import torch
    from scipy.ndimage import binary_dilation

    from seqinv.physics import rician, simulate
    from seqinv.physics.phantom import make_phantom
    from seqinv.physics.sequences import MPRAGE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "seqinv/data/example_t1w.nii.gz"
    )
    out = parser.parse_args().out

    phantom = make_phantom(SEED)
    sequence = MPRAGE(tr_s=2.3, ti_s=0.9, te_s=0.003, flip_deg=9.0, n_exc=176, esp_s=0.007, inv_eff=0.96)
    clean = simulate(phantom.maps, sequence).float()
    sigma = NOISE_FRACTION * float(torch.quantile(clean[clean > 0][::7], 0.99))
    noisy = rician(clean, sigma, generator=torch.Generator().manual_seed(SEED)).numpy()

    inside = binary_dilation(clean.numpy() > 0.05 * sigma / NOISE_FRACTION, iterations=MARGIN_VOX)
    noisy[~inside] = 0  # air far from the head holds only noise: zeroed, as many scanners do, to save space
    head = np.argwhere(inside)
    low = np.maximum(head.min(axis=0) - MARGIN_VOX, 0)
    high = np.minimum(head.max(axis=0) + 1 + MARGIN_VOX, noisy.shape)
    crop = noisy[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    affine = phantom.affine.copy()
    affine[:3, 3] = phantom.affine[:3, :3] @ low + phantom.affine[:3, 3]

    # int16 steps of sigma (adds 4 % to the noise variance); finer steps would only store noise bits
    slope = sigma
    image = nib.Nifti1Image(np.round(crop / slope).astype(np.int16), affine)
    image.header.set_slope_inter(slope, 0.0)
    image.header["descrip"] = f"seqinv example: phantom {SEED} MPRAGE, Rician sigma {sigma:.3g}".encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, out)
    print(f"{out}: shape {crop.shape}, {out.stat().st_size / 1e6:.2f} MB, sigma {sigma:.4g}")


if __name__ == "__main__":
    main()
