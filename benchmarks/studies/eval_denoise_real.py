"""Denoising on real scans with the paper's protocol, seqinv models beside dipy's non-local means.

    python benchmarks/studies/eval_denoise_real.py DIR [--models denoise,denoise@1.0] [--nlm] [--bm4d-crop 48]
        [--threads 2] [--csv FILE] [--montage FILE.png] [--montage-scan chris_t1]

Every NIfTI in DIR is the "clean" image (real scans carry their own noise, so removing some of it costs a
little PSNR). Protocols, as the real-scan benchmark (benchmarks/eval_real.py) defines them:
- `gaussian-0.2`: the scan z-scored as seqinv preprocesses it (`normalize_intensity`), plus N(0, 0.2^2);
  PSNR with L = 1 (the noisy input scores ~14 dB); SSIM with L = the clean region's range;
- `rician-3%`, `rician-8%`: the scan divided by its 99th percentile inside the head, Rician noise of std
  0.03 / 0.08: sqrt((x + n1)^2 + n2^2); PSNR and SSIM with L = 1.
Scored on a 24 mm axial slab centred on the head (the in-plane head box + 4 voxels), which is also what
every method gets as input (BM4D takes ~80 us per voxel on one core). Every method is told the true sigma.
The slab is centred on the head's centroid (`seqinv.preprocess.head_region`); eval_real.py centres it on
a reference brain mask, so slabs (and figures) can differ slightly. `--bm4d-crop N` adds BM4D on the
central N^3 of the slab (methods are then scored on that crop too, in rows of their own).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

from seqinv.metrics import psnr_db, ssim_3d

PROTOCOLS = {"gaussian-0.2": ("gaussian", 0.2), "rician-3%": ("rician", 0.03), "rician-8%": ("rician", 0.08)}
SLAB_MM = 24.0


def axial_axis(affine) -> int:
    directions = np.asarray(affine)[:3, :3] / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def slab(affine, head) -> tuple[slice, ...]:
    axis = axial_axis(affine)
    n = max(1, int(round(SLAB_MM / float(np.linalg.norm(np.asarray(affine)[:3, axis])))))
    occupied = np.argwhere(head)
    centre = float(occupied[:, axis].mean())
    start = int(np.clip(round(centre - (n - 1) / 2), 0, head.shape[axis] - n))
    box = []
    for a in range(3):
        if a == axis:
            box.append(slice(start, start + n))
        else:
            lo, hi = occupied[:, a].min() - 4, occupied[:, a].max() + 5
            box.append(slice(int(max(lo, 0)), int(min(hi, head.shape[a]))))
    return tuple(box)


def clean_image(data, head, noise) -> tuple[np.ndarray, float]:
    if noise == "gaussian":
        from seqinv.models.config import DEFAULT_NORMALIZATION
        from seqinv.preprocess import normalize_intensity

        return normalize_intensity(data, DEFAULT_NORMALIZATION)[0], math.nan
    return (data / float(np.percentile(data[head], 99))).astype(np.float32), 1.0


def add_noise(clean, noise, sigma, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if noise == "gaussian":
        return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    real = clean + sigma * rng.standard_normal(clean.shape)
    return np.sqrt(real**2 + (sigma * rng.standard_normal(clean.shape)) ** 2).astype(np.float32)


def seqinv_method(name: str, threads: int):
    from seqinv.inference import InferenceSettings, denoise_volume, load_task_model
    from seqinv.io import Volume

    model = load_task_model("denoise", name)[0]
    settings = InferenceSettings(device="cpu", threads=threads)

    def run(noisy, affine, noise, sigma):
        return denoise_volume(Volume(np.ascontiguousarray(noisy), affine), model, settings, sigma=sigma).image

    run(
        np.random.default_rng(0).random((40, 40, 40)).astype(np.float32), np.eye(4), "gaussian", 0.1
    )  # warm-up
    return run


def nlm_method(threads: int):
    from dipy.denoise.nlmeans import nlmeans

    def run(noisy, affine, noise, sigma):
        rician = noise == "rician"
        offset = 0.0 if rician else 1.0 - min(float(noisy.min()), 0.0)  # dipy clips negatives
        out = nlmeans((noisy + offset).astype(np.float32), sigma, rician=rician, num_threads=threads)
        return np.asarray(out, dtype=np.float32) - offset

    return run


def bm4d_method():
    import bm4d

    def run(noisy, affine, noise, sigma):
        return np.asarray(bm4d.bm4d(noisy.astype(np.float64), sigma), dtype=np.float32)

    return run


def central(shape, n) -> tuple[slice, ...]:
    return tuple(slice(max(0, (s - n) // 2), max(0, (s - n) // 2) + min(n, s)) for s in shape)


def evaluate(args) -> tuple[list[dict], dict]:
    import nibabel as nib

    from seqinv.preprocess import head_region

    methods = {m: seqinv_method(m, args.threads) for m in args.models}
    if args.nlm:
        methods["nlmeans"] = nlm_method(args.threads)
    rows, montage = [], {}
    scans = sorted(p for p in Path(args.data).iterdir() if p.name.endswith((".nii", ".nii.gz")))
    for k, path in enumerate(scans):
        name = path.name.split(".nii")[0]
        image = nib.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
        head = head_region(data)
        box = slab(image.affine, head)
        affine = np.array(image.affine, dtype=np.float64)
        affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64)
        for protocol, (noise, sigma) in PROTOCOLS.items():
            clean_full, data_range = clean_image(data, head, noise)
            clean = np.ascontiguousarray(clean_full[box])
            noisy = add_noise(clean, noise, sigma, args.seed + k)
            region_range = data_range if math.isfinite(data_range) else float(np.ptp(clean))
            outputs = {"input": (noisy, 0.0)}
            for method, fn in methods.items():
                start = time.perf_counter()
                outputs[method] = (fn(noisy, affine, noise, sigma), time.perf_counter() - start)
            crops = [("slab", tuple(slice(None) for _ in range(3)))]
            if args.bm4d_crop:
                crop = central(clean.shape, args.bm4d_crop)
                crops.append((f"crop{args.bm4d_crop}", crop))
                start = time.perf_counter()
                bm4d_out = bm4d_method()(noisy[crop], affine, noise, sigma)
                outputs["bm4d"] = (bm4d_out, time.perf_counter() - start)
            for region, crop in crops:
                for method, (estimate, seconds) in outputs.items():
                    if method == "bm4d" and region == "slab":
                        continue
                    est = estimate if method == "bm4d" else estimate[crop]
                    rows.append(
                        {
                            "scan": name,
                            "protocol": protocol,
                            "region": region,
                            "method": method,
                            "psnr_db": psnr_db(clean[crop], est, 1.0),
                            "psnr_head_db": psnr_db(clean[crop], est, 1.0, head[box][crop]),
                            "ssim": ssim_3d(clean[crop], est, region_range),
                            "time_s": seconds,
                        }
                    )
                    print(
                        f"{name} {protocol} {region} {method}: {rows[-1]['psnr_db']:.2f} dB "
                        f"SSIM {rows[-1]['ssim']:.3f} {seconds:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            if name == args.montage_scan and protocol == "gaussian-0.2":
                montage = {
                    "clean": clean,
                    **{m: o for m, (o, _) in outputs.items()},
                    "axis": axial_axis(image.affine),
                }
    return rows, montage


def write_montage(path: Path, montage: dict, models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = montage["axis"]
    panels = [("noisy", "input")] + [(m if "/" not in m else "seqinv", m) for m in models]
    panels += [("NLM", "nlmeans"), ("clean", "clean")]
    panels = [(t, k) for t, k in panels if k in montage]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (title, key) in zip(axes, panels, strict=True):
        vol = montage[key]
        plane = np.take(vol, vol.shape[axis] // 2, axis=axis)
        ax.imshow(np.rot90(plane), cmap="gray", vmin=-1.2, vmax=3.0)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| scan | protocol | region | method | PSNR (dB) | PSNR head (dB) | SSIM | time (s) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scan']} | {r['protocol']} | {r['region']} | {r['method']} | {r['psnr_db']:.2f} | "
            f"{r['psnr_head_db']:.2f} | {r['ssim']:.3f} | {r['time_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--models", default="denoise")
    p.add_argument("--nlm", action="store_true")
    p.add_argument("--bm4d-crop", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", type=Path)
    p.add_argument("--montage", type=Path)
    p.add_argument("--montage-scan", default="chris_t1")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"error: {args.data} is not a folder of NIfTI scans")
    args.models = [m for m in args.models.split(",") if m]
    torch.set_num_threads(args.threads)
    rows, montage = evaluate(args)
    print(markdown(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.montage and montage:
        write_montage(args.montage, montage, args.models)


if __name__ == "__main__":
    sys.exit(main())
