"""The bundled models on six real scans (the yardstick, never trained or tuned on): brain and tissue
against deepbet / ANTs Atropos references, cross-contrast and resolution agreement, volumes, denoising
beside dipy non-local means and BM4D. A thin script over `training.realbench` (as `seqinv evaluate --real`).

    pip install -e ".[bench]"
    python benchmarks/eval_real.py [--real ../shared/data/real-scans] [--output benchmarks/results]
        [--model ixi] [--denoise-model denoise] [--cache-dir DIR] [--threads 1]
        [--methods seqinv,nlmeans,bm4d] [--protocols gaussian-0.2,rician-3%,rician-8%] [--slab-mm 12]

Writes OUTPUT/real_scans.md (every table), real_scans.csv, real_scans_denoise.csv and real_scans/<scan>.png
(QC montages). References, noisy inputs and baseline outputs are cached per scan file (sha256) under
--cache-dir (default ~/.cache/seqinv/real-bench or $SEQINV_REAL_CACHE): a re-run for a new model only
runs the model.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv):
    from training.realbench.denoising import METHODS, PROTOCOLS, SLAB_MM

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", default="../shared/data/real-scans", help="folder of the real scans")
    p.add_argument("--output", default="benchmarks/results")
    p.add_argument("--model", default="ixi", help="tissue model (name or folder); 'none' to skip")
    p.add_argument("--denoise-model", default="denoise", help="denoising model; 'none' to skip seqinv")
    p.add_argument(
        "--denoise-passes", type=int, default=None, help="flipped passes of the denoiser (default: its own)"
    )
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default=",".join(METHODS), help="denoisers; '' to skip denoising")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--slab-mm", type=float, default=SLAB_MM)
    p.add_argument("--profile", choices=("gaussian", "boxcar"), default="gaussian")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from training.realbench.run import options_from, run_real

    args = parse_args(argv)
    options = options_from(
        real_dir=args.real,
        output=args.output,
        seg_model=args.model,
        denoise_model=args.denoise_model,
        cache_dir=args.cache_dir,
        threads=args.threads,
        methods=args.methods,
        protocols=args.protocols,
        slab_mm=args.slab_mm,
        profile=args.profile,
        denoise_passes=args.denoise_passes,
    )
    result = run_real(options)
    print(result["table"])
    print("written: " + ", ".join(result["paths"].values()))
    return result


if __name__ == "__main__":
    from seqinv.errors import SeqInvError

    try:
        main()
    except SeqInvError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
