"""Tissue models on whole-head phantoms of the development or the test label maps, as `seqinv segment`
runs them.

`--set dev` (label maps 15 and 16, `DEVELOPMENT_SEED`) is what checkpoints and parameters are chosen
on; `--set test` (maps 17 and 18, `HELD_OUT_SEED`) only measures. Each head is deformed once and shown
under fixed protocols: T1w, T2w, PDw with a short TR (CSF as dark as WM, like a real PDw), FLAIR, a
T1w blurred like an averaged template (its truth the equally blurred labels), T2w with 5 mm slices, a
random contrast (SynthSeg's mixture, one draw) and the T1w at 1.6 mm isotropic down to the neck. 1 %
Gaussian noise. The truth follows the CSF convention (training/synth.py): label 24 is CSF within
`--rim-mm` (the generator's default) of GM or WM.

Per protocol: mean Dice % of CSF, GM and WM over the whole grid (network with the clean-up, and refined
as `seqinv segment` runs it), and the share of labelled voxels more than 5 mm outside the true brain.

    python benchmarks/eval_heads.py --set dev --model ixi --model runs/x    (needs $SEQINV_LABEL_MAPS)
    python benchmarks/eval_heads.py --set test --invariance 10 --model ixi  (the set's first head under 10
        random and 10 physics contrasts: mean pairwise agreement, mean CSF/GM/WM Dice %)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

PROTOCOLS = ("T1w", "T2w", "PDw-TR2.7", "FLAIR", "T1w-template", "T2w-5mm", "random", "T1w-1.6mm")
SETS = {"dev": "DEVELOPMENT", "test": "TEST"}
TEMPLATE_SIGMA_MM = 1.5


def heads(which: str):
    """[(name, phantom)] of the set's label maps, deformed once by the set's seed."""
    from seqinv.physics import anatomy as anat
    from seqinv.physics import phantom as ph

    maps = anat.DEVELOPMENT_MAPS if which == "dev" else anat.TEST_MAPS
    seed = ph.DEVELOPMENT_SEED if which == "dev" else ph.HELD_OUT_SEED
    return [(f"map{n:02d}", anat.make_head_phantom(n, seed, deform=True)) for n in maps]


def truth_of(phantom, rim_mm: float) -> torch.Tensor:
    from training.synth import targets

    values = phantom.values
    return targets(
        torch.as_tensor(values["kinds"]),
        torch.as_tensor(values["classes"]),
        torch.as_tensor(values["parenchyma_distance"]),
        rim_mm,
    )


def protocol(phantom, name: str, seed: int, rim_mm: float):
    """(image, truth, voxel_mm) of `phantom` under protocol `name` (the image on the phantom's grid,
    except `T1w-1.6mm`: on a 1.6 mm grid, with its truth resampled by nearest neighbour)."""
    from scipy import ndimage

    from seqinv.physics import make_sequence
    from seqinv.physics.acquisition import thick_slices
    from training.evaluate import phantom_protocols
    from training.head_phantoms import whole_head_image

    truth = truth_of(phantom, rim_mm)
    if name == "random":
        from training.synth import SynthPrior, mixture_image

        gen = torch.Generator().manual_seed(seed)
        image, _ = mixture_image(torch.as_tensor(phantom.values["classes"]), gen, SynthPrior())
        image = ndimage.gaussian_filter(image.numpy(), 0.5)
    else:
        sequences = phantom_protocols() | {"PDw-TR2.7": make_sequence("fse", tr_s=2.7, te_s=0.015)}
        sequence = sequences[name if name == "PDw-TR2.7" else name.split("-")[0]]
        acquisition = thick_slices(5.0, 2, 0.0, 1.0) if name.endswith("5mm") else None
        image, _ = whole_head_image(phantom, seed, sequence=sequence, acquisition=acquisition)
        image = image.numpy()
    voxel_mm = 1.0
    if name.endswith("template"):
        image = ndimage.gaussian_filter(image, TEMPLATE_SIGMA_MM)
        onehot = np.eye(4, dtype=np.float32)[truth.numpy().astype(np.int64)]
        blurred = [ndimage.gaussian_filter(onehot[..., c], TEMPLATE_SIGMA_MM) for c in range(4)]
        truth = torch.from_numpy(np.argmax(np.stack(blurred), 0))
    if name.endswith("1.6mm"):
        voxel_mm = 1.6
        image = ndimage.zoom(ndimage.gaussian_filter(image, 0.6), 1 / voxel_mm, order=1)
        truth = torch.from_numpy(ndimage.zoom(truth.numpy(), 1 / voxel_mm, order=0))
    noise = np.random.default_rng(seed).normal(0.0, 0.01, image.shape)
    return np.abs(image + noise).astype(np.float32), truth, voxel_mm


def outside_share(labels: np.ndarray, truth: torch.Tensor, voxel_mm: float, margin_mm: float = 5.0) -> float:
    """Share of labelled voxels more than `margin_mm` from the true brain."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(truth.numpy() == 0, sampling=voxel_mm)
    labelled = labels > 0
    return float((labelled & (distance > margin_mm)).sum()) / max(1, int(labelled.sum()))


def scores(model, image, truth, voxel_mm: float) -> dict:
    from seqinv.inference import InferenceSettings, segment_volume
    from seqinv.inference.refine import refine_probabilities
    from seqinv.io import Volume
    from seqinv.metrics import mean_tissue_dice

    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    volume = Volume(image, affine)
    result = segment_volume(volume, model, InferenceSettings(), refine=False, probs=True)
    refined = result.probs.copy()
    refine_probabilities(volume.data, refined)
    return {
        "network": round(100 * mean_tissue_dice(result.probs, truth), 1),
        "refined": round(100 * mean_tissue_dice(refined, truth), 1),
        "outside_pct": round(100 * outside_share(np.argmax(refined, 0), truth, voxel_mm), 2),
    }


def contrast_images(phantom, count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """`count` random mixture contrasts and `count` physics sequences from the training priors, 1 mm,
    1 % noise: the images of the invariance measure."""
    from scipy import ndimage

    from seqinv.physics.priors import draw_sequence
    from training.head_phantoms import whole_head_image
    from training.synth import SynthPrior, mixture_image

    gen = torch.Generator().manual_seed(seed)
    classes = torch.as_tensor(phantom.values["classes"])
    images = []
    for k in range(count):
        image, _ = mixture_image(classes, gen, SynthPrior())
        images.append((f"mixture{k}", ndimage.gaussian_filter(image.numpy(), 0.5)))
    for k in range(count):
        sequence = draw_sequence(gen)
        image, _ = whole_head_image(phantom, seed + k, sequence=sequence)
        images.append((f"{sequence.name}{k}", image.numpy()))
    rng = np.random.default_rng(seed)
    return [(n, np.abs(im + rng.normal(0.0, 0.01, im.shape)).astype(np.float32)) for n, im in images]


def agreement(labels: list[np.ndarray]) -> float:
    """Mean over pairs of label maps of their mean CSF/GM/WM Dice (the first as reference, symmetric)."""
    from seqinv.metrics import dice_per_class

    names = ["background", "csf", "gm", "wm"]
    scores = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            dice = dice_per_class(torch.from_numpy(labels[i]), torch.from_numpy(labels[j]), names)
            scores.append(np.mean([dice["csf"], dice["gm"], dice["wm"]]))
    return float(np.mean(scores))


def invariance(models, phantom, count: int, seed: int = 5) -> dict:
    """Per model: mean pairwise agreement of its labels (as `seqinv segment` runs it) over the contrasts."""
    from seqinv.inference import InferenceSettings, segment_volume
    from seqinv.io import Volume

    images = contrast_images(phantom, count, seed)
    out = {}
    for label, model in models:
        maps = [segment_volume(Volume(im, np.eye(4)), model, InferenceSettings()).labels for _, im in images]
        out[label] = round(100 * agreement(maps), 1)
    return out


def main(argv=None) -> None:
    from seqinv.models.factory import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=tuple(SETS), required=True, help="dev chooses; test only measures")
    parser.add_argument("--model", action="append", help="tissue model (name or folder); repeatable")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rim-mm", type=float, default=None, help="CSF rim of the truth (default: the generator's)"
    )
    parser.add_argument(
        "--invariance", type=int, default=0, help="N random + N physics contrasts of the set's first head"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rim_mm is None:
        from training.synth import SynthPrior

        args.rim_mm = SynthPrior().csf_rim_mm
    models = [(name, load_model(name)[0]) for name in (args.model or ["ixi"])]
    protocols = [p for p in args.protocols.split(",") if p]
    if args.invariance:
        head, phantom = heads(args.set)[0]
        agreement_pct = invariance(models, phantom, args.invariance)
        print(json.dumps({"set": args.set, "head": head, "invariance_pct": agreement_pct}), flush=True)
        return
    rows = []
    for head, phantom in heads(args.set):
        for k, name in enumerate(protocols):
            image, truth, voxel_mm = protocol(phantom, name, 77 + k, args.rim_mm)
            for label, model in models:
                row = {"set": args.set, "head": head, "protocol": name, "model": label, "rim_mm": args.rim_mm}
                row |= scores(model, image, truth, voxel_mm)
                print(json.dumps(row), flush=True)
                rows.append(row)
    for label, _ in models:
        mine = [r for r in rows if r["model"] == label]
        summary = {k: round(float(np.mean([r[k] for r in mine])), 1) for k in ("network", "refined")}
        summary["outside_pct_max"] = max(r["outside_pct"] for r in mine)
        print(json.dumps({"set": args.set, "model": label, "mean": summary}))


if __name__ == "__main__":
    main()
