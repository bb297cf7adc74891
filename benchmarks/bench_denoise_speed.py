"""Time the default denoiser (`denoise`, the residual half-resolution network) on a whole 1 mm head.

    python benchmarks/bench_denoise_speed.py [--runs 3] [--threads 2] [--model denoise] [--passes 2] [--nlm]

The head is the bundled example T1w scan (197x228x178 at 1 mm) with Rician noise of 3 % of its 99th
percentile; the noise level is estimated (as `seqinv denoise` without --sigma). Prints the FLOPs of one
pass (from the layer shapes) and the passes run (flipped copies, default as `seqinv denoise`), the median
wall time of `denoise_volume`
over `--runs` (after one untimed warm-up), its stages, and the peak RSS of the process; `--nlm` adds
dipy's non-local means on the same volume for comparison. Target: <= 20 s on 2 cores in fp32.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "seqinv" / "data" / "example_t1w.nii.gz"


def noisy_head(seed: int = 0):
    import nibabel as nib

    from seqinv.io import Volume

    image = nib.load(str(EXAMPLE))
    clean = image.get_fdata(dtype=np.float32)
    sigma = 0.03 * float(np.percentile(clean[clean > 0], 99))
    rng = np.random.default_rng(seed)
    noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
    return Volume(noisy.astype(np.float32), image.affine), sigma


def flops(net, shape) -> float:
    """Multiply-adds x 2 of the convolutions, counted from the layer shapes (torch's flop counter does not
    see the oneDNN kernel the network calls)."""
    half = np.prod([(n + n % 2) // 2 for n in shape])
    convs = [net.head, *net.body, net.tail]
    return float(sum(2 * c.weight[0].numel() * c.out_channels for c in convs) * half)


def main(argv=None) -> None:
    import torch

    from seqinv.inference import InferenceSettings, denoise_volume, load_task_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None, help="default: the task's default model (denoise)")
    p.add_argument("--passes", type=int, default=None, help="flipped copies averaged (default: 2)")
    p.add_argument("--nlm", action="store_true", help="also time dipy's non-local means")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_task_model("denoise", args.model)[0]
    volume, sigma = noisy_head()
    shape = volume.data.shape
    if getattr(net.config, "arch", "") == "denoiser":
        print(f"FLOPs per pass over {shape}: {flops(net, shape) / 1e12:.2f} TFLOP")
    settings = InferenceSettings(threads=args.threads)
    result = denoise_volume(volume, net, settings, passes=args.passes)  # warm-up (oneDNN kernel set-up)
    print(f"passes: {result.info.settings.get('passes')}")
    times, stages = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = denoise_volume(volume, net, settings, passes=args.passes)
        times.append(time.perf_counter() - start)
        stages.append(result.info.timings_s)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"model {net.config.name or args.model}, {shape} voxels, {args.threads} thread(s)")
    print(f"sigma true {sigma:.3f}, estimated {result.sigma:.3f} ({result.sigma_method})")
    print(
        f"denoise_volume: median {statistics.median(times):.2f} s over {args.runs} runs "
        f"({', '.join(f'{t:.2f}' for t in times)})"
    )
    for key in stages[0]:
        print(f"  {key}: {statistics.median(s[key] for s in stages):.2f} s")
    print(f"peak RSS {peak_gb:.2f} GB")
    if args.nlm:
        from dipy.denoise.nlmeans import nlmeans

        start = time.perf_counter()
        nlmeans(volume.data, sigma, rician=True, num_threads=args.threads)
        print(f"dipy nlmeans (rician): {time.perf_counter() - start:.2f} s (one run)")


if __name__ == "__main__":
    sys.exit(main())
