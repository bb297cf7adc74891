"""Simulation throughput (voxels/s) on CPU, one thread: a 96³ patch and a 1 mm whole head.

    python benchmarks/bench_physics.py [--repeats 7] [--threads 1] [--random-maps]

Maps come from the built-in phantom (197×233×189, 1 mm) and its central 96³ crop; `--random-maps` uses
uniform random tissue-like values instead (no template loading). Prints the median over `--repeats` runs.
Target (issue 2): one 96³ contrast in < 20 ms on one core (≥ 45 M voxels/s).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqinv.physics import SEQUENCES, QMRIMaps, make_sequence, simulate


def random_maps(shape) -> QMRIMaps:
    g = torch.Generator().manual_seed(0)

    def u(low, high):
        return low + (high - low) * torch.rand(shape, generator=g)

    return QMRIMaps(pd=u(60, 100), r1=u(0.2, 1.5), r2s=u(2, 40), mt=u(0, 2.5), r2=u(0.5, 30))


def median_seconds(maps: QMRIMaps, seq, repeats: int) -> float:
    simulate(maps, seq)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate(maps, seq)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--random-maps", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.random_maps:
        whole = random_maps((197, 233, 189))
    else:
        from seqinv.physics.phantom import make_phantom

        whole = make_phantom(0).maps
    centre = [n // 2 for n in whole.shape]
    patch = whole.crop(tuple(slice(c - 48, c + 48) for c in centre))
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} runs")
    print(f"{'sequence':<9} {'dtype':<9} {'96³ ms':>8} {'96³ Mvox/s':>11} {'head ms':>8} {'head Mvox/s':>12}")
    for name in SEQUENCES:
        seq = make_sequence(name)
        for dtype in (torch.float32, torch.bfloat16):
            row = []
            for maps in (patch, whole):
                seconds = median_seconds(maps.to(dtype=dtype), seq, args.repeats)
                row += [seconds * 1e3, maps.pd.numel() / seconds / 1e6]
            dname = str(dtype).replace("torch.", "")
            print(f"{name:<9} {dname:<9} {row[0]:>8.1f} {row[1]:>11.1f} {row[2]:>8.1f} {row[3]:>12.1f}")


if __name__ == "__main__":
    main()
