"""Tissue Dice of the `ixi` model on a real image: the ICBM152 2009 T1w template, or your own scan + labels.

    python benchmarks/eval_icbm152.py [--model ixi] [--crop 0] [--fast] [--csv FILE]
    python benchmarks/eval_icbm152.py --model ixi --image sub-01_T1w.nii.gz --labels sub-01_dseg.nii.gz

Template mode segments nilearn's ICBM152 2009 T1w template (`load_mni152_template(resolution=1)`: the
average of 152 real scans, **skull-stripped**, 1 mm) through `seqinv.inference.segment_volume` (exactly what
`seqinv segment --task ixi` runs) and scores it against hard labels made from the template's own tissue maps:
GM = `load_mni152_gm_template`, WM = `load_mni152_wm_template`, brain mask = `load_mni152_brain_mask`
(all `resolution=1`, masked), CSF = clip(mask − GM − WM, 0, 1). Two reference rules, both printed:
  - "argmax": inside the brain mask, the class with the largest probability (ties: WM over GM, CSF only when
    strictly largest); outside the mask, background. This is exactly how the training phantoms are labelled
    (`seqinv.physics.phantom.make_phantom`), so it is the rule the model was taught.
  - "p≥0.5": the same, but voxels whose largest tissue probability is below 0.5 are background too.
Caveat: the phantoms are built from these same GM/WM maps, so the labels are not independent of the training
data; the image, though, is real MRI (a smooth average, not a single scan).

`--image FILE --labels FILE` scores any scan against a label map on the same grid (0 background, 1 CSF,
2 GM, 3 WM). Metrics: Dice per class (percent), HD95 in mm (MONAI), and the class volumes in mL.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import torch

from seqinv.errors import InputError, SeqInvError

CLASSES = ("CSF", "GM", "WM")  # labels 1, 2, 3


# ------------------------------------------------------------------------------------------------ reference
def reference_labels(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, min_prob: float = 0.0) -> np.ndarray:
    """uint8 labels (0 bg, 1 CSF, 2 GM, 3 WM) from tissue probability maps, as the phantoms are labelled;
    voxels whose largest tissue probability is below `min_prob` are background."""
    mask = np.asarray(mask) > 0
    gm, wm = np.where(mask, gm, 0.0), np.where(mask, wm, 0.0)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    gm_or_wm = np.where(wm >= gm, 3, 2)
    best = np.where(csf > np.maximum(gm, wm), 1, gm_or_wm)
    keep = mask & (np.maximum(csf, np.maximum(gm, wm)) >= min_prob)
    return np.where(keep, best, 0).astype(np.uint8)


def load_template(crop: int):
    """(T1w Volume, {rule: reference labels}) of the ICBM152 template; `crop` > 0 keeps a crop³ around the
    brain's centre (quick checks)."""
    from nilearn import datasets

    from seqinv.io import Volume

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    image, affine = t1.get_fdata(dtype=np.float32), t1.affine.astype(np.float64)
    if crop > 0:
        centre = np.round(np.argwhere(mask > 0).mean(0)).astype(int)
        starts = [max(0, c - crop // 2) for c in centre]
        box = tuple(slice(s, s + crop) for s in starts)
        image, gm, wm, mask = image[box], gm[box], wm[box], mask[box]
        affine = affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.array(starts, dtype=np.float64)
    references = {
        "argmax": reference_labels(gm, wm, mask, 0.0),
        "p≥0.5": reference_labels(gm, wm, mask, 0.5),
    }
    return Volume(data=np.ascontiguousarray(image), affine=affine), references


def load_user_case(image_path: str, labels_path: str):
    from seqinv.io import read_volume

    image, labels = read_volume(image_path), read_volume(labels_path)
    if image.shape != labels.shape or not np.allclose(image.affine, labels.affine, atol=1e-3):
        raise InputError(
            f"--labels {labels_path} has shape {labels.shape} and a different affine from --image "
            f"{image_path} {image.shape}; resample the labels onto the image's grid (nearest neighbour)"
        )
    values = np.rint(labels.data).astype(np.int64)
    found = sorted(int(v) for v in np.unique(values))
    if min(found) < 0 or max(found) > len(CLASSES):
        raise InputError(
            f"--labels {labels_path} holds values {found[:10]}; expected 0 background, 1 CSF, 2 GM, 3 WM"
        )
    return image, {"given": values.astype(np.uint8)}


# ------------------------------------------------------------------------------------------------ scoring
def score(pred: np.ndarray, reference: np.ndarray, voxel_ml: float, spacing_mm, hd95: bool) -> list[dict]:
    """Per class: Dice, HD95 (mm), reference and predicted volume (mL); the metrics of seqinv.metrics."""
    from seqinv.metrics import dice_per_class, hd95_per_class

    names = ["background", *CLASSES]
    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(reference.astype(np.int64))
    dice = dice_per_class(p, t, names)
    distances = hd95_per_class(p, t, names, spacing_mm) if hd95 else {}
    return [
        {
            "class": name,
            "dice": dice[name],
            "hd95_mm": distances.get(name, float("nan")),
            "ref_ml": float((reference == c).sum()) * voxel_ml,
            "pred_ml": float((pred == c).sum()) * voxel_ml,
        }
        for c, name in enumerate(CLASSES, start=1)
    ]


def evaluate(volume, references: dict, model, settings, hd95: bool) -> tuple[dict[str, list[dict]], float]:
    from seqinv.inference import segment_volume

    result = segment_volume(volume, model, settings)
    spacing = tuple(float(s) for s in volume.voxel_mm)
    table = {
        rule: score(result.labels, ref, volume.voxel_ml, spacing, hd95 and i == 0)
        for i, (rule, ref) in enumerate(references.items())
    }
    return table, float(sum(result.info.timings_s.values()))


def markdown(table: dict[str, list[dict]]) -> str:
    rules = list(table)
    first = table[rules[0]]
    header = "| class | " + " | ".join(f"Dice % ({r})" for r in rules) + " | HD95 mm | ref mL | pred mL |"
    lines = [header, "|---|" + "---:|" * (len(rules) + 3)]
    for i, row in enumerate([*first, None]):
        if row is None:  # the mean over classes
            dices = [np.mean([r["dice"] for r in table[rule]]) for rule in rules]
            lines.append("| mean | " + " | ".join(f"{100 * d:.1f}" for d in dices) + " | | | |")
            break
        dices = " | ".join(f"{100 * table[r][i]['dice']:.1f}" for r in rules)
        hd = "-" if np.isnan(row["hd95_mm"]) else f"{row['hd95_mm']:.2f}"
        lines.append(f"| {row['class']} | {dices} | {hd} | {row['ref_ml']:.1f} | {row['pred_ml']:.1f} |")
    return "\n".join(lines) + "\n"


def write_csv(table: dict[str, list[dict]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["rule", "class", "dice", "hd95_mm", "ref_ml", "pred_ml"])
        writer.writeheader()
        for rule, rows in table.items():
            writer.writerows({"rule": rule, **r} for r in rows)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None):
    from seqinv.errors import ParameterError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ixi", help="ixi model: published name (e.g. ixi@1.0) or folder")
    p.add_argument("--image", default=None, help="your own scan (instead of the ICBM152 template)")
    p.add_argument("--labels", default=None, help="its label map: 0 bg, 1 CSF, 2 GM, 3 WM, same grid")
    p.add_argument("--crop", type=int, default=0, help="template only: crop³ around the brain (quick runs)")
    p.add_argument("--fast", action="store_true", help="seqinv --fast (overlap 0.25)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-hd95", dest="hd95", action="store_false")
    p.add_argument("--csv", type=Path, default=None)
    args = p.parse_args(argv)
    if (args.image is None) != (args.labels is None):
        raise ParameterError("give --image and --labels together (or neither, for the ICBM152 template)")
    if args.crop < 0:
        raise ParameterError(f"--crop {args.crop} must be >= 0 (0 = the whole template)")
    return args


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    from seqinv.inference import InferenceSettings, load_task_model

    args = parse_args(argv)
    model, source = load_task_model("ixi", args.model)
    make = InferenceSettings.fast if args.fast else InferenceSettings
    settings = make(device=args.device, tta=args.tta, threads=args.threads)
    if args.image:
        volume, references = load_user_case(args.image, args.labels)
        what = f"{args.image} against {args.labels}"
    else:
        volume, references = load_template(args.crop)
        what = "ICBM152 2009 T1w template (nilearn, skull-stripped) against its GM/WM/CSF maps"
    table, seconds = evaluate(volume, references, model, settings, args.hd95)
    shape = "×".join(str(n) for n in volume.shape)
    print(f"Tissue segmentation: {what}; {shape} voxels; {source.describe()}; {seconds:.1f} s\n")
    print(markdown(table))
    if args.csv:
        write_csv(table, args.csv)
    return table


if __name__ == "__main__":
    try:
        main()
    except SeqInvError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
