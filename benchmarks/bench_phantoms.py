"""Head-phantom sampling speed on CPU, one thread: ms per training sample and per whole phantom.

    python benchmarks/bench_phantoms.py --label-maps DIR [--patch 96] [--samples 20] [--threads 1]

Measures (medians): loading a label map (first time, and from the cache), a fine-tuning patch
(`HeadPatchMaker`, task ixi: render + contrast + acquisition + intensity augmentation), the same with only
physics or only random contrast, a pretraining view pair (`HeadViewMaker`, crop 1.25× the patch), the
ICBM-phantom patch and view pair of training/patches.py for comparison, and one whole-head phantom
(`make_head_phantom`). Sample generation should stay well under a CPU training step (~0.7 s fp32 for
the lite U-Net at 96³).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def _median_ms(fn, repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-maps", required=True)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--map", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from seqinv.physics.anatomy import load_anatomy, make_head_phantom
    from training.head_phantoms import HeadPatchMaker, HeadSampling, HeadSubject, HeadViewMaker

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        anatomy = load_anatomy(args.map, args.label_maps, cache)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        load_anatomy(args.map, args.label_maps, cache)
        cached_ms = 1000 * (time.perf_counter() - start)
    subject = HeadSubject(anatomy.name, anatomy)
    print(
        f"label map {anatomy.name}: grid {anatomy.shape}, prepare {first_s:.1f} s, "
        f"cached load {cached_ms:.0f} ms"
    )
    rows = []
    for label, head in (
        ("default mix (30 % random contrast, 50 % thick slices)", HeadSampling()),
        ("physics only, 1 mm", HeadSampling(random_contrast=0.0, clinical=0.0)),
        ("random contrast only, thick slices", HeadSampling(random_contrast=1.0, clinical=1.0)),
    ):
        maker = HeadPatchMaker("ixi", args.patch, head=head)
        rows.append(
            (
                f"fine-tune patch {args.patch}^3, {label}",
                _median_ms(lambda s, m=maker: m.sample(subject, s), args.samples),
            )
        )
    views = HeadViewMaker("seqinv", args.patch)
    rows.append(
        (
            f"pretrain view pair {args.patch}^3 (crop {views.crop_size}^3)",
            _median_ms(lambda s: views.pair(subject, s), args.samples),
        )
    )

    from training.patches import PatchMaker
    from training.phantom_cache import load_phantom
    from training.views import ViewMaker

    icbm = load_phantom(1000, lesion=False, cache_dir=None)
    old = PatchMaker("ixi", args.patch)
    rows.append(
        (
            f"ICBM phantom patch {args.patch}^3 (training/patches.py, for comparison)",
            _median_ms(lambda s: old.sample(icbm, s), args.samples),
        )
    )
    old_views = ViewMaker("seqinv", args.patch)
    rows.append(
        (
            f"ICBM phantom view pair {args.patch}^3 (training/patches.py, for comparison)",
            _median_ms(lambda s: old_views.pair(icbm, s), args.samples),
        )
    )
    rows.append(
        (
            "whole-head phantom (make_head_phantom)",
            _median_ms(lambda s: make_head_phantom(args.map, s, anatomy=anatomy), 3),
        )
    )
    for label, ms in rows:
        print(f"{label}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
