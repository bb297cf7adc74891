"""Denoising at σ = 0.2: the seqinv denoiser beside non-local means (dipy) and BM4D, on the held-out phantom.

    python benchmarks/studies/bench_denoise_baselines.py --model denoise [--sigma 0.2] [--runs 3] [--crop 64]
        [--noise gaussian,rician] [--methods seqinv,nlmeans,bm4d] [--contrasts T1w,T2w,PDw,FLAIR] [--csv FILE]

The held-out phantom (`HELD_OUT_SEED`, never used in training) is simulated with the fixed evaluation
protocols of `training.evaluate.phantom_protocols` (T1w MP-RAGE, T2w FSE, PDw FSE, FLAIR). Each clean image is
normalised like `seqinv.preprocess.normalize_intensity` (0.5-99.5 percentile rescale to [0, 1], clipped, then
z-score with the mean/std of the head, i.e. the voxels > 0). Noise of std σ in those z units is added:
Gaussian to the z-scored image (the paper's setting), or Rician to the [0, 1] magnitude image with std σ·std
(the same σ in z units) before the same z-transform. Then:
  - seqinv: `seqinv.inference.denoise_volume` with the known σ (what `seqinv denoise --sigma` runs);
  - nlmeans: `dipy.denoise.nlmeans.nlmeans` (its default blockwise method, `rician` matching the noise;
    Gaussian-noise images are shifted to positive values first, as dipy clips negatives);
  - bm4d: `bm4d.bm4d(z, sigma_psd=σ)` (all stages; about 20 s per 48³ on one core, so the whole head takes
    tens of minutes per run: use `--crop`, `--runs 1` or `--bm4d-stages hard` on small CPUs).
The baselines run on the magnitude ([0, 1]) image with σ in those units (NLM's block pre-selection and its
Rician correction assume magnitude data); their outputs are mapped back with the same z-transform. BM4D
assumes Gaussian noise: its Rician rows show the bias a Gaussian denoiser leaves on magnitude data.

Metrics on the whole (cropped) volume against the clean z-scored image: PSNR with L = 1 (the paper's: the
noisy input scores 20·log10(1/σ) ≈ 14 dB), PSNR with L = the clean image's range, SSIM (MONAI's definition,
3D Gaussian window, L = range), PSNR (L = 1) over the head only (air is ~2/3 of the whole-head grid and
easy to flatten), and each method's wall time (median over `--runs`; seqinv's includes its
preprocessing and excludes model loading and one untimed warm-up call per process). `input` rows: the floor.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqinv.errors import ParameterError, SeqInvError

METHODS = ("seqinv", "nlmeans", "bm4d")
NOISES = ("gaussian", "rician")
COLUMNS = ("noise", "contrast", "method", "psnr_l1_db", "psnr_range_db", "psnr_l1_head_db", "ssim", "time_s")


@dataclass
class TestImage:
    """One clean contrast: z-scored (what is scored) and the affine z = (s - mean) / std from [0, 1] units."""

    contrast: str
    clean_z: np.ndarray
    mean: float
    std: float
    affine: np.ndarray
    head: np.ndarray  # bool: the voxels the z-score statistics came from (> 0 after the rescale)


# ------------------------------------------------------------------------------------------------ data
def load_maps(seed: int, crop: int):
    """Phantom qMRI maps (cached on disk by `training.phantom_cache.load_phantom`), optionally a crop³
    around the brain's centre (as `seqinv evaluate --crop`), and the voxel → RAS affine of what is kept."""
    from training.phantom_cache import default_cache_dir, load_phantom

    subject = load_phantom(seed, lesion=False, cache_dir=default_cache_dir())
    maps = subject.maps
    affine = np.asarray(maps.affine, dtype=np.float64)
    if crop > 0:
        centre = (subject.labels > 0).nonzero().float().mean(0).round().long().tolist()
        starts = [max(0, c - crop // 2) for c in centre]
        maps = maps.crop(tuple(slice(s, s + crop) for s in starts))
        affine = affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.array(starts, dtype=np.float64)
    return maps, affine


def clean_images(maps, affine: np.ndarray, contrasts: list[str]) -> list[TestImage]:
    """Simulate each protocol and normalise it as inference does (`normalize_intensity`)."""
    from seqinv.models.config import DEFAULT_NORMALIZATION
    from seqinv.physics import simulate
    from seqinv.preprocess import normalize_intensity
    from training.evaluate import phantom_protocols

    protocols = phantom_protocols()
    images = []
    for contrast in contrasts:
        signal = torch.nan_to_num(simulate(maps, protocols[contrast]).float()).numpy()
        clean_z, stats = normalize_intensity(signal, DEFAULT_NORMALIZATION)
        head = clean_z * stats["std"] + stats["mean"] > 0
        images.append(TestImage(contrast, clean_z, stats["mean"], stats["std"], affine, head))
    return images


def add_noise(image: TestImage, noise: str, sigma: float, seed: int) -> np.ndarray:
    """Noisy z-scored image with noise std `sigma` in z units."""
    from seqinv.physics import rician

    g = torch.Generator().manual_seed(seed)
    clean = torch.from_numpy(image.clean_z)
    if noise == "gaussian":
        return (clean + sigma * torch.randn(clean.shape, generator=g)).numpy()
    magnitude = clean * image.std + image.mean  # back to the [0, 1] rescaled image
    return ((rician(magnitude, sigma * image.std, generator=g) - image.mean) / image.std).numpy()


# ------------------------------------------------------------------------------------------------ methods
def seqinv_method(model_name: str, fast: bool, device: str, threads: int) -> Callable:
    from seqinv.inference import InferenceSettings, denoise_volume, load_task_model
    from seqinv.io import Volume

    model = load_task_model("denoise", model_name)[0]
    # `threads` is re-applied on every call: dipy's OpenMP NLM changes torch's thread count (measured: the
    # next torch run was 30x slower on 1 thread asked, 2 in effect)
    make = InferenceSettings.fast if fast else InferenceSettings
    settings = make(device=device, threads=threads)

    def run(noisy_z, image, noise, sigma):
        volume = Volume(data=noisy_z.astype(np.float32), affine=image.affine)
        return denoise_volume(volume, model, settings, sigma=sigma).image

    return run


def nlmeans_method(threads: int) -> Callable:
    from dipy.denoise.nlmeans import nlmeans

    def run(noisy_z, image, noise, sigma):
        magnitude = noisy_z * image.std + image.mean
        rician = noise == "rician"
        # dipy clips negative values (and its pre-selection divides means), so Gaussian-noise images are
        # shifted to >= 1 first (measured: +8 dB on a phantom with air); Rician data needs its true zero
        offset = 0.0 if rician else 1.0 - min(float(magnitude.min()), 0.0)
        out = nlmeans(
            (magnitude + offset).astype(np.float32), sigma * image.std, rician=rician, num_threads=threads
        )
        return (out - offset - image.mean) / image.std

    return run


def bm4d_method(stages: str) -> Callable:
    import bm4d

    stage = bm4d.BM4DStages.ALL_STAGES if stages == "all" else bm4d.BM4DStages.HARD_THRESHOLDING

    def run(noisy_z, image, noise, sigma):
        magnitude = noisy_z * image.std + image.mean
        out = bm4d.bm4d(magnitude.astype(np.float64), sigma * image.std, stage_arg=stage)
        return ((out - image.mean) / image.std).astype(np.float32)

    return run


def build_methods(args) -> tuple[dict[str, Callable], dict[str, str]]:
    """The runnable methods, and a reason for each one that cannot run here (reported, not fatal)."""
    makers = {
        "seqinv": lambda: seqinv_method(args.model, args.fast, args.device, args.threads),
        "nlmeans": lambda: nlmeans_method(args.threads),
        "bm4d": lambda: bm4d_method(args.bm4d_stages),
    }
    methods, missing = {}, {}
    for name in args.methods:
        try:
            methods[name] = makers[name]()
        except ImportError as err:
            missing[name] = f"not measured: {err} (pip install 'seqinv[bench]')"
    return methods, missing


# ------------------------------------------------------------------------------------------------ metrics
def scores(image: TestImage, estimate: np.ndarray, ssim: bool) -> dict[str, float]:
    """PSNR (L = 1 and L = range) over the whole volume, PSNR (L = 1) over the head only, SSIM."""
    from seqinv.metrics import psnr_db, psnr_pair

    clean, est = torch.from_numpy(image.clean_z), torch.from_numpy(np.asarray(estimate, dtype=np.float32))
    out = psnr_pair(clean, est)
    head = torch.from_numpy(image.head)
    out["psnr_l1_head_db"] = psnr_db(clean, est, 1.0, head)
    out["ssim"] = ssim_3d(clean, est) if ssim else math.nan
    return out


def ssim_3d(clean: torch.Tensor, estimate: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean 3D SSIM with L = the clean image's range: MONAI's `SSIMMetric` (Gaussian window 11, σ 1.5,
    k1 0.01, k2 0.03, valid region), computed by `seqinv.metrics.ssim_3d` (tested against MONAI)."""
    from seqinv.metrics import ssim_3d as separable_ssim

    return separable_ssim(clean, estimate, float(clean.max() - clean.min()), window, sigma)


def timed(fn: Callable, runs: int, *args) -> tuple[np.ndarray, float]:
    """Output of the first run and the median wall time over `runs` (the methods are deterministic)."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
        out = result if out is None else out
    return out, statistics.median(times)


def benchmark(images: list[TestImage], methods: dict, args) -> list[dict]:
    rows, warm = [], set()
    for noise in args.noise:
        for k, image in enumerate(images):
            noisy = add_noise(image, noise, args.sigma, seed=args.noise_seed + k)
            base = {"noise": noise, "contrast": image.contrast}
            rows.append({**base, "method": "input", **scores(image, noisy, args.ssim), "time_s": 0.0})
            for name, fn in methods.items():
                if name == "seqinv" and name not in warm:  # one-off oneDNN kernel set-up (~4 s), untimed
                    fn(noisy, image, noise, args.sigma)
                    warm.add(name)
                estimate, seconds = timed(fn, args.runs, noisy, image, noise, args.sigma)
                metrics = scores(image, estimate, args.ssim)
                rows.append({**base, "method": name, **metrics, "time_s": seconds})
                print(
                    f"  {noise:8s} {image.contrast:5s} {name:8s} {metrics['psnr_l1_db']:6.2f} dB "
                    f"{seconds:7.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return rows + mean_rows(rows)


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per noise and method: the mean over contrasts (contrast "mean")."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["noise"], r["method"]), []).append(r)
    out = []
    for (noise, method), members in groups.items():
        if len(members) < 2:
            continue
        means = {c: float(np.mean([m[c] for m in members])) for c in COLUMNS[3:]}
        out.append({"noise": noise, "contrast": "mean", "method": method, **means})
    return out


# ------------------------------------------------------------------------------------------------ output
def markdown(rows: list[dict]) -> str:
    lines = [
        "| noise | contrast | method | PSNR L=1 (dB) | PSNR L=range (dB) | PSNR L=1 head (dB) | SSIM "
        "| time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ssim = "-" if math.isnan(r["ssim"]) else f"{r['ssim']:.3f}"
        seconds = "-" if r["method"] == "input" else f"{r['time_s']:.2f}"
        lines.append(
            f"| {r['noise']} | {r['contrast']} | {r['method']} | {r['psnr_l1_db']:.2f} | "
            f"{r['psnr_range_db']:.2f} | {r['psnr_l1_head_db']:.2f} | {ssim} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r[c] for c in COLUMNS} for r in rows)
    os.replace(tmp, path)


def choices(value: str, valid: tuple[str, ...], option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise ParameterError(f"{option} {value!r}: expected a comma-separated subset of {','.join(valid)}")
    return items


def parse_args(argv: list[str] | None):
    from seqinv.physics.phantom import HELD_OUT_SEED

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="denoise", help="denoising model: published name or folder")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="phantom seed (default: the held-out one)")
    p.add_argument("--sigma", type=float, default=0.2, help="noise std in z-score units")
    p.add_argument("--runs", type=int, default=3, help="timed runs per method (median reported)")
    p.add_argument("--crop", type=int, default=0, help="central crop³ around the brain (0: whole head)")
    p.add_argument("--noise", default="gaussian,rician")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--contrasts", default="T1w,T2w,PDw,FLAIR")
    p.add_argument("--bm4d-stages", choices=("all", "hard"), default="all")
    p.add_argument("--no-ssim", dest="ssim", action="store_false")
    p.add_argument("--fast", action="store_true", help="seqinv --fast (overlap 0.25)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--csv", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.sigma > 0:
        raise ParameterError(f"--sigma {args.sigma} must be > 0 (noise std in z units; the paper uses 0.2)")
    if args.runs < 1 or args.crop < 0 or args.threads < 1:
        raise ParameterError("--runs and --threads must be >= 1 and --crop >= 0 (0 = whole head)")
    args.noise = choices(args.noise, NOISES, "--noise")
    args.methods = choices(args.methods, METHODS, "--methods")
    args.contrasts = choices(args.contrasts, ("T1w", "T2w", "PDw", "FLAIR"), "--contrasts")
    if args.seed != HELD_OUT_SEED:
        print(f"warning: seed {args.seed} is not the held-out seed {HELD_OUT_SEED}", file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods, missing = build_methods(args)
    maps, affine = load_maps(args.seed, args.crop)
    images = clean_images(maps, affine, args.contrasts)
    rows = benchmark(images, methods, args)
    shape = "×".join(str(n) for n in images[0].clean_z.shape)
    print(
        f"Denoising, phantom seed {args.seed}, {shape} voxels, σ = {args.sigma} (z units), "
        f"{args.threads} thread(s), time = median of {args.runs} run(s); model {args.model}\n"
    )
    print(markdown(rows))
    for name, reason in missing.items():
        print(f"{name}: {reason}")
    if args.csv:
        write_csv(rows, args.csv)
    return rows


if __name__ == "__main__":
    try:
        main()
    except SeqInvError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
