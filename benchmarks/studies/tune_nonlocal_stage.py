"""Choose the residual denoiser's second stage (`seqinv.inference.nonlocal_stage`) on development phantoms.

    python benchmarks/studies/tune_nonlocal_stage.py [--model denoise@2.2] [--h 0.6,0.8,1.0]
        [--weight 0.5,0.6,0.7,0.8] [--search 2] [--thick K [--isotropic]] [--passes 2]
        [--label-maps $SEQINV_LABEL_MAPS] [--threads 1]

The development set of `eval_denoise_heads.py --set dev` (seqinv/physics/sets.py; the test sets are
refused): the development ICBM phantom (`DEVELOPMENT_SEED`, 64³ crops of T1w/T2w/PDw/FLAIR) and, with
label maps, the development SynthSeg heads 15 and 16 (seven protocols incl. thick slices and random
contrast); noise Gaussian 0.06, Rician 0.03 and 0.08 of the 99th foreground
percentile. The network runs once per case (`--passes` flipped copies, as `seqinv denoise`); every
(h, weight) pair of the grid then runs the stage on its estimate. Prints the mean PSNR gain over the
noisy input of the network alone and of each pair, per set and noise, and the pair with the best mean
gain over all six. `--thick K`: the same crops on a native grid of K mm slices (the stage then searches
in-plane only, as `seqinv denoise` does on thick slices; `--isotropic` searches the thick axis too).
The real scans are never used here: they only measure the choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for eval_denoise_heads


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def thick_cases(cases: list, k: int, seed: int = 5) -> list:
    """The cases on a native grid of k mm slices along the last axis (k 1 mm slices averaged: a box
    slice profile), with fresh noise of the same kind and level."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, _, clean, sigma in cases:
        n = clean.shape[-1] // k
        thick = clean[..., : n * k].reshape(*clean.shape[:-1], n, k).mean(-1)
        noisy = thick + torch.randn(thick.shape, generator=gen) * sigma
        if "rician" in name:
            noisy = torch.sqrt(noisy**2 + (torch.randn(thick.shape, generator=gen) * sigma) ** 2)
        out.append((name, noisy, thick, sigma))
    return out


def main(argv=None) -> dict:
    import torch
    from eval_denoise_heads import head_cases, set_of

    from seqinv.inference.denoising import flip_average
    from seqinv.inference.nonlocal_stage import NonlocalStage, apply_stage
    from seqinv.models.factory import load_model
    from seqinv.physics.sets import refuse_test
    from training.denoise_resnet import VALIDATION_SEED, psnr, validation_set

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="denoise@2.2")
    p.add_argument("--h", default="0.6,0.8,1.0")
    p.add_argument("--weight", default="0.5,0.6,0.7,0.8")
    p.add_argument("--search", type=int, default=2)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--label-maps", default=os.environ.get("SEQINV_LABEL_MAPS", ""))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--thick", type=int, default=1, help="K > 1: native K mm slices along the last axis")
    p.add_argument("--isotropic", action="store_true", help="search every axis, thick ones too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_model(args.model)[0].float().eval()
    grid = [NonlocalStage(args.search, h, w) for h in floats(args.h) for w in floats(args.weight)]
    maps, seed = set_of("dev")
    refuse_test("tune the non-local stage", maps=maps, seeds=[seed, VALIDATION_SEED])
    sets = {"icbm": validation_set()}
    if args.label_maps:
        sets["heads"] = head_cases(args.label_maps, which="dev")
    if args.thick > 1:
        sets = {k: thick_cases(cases, args.thick) for k, cases in sets.items()}
    spacing = None if args.isotropic else (1.0, 1.0, float(args.thick))
    gains: dict[tuple[str, str], list[list[float]]] = {}
    for set_name, cases in sets.items():
        for name, noisy, clean, sigma in cases:
            with torch.no_grad():
                noise = flip_average(lambda x, s=sigma: net(x[None, None], s)[0, 0], noisy, args.passes)
            estimate = (noisy - noise).numpy()
            base = psnr(noisy, clean)
            row = [psnr(torch.from_numpy(estimate), clean) - base]
            for stage in grid:
                out = apply_stage(noisy.numpy(), estimate, sigma, stage, spacing=spacing)
                row.append(psnr(torch.from_numpy(out), clean) - base)
            gains.setdefault((set_name, name.split("/")[-1]), []).append(row)
    means = {key: np.mean(rows, axis=0) for key, rows in gains.items()}
    grid_note = f", {args.thick} mm slices" + (", isotropic search" if args.isotropic else "")
    print(
        f"{args.model}, {args.passes} passes, search {args.search}{grid_note if args.thick > 1 else ''}: "
        "mean PSNR gain over the noisy input, dB"
    )
    for key, m in means.items():
        print(f"{key[0]} {key[1]}: network alone {m[0]:+.2f}")
        for stage, value in zip(grid, m[1:], strict=True):
            print(f"  h {stage.h:.2f} weight {stage.weight:.2f}: {value:+.2f} ({value - m[0]:+.2f})")
    overall = np.mean(list(means.values()), axis=0)
    best = int(np.argmax(overall[1:]))
    print(f"mean over the {len(means)} set/noise pairs: network alone {overall[0]:+.2f}")
    for stage, value in zip(grid, overall[1:], strict=True):
        print(f"  h {stage.h:.2f} weight {stage.weight:.2f}: {value:+.2f}")
    print(f"best: h {grid[best].h} weight {grid[best].weight} ({overall[1 + best] - overall[0]:+.2f} dB)")
    return {
        "network_db": float(overall[0]),
        "stage_db": {(s.h, s.weight): float(v) for s, v in zip(grid, overall[1:], strict=True)},
        "best": grid[best].to_dict(),
    }


if __name__ == "__main__":
    main()
