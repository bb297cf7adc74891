"""QC montage: whole-head SynthSeg phantoms (1 mm physics, thick-slice, random contrast) beside real scans.

    python benchmarks/studies/qc_head_phantoms.py --label-maps DIR --real DIR [--map 17] [--seed 0] [-o PNG]

Rows: real T1w and PDw (on their 1 mm RAS grid, as seqinv sees them), then one held-out phantom as MPRAGE
(1 mm), FSE PDw with 5 mm axial slices, FLAIR with 6 mm coronal slices, and two random contrasts.
Columns: sagittal, coronal and axial slices through the brain's centre.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def _slices(volume: np.ndarray, centre) -> list[np.ndarray]:
    x, y, z = (int(c) for c in centre)
    return [volume[x].T[::-1], volume[:, y].T[::-1], volume[:, :, z].T[::-1]]


def _real(path: Path):
    from training.datasets import read_ras_1mm

    image, _ = read_ras_1mm(path)
    lo, hi = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    mask = image > 0.2
    centre = np.argwhere(mask).mean(0)
    centre[2] += 0.1 * mask.shape[2]  # brain centre is above the head's centre
    return image, centre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-maps", required=True)
    parser.add_argument("--real", required=True, help="folder with chris_t1.nii.gz and chris_PD.nii.gz")
    parser.add_argument("--map", default="17")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="benchmarks/studies/head_phantoms_qc.png")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--patches", type=int, default=6, help="training patches to show (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqinv.physics import make_sequence
    from seqinv.physics.acquisition import thick_slices
    from seqinv.physics.anatomy import make_head_phantom
    from training.head_phantoms import whole_head_image

    rows = []
    for name in ("chris_t1", "chris_PD"):
        image, centre = _real(Path(args.real) / f"{name}.nii.gz")
        rows.append((f"real {name}", image, centre))
    t0 = time.perf_counter()
    phantom = make_head_phantom(args.map, args.seed, folder=args.label_maps, cache_dir=args.cache_dir)
    print(
        f"phantom: {time.perf_counter() - t0:.1f} s, {phantom.labels.shape}, {phantom.values['deformation']}"
    )
    centre = np.argwhere(phantom.labels > 0).mean(0) + np.array([0, 0, 8])  # axial above the orbits
    versions = [
        ("MPRAGE 1 mm", make_sequence("mprage"), None),
        ("FSE PDw, 5 mm axial", make_sequence("fse", tr_s=3.0, te_s=0.015), thick_slices(5.0, 2, 1.0, 0.9)),
        ("FLAIR, 6 mm coronal", make_sequence("flair"), thick_slices(6.0, 1, 0.0, 0.7, profile="box")),
        ("random contrast 1 mm", None, None),
        ("random contrast, 4 mm sag.", None, thick_slices(4.0, 0, 0.0, 1.0)),
    ]
    for i, (label, sequence, acq) in enumerate(versions):
        image, _ = whole_head_image(phantom, args.seed + i, sequence=sequence, acquisition=acq)
        rows.append((f"phantom {args.map}: {label}", image.numpy(), centre))
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)))
    for row, (label, image, c) in zip(axes, rows, strict=True):
        for ax, view in zip(row, _slices(image, c), strict=True):
            ax.imshow(view, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.axis("off")
        row[0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=60)
    _shrink(args.output)
    print(f"written {args.output}")
    if args.patches:
        _patches(args, plt)


def _patches(args, plt) -> None:
    """Training patches as the network sees them (z-scored image; labels as contours), middle slice of each
    axis, with the draw (contrast, slice thickness and axis)."""
    from seqinv.physics.anatomy import load_anatomy
    from training.head_phantoms import HeadPatchMaker, HeadSubject

    subject = HeadSubject("qc", load_anatomy(args.map, args.label_maps, args.cache_dir))
    maker = HeadPatchMaker("ixi", 96)
    fig, axes = plt.subplots(args.patches, 3, figsize=(6, 2 * args.patches))
    for row, seed in zip(axes, range(args.patches), strict=True):
        sample = maker.sample(subject, 1000 + seed)
        image, labels = sample["image"][0].numpy(), sample["label"][0].numpy()
        for axis, ax in enumerate(row):
            index = [slice(None)] * 3
            index[axis] = 48
            ax.imshow(image[tuple(index)].T[::-1], cmap="gray", vmin=-2, vmax=3)
            ax.contour(
                labels[tuple(index)].T[::-1], levels=[0.5, 1.5, 2.5], colors=["r", "y", "c"], linewidths=0.4
            )
            ax.axis("off")
    fig.tight_layout()
    path = Path(args.output).with_name(Path(args.output).stem + "_patches.png")
    fig.savefig(path, dpi=60)
    _shrink(path)
    print(f"written {path}")


def _shrink(path) -> None:
    """Re-save as a 64-colour palette PNG (a few times smaller; slices are grey, contours three colours)."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)


if __name__ == "__main__":
    main()
