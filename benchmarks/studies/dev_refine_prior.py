"""Choose the refinement's prior weight on development phantoms: whole heads of the development label maps
(`DEVELOPMENT_MAPS` 15/16, `DEVELOPMENT_SEED`; never the test maps 17/18 nor the real scans:
seqinv/physics/sets.py), with 2 % Gaussian noise; mean Dice of CSF, GM and WM for the network alone and
for each prior weight of `seqinv.inference.refine`.

    python benchmarks/studies/dev_refine_prior.py --model ixi      (needs $SEQINV_LABEL_MAPS)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from seqinv.metrics import mean_tissue_dice as mean_dice
from seqinv.physics.sets import DEVELOPMENT_MAPS, DEVELOPMENT_SEED, refuse_test

PROTOCOLS = ("T1w", "T2w", "PDw", "FLAIR", "T2w-5mm")
DEV_MAPS = DEVELOPMENT_MAPS
DEV_SEED = DEVELOPMENT_SEED


def dev_cases(maps=DEV_MAPS):
    """(map, protocol, volume, labels) of the development heads."""
    from seqinv.io import Volume
    from seqinv.physics.acquisition import thick_slices
    from seqinv.physics.anatomy import make_head_phantom
    from training.evaluate import phantom_protocols
    from training.head_phantoms import whole_head_image

    refuse_test("choose the prior weight", maps=maps, seeds=[DEV_SEED])
    sequences = phantom_protocols()
    for number in maps:
        phantom = make_head_phantom(number, DEV_SEED, deform=True)
        for i, name in enumerate(PROTOCOLS):
            acq = thick_slices(5.0, 2, 1.0, 0.9) if name.endswith("5mm") else None
            sequence = sequences[name.split("-")[0]]
            image, labels = whole_head_image(phantom, 900 + i, sequence=sequence, acquisition=acq)
            noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(i))
            data = np.ascontiguousarray((image + 0.02 * noise).abs().numpy().astype(np.float32))
            yield number, name, Volume(data, np.asarray(phantom.affine, dtype=float)), labels


def main(argv=None) -> None:
    from seqinv.inference import InferenceSettings, segment_volume
    from seqinv.inference.refine import refine_probabilities
    from seqinv.models.factory import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ixi")
    parser.add_argument("--weights", default="1.0,0.7,0.5")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    weights = [float(w) for w in args.weights.split(",")]
    scores: dict[tuple[str, str], list[float]] = {}
    for number, name, volume, labels in dev_cases():
        result = segment_volume(volume, model, InferenceSettings(overlap=0.5), refine=False, probs=True)
        row = {"network": mean_dice(result.probs, labels)}
        for w in weights:
            probs = result.probs.copy()
            refine_probabilities(volume.data, probs, prior_weight=w)
            row[f"prior {w:g}"] = mean_dice(probs, labels)
        cells = "  ".join(f"{k} {100 * v:.1f}" for k, v in row.items())
        print(f"map {number:02d} {name:8s} {cells}", flush=True)
        for k, v in row.items():
            scores.setdefault((name, k), []).append(v)
    print("\nmean Dice % over the development maps", DEV_MAPS)
    for (name, k), v in scores.items():
        print(f"{name:8s} {k:10s} {100 * np.mean(v):.1f}")


if __name__ == "__main__":
    main()
