"""Denoisers on the development or the test phantoms: the PSNR gain over the noisy input, per noise setting
and pass count.

    python benchmarks/eval_denoise_heads.py --set test --model denoise --model denoise@2.1 [--passes 1,2]
        [--label-maps $SEQINV_LABEL_MAPS] [--threads 1]

`--set dev` (the default: what choices are made on) or `--set test` (only measures; seqinv/physics/sets.py).
Two parts of each: the set's ICBM phantom (`DEVELOPMENT_SEED`, the training script's validation, or
`HELD_OUT_SEED`: 64³ central crops of T1w/T2w/PDw/FLAIR) and, when label maps are given, the set's SynthSeg
heads (`DEVELOPMENT_MAPS` 15 and 16 or `TEST_MAPS` 17 and 18, 64³ crops around the brain, every protocol of
`training.evaluate.held_out_protocols`: four contrasts at 1 mm, T2w 5 mm, FLAIR 6 mm, random contrast).
Noise as in training's validation (`VALIDATION_NOISE`: Gaussian 0.06, Rician 0.03 and 0.08 of the 99th
foreground percentile). Passes average the estimates of flipped copies (`FLIP_ORDER`), as `seqinv denoise
--passes` does. Prints one line per model, pass count, set and noise: the mean gain in dB.
"""

from __future__ import annotations

import argparse
import os
import sys

SETS = ("dev", "test")


def set_of(which: str) -> tuple[tuple[int, ...], int]:
    """(label maps, phantom seed) of set `which`: dev chooses, test only measures."""
    from seqinv.physics import sets

    if which == "dev":
        return sets.DEVELOPMENT_MAPS, sets.DEVELOPMENT_SEED
    return sets.TEST_MAPS, sets.HELD_OUT_SEED


def head_cases(folder: str, seed: int = 99, which: str = "test") -> list:
    """(name, noisy, clean, sigma) on the SynthSeg heads of set `which`, scaled as at inference."""
    import torch

    from seqinv.inference.denoising import intensity_scale
    from seqinv.tasks import TISSUE_TASK
    from training.denoise_resnet import VALIDATION_NOISE
    from training.evaluate import head_phantom_cases

    maps, phantom_seed = set_of(which)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for case in head_phantom_cases(TISSUE_TASK, crop=64, folder=folder, maps=maps, seed=phantom_seed):
        clean = case.image.float()
        clean = clean / intensity_scale(clean.numpy())
        for noise, sigma in VALIDATION_NOISE:
            n1 = torch.randn(clean.shape, generator=gen) * sigma
            if noise == "rician":
                noisy = torch.sqrt((clean + n1) ** 2 + (torch.randn(clean.shape, generator=gen) * sigma) ** 2)
            else:
                noisy = clean + n1
            cases.append((f"{case.contrast}/{noise}-{sigma}", noisy, clean, sigma))
    return cases


def main(argv=None) -> list[dict]:
    import torch

    from seqinv.inference.denoising import check_passes
    from seqinv.models.factory import load_model
    from training.denoise_resnet import validate, validation_set

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None, help="denoiser name or folder (repeatable)")
    p.add_argument("--set", choices=SETS, default="dev", help="dev chooses; test only measures")
    p.add_argument("--passes", default="1,2")
    p.add_argument("--label-maps", default=os.environ.get("SEQINV_LABEL_MAPS", ""))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    passes = [check_passes(int(v)) for v in args.passes.split(",")]
    # dev: the training script's own validation cases; test: the same crops of the test phantom
    sets = {"icbm": validation_set() if args.set == "dev" else validation_set(seed=set_of("test")[1])}
    if args.label_maps:
        sets["heads"] = head_cases(args.label_maps, which=args.set)
    rows = []
    for name in args.model or ["denoise"]:
        net = load_model(name)[0].float().eval()
        if getattr(net.config, "arch", "") != "denoiser":
            raise SystemExit(f"error: {name} is not a residual denoiser")
        for n in passes:
            for set_name, cases in sets.items():
                scores = validate(net, cases, n)
                for key in [k[: -len("/psnr_db")] for k in scores if k.endswith("/psnr_db")]:
                    value = scores[f"{key}/psnr_db"] - scores[f"{key}/input_psnr_db"]
                    rows.append({"model": name, "passes": n, "set": f"{set_name} {key}", "gain_db": value})
                    print(f"{name}  passes {n}  {set_name} {key}: {value:+.2f} dB", flush=True)
    return rows


if __name__ == "__main__":
    from seqinv.errors import SeqInvError

    try:
        main()
    except SeqInvError as err:  # e.g. --passes 3, an unknown model
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
