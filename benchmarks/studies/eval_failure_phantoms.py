"""Held-out phantoms built to see what the real scans showed and the held-out phantom did not.

- `T1w-template`: an averaged template (spm152, CIT168) is close to one head blurred by the spread of
  its subjects' misregistration, and its tissue maps are the same blur of their labels. So the image is
  a held-out head's T1w blurred by a Gaussian of `--template-sigma-mm`, and the truth is the most likely
  class of the equally blurred labels (thin sulci that no longer show are not CSF).
- `PDw-TR2.7`: a short-TR proton-density scan (FSE, TR 2.7 s, TE 15 ms) whose CSF is as dark as white
  matter and a little darker than grey matter, as in the real `chris_PD`; `-2.4mm`: with its 2.4 mm
  axial slices.
- `T1w` and `PDw` (TR 5 s): the usual held-out protocols, for comparison.

Whole held-out heads (SynthSeg label maps 17 and 18, never trained on), 1 % Gaussian noise. Mean Dice %
of CSF, GM and WM over the whole grid, for the network alone and as `seqinv segment` runs it (refined).

    python benchmarks/studies/eval_failure_phantoms.py --model ixi --model runs/x   (needs $SEQINV_LABEL_MAPS)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

MAPS = (17, 18)
TEMPLATE_SIGMA_MM = 1.5
PROTOCOLS = ("T1w", "T1w-template", "PDw", "PDw-TR2.7", "PDw-TR2.7-2.4mm")


def protocol_image(phantom, name: str, sigma_mm: float) -> tuple[np.ndarray, torch.Tensor]:
    """(image, truth labels) of `phantom` under protocol `name`."""
    from scipy import ndimage

    from seqinv.physics import make_sequence
    from seqinv.physics.acquisition import thick_slices
    from training.evaluate import phantom_protocols
    from training.head_phantoms import whole_head_image

    if name.startswith("PDw-TR2.7"):
        sequence = make_sequence("fse", tr_s=2.7, te_s=0.015)
    else:
        sequence = phantom_protocols()[name.split("-")[0]]
    acquisition = thick_slices(2.4, 2, 0.0, 1.0) if name.endswith("2.4mm") else None
    image, labels = whole_head_image(phantom, 77, sequence=sequence, acquisition=acquisition)
    image = image.numpy()
    if name.endswith("template"):
        image = ndimage.gaussian_filter(image, sigma_mm)
        onehot = np.eye(4, dtype=np.float32)[labels.numpy().astype(np.int64)]
        blurred = [ndimage.gaussian_filter(onehot[..., c], sigma_mm) for c in range(4)]
        labels = torch.from_numpy(np.argmax(np.stack(blurred), axis=0))
    noise = np.random.default_rng(3).normal(0.0, 0.01, image.shape)
    return np.abs(image + noise).astype(np.float32), labels


def scores(model, volume, truth) -> tuple[float, float]:
    """(network alone, refined) mean Dice."""
    from seqinv.inference import InferenceSettings, segment_volume
    from seqinv.inference.refine import refine_probabilities
    from seqinv.metrics import mean_tissue_dice

    result = segment_volume(volume, model, InferenceSettings(), refine=False, probs=True)
    refined = result.probs.copy()
    refine_probabilities(volume.data, refined)
    return 100 * mean_tissue_dice(result.probs, truth), 100 * mean_tissue_dice(refined, truth)


def main(argv=None) -> None:
    from seqinv.io import Volume
    from seqinv.models.factory import load_model
    from seqinv.physics.anatomy import make_head_phantom
    from seqinv.physics.phantom import HELD_OUT_SEED

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="tissue model (name or folder); repeatable")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--template-sigma-mm", type=float, default=TEMPLATE_SIGMA_MM)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.model or ["ixi"]
    models = {name: load_model(name)[0] for name in names}
    table: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for number in MAPS:
        phantom = make_head_phantom(number, HELD_OUT_SEED, deform=True)
        affine = np.asarray(phantom.affine, dtype=float)
        for protocol in args.protocols.split(","):
            image, truth = protocol_image(phantom, protocol, args.template_sigma_mm)
            for name, model in models.items():
                net, refined = scores(model, Volume(image, affine), truth)
                print(
                    f"map {number} {protocol:16s} {name:24s} network {net:5.1f}  refined {refined:5.1f}",
                    flush=True,
                )
                table.setdefault((protocol, name), []).append((net, refined))
    print(f"\nmean over the held-out maps {MAPS} (mean Dice %: network alone / refined)")
    for (protocol, name), rows in table.items():
        net, refined = np.mean(rows, axis=0)
        print(f"{protocol:16s} {name:24s} {net:5.1f} / {refined:5.1f}")


if __name__ == "__main__":
    main()
