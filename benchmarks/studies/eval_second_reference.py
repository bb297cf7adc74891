"""A second classical tissue reference on the benchmark's sharp T1w scans: how far apart two references are.

    python benchmarks/studies/eval_second_reference.py [--model ixi] [--real ../shared/data/real-scans]
        [--threads 2]

`benchmarks/eval_real.py` scores tissue against ANTs Atropos initialised by k-means (3 classes, MRF 0.2),
which agrees with a plain k-means by construction. This script adds Atropos initialised and guided by
SPM12's tissue probability map (`../shared/data/anatomy/spm12_tpm_6class.nii.gz`, GPL-2; CSF, GM and
WM channels, prior weight 0.25, the same MRF): the map is brought onto each scan by a SyN registration of
nilearn's ICBM152 2009a T1w template (the map's MNI space) to the N4-corrected brain. A reference only, as
the other one; the scans are never trained or tuned on. Prints, per scan, the mean CSF/GM/WM Dice of the
model (whole grid and inside the reference mask) and of the k-means-initialised Atropos against the
prior-guided one, and the three volumes by each. Masks and the first reference come from eval_real's
cache (run it first); the prior-guided labels are cached beside them (`atropos_tpm`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TPM = ROOT.parent / "shared" / "data" / "anatomy" / "spm12_tpm_6class.nii.gz"
TPM_CHANNELS = (2, 0, 1)  # CSF, GM, WM in the map's channel order (GM, WM, CSF, bone, soft tissue, air)
PRIOR_WEIGHT = 0.25


def template_priors():
    """(ICBM152 2009a T1w template, [CSF, GM, WM] maps of SPM12's TPM) as ANTs images in MNI space."""
    import nibabel as nib
    import nilearn

    from training.realbench.references import to_ants

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    t1 = nib.load(str(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    tpm = nib.load(str(TPM))
    maps = tpm.get_fdata(dtype=np.float32)
    return to_ants(t1.get_fdata(dtype=np.float32), t1.affine), [
        to_ants(maps[..., c], tpm.affine) for c in TPM_CHANNELS
    ]


def prior_guided_labels(data: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Atropos with the registered TPM as priors: 1 CSF, 2 GM, 3 WM inside `mask`, 0 outside."""
    import ants

    from training.realbench.references import to_ants

    template, maps = template_priors()
    image, ants_mask = to_ants(data, affine), to_ants(mask.astype(np.float32), affine)
    corrected = ants.n4_bias_field_correction(image, mask=ants_mask)
    reg = ants.registration(fixed=corrected * ants_mask, moving=template, type_of_transform="SyN")
    moved = [ants.apply_transforms(fixed=image, moving=m, transformlist=reg["fwdtransforms"]) for m in maps]
    stack = np.stack([m.numpy() for m in moved])
    stack = np.where(mask, stack / np.maximum(stack.sum(0), 1e-3), 0.0)  # the three classes sum to 1
    priors = [to_ants(p, affine) for p in stack]
    seg = ants.atropos(
        a=corrected, x=ants_mask, i=priors, m="[0.2,1x1x1]", c="[5,0]", priorweight=PRIOR_WEIGHT
    )
    return np.where(mask, seg["segmentation"].numpy(), 0).astype(np.uint8)


def mean_dice(a: np.ndarray, b: np.ndarray) -> tuple[list[float], float]:
    """Dice % of CSF, GM and WM and their mean (seqinv.metrics)."""
    from seqinv.metrics import TISSUE_CLASSES, dice_per_class

    per = [100.0 * d for d in dice_per_class(a, b, ("background", *TISSUE_CLASSES)).values()]
    return per, float(np.mean(per))


def volumes_ml(labels: np.ndarray, voxel_ml: float) -> list[float]:
    return [float((labels == k).sum()) * voxel_ml for k in (1, 2, 3)]


def main(argv=None) -> list[dict]:
    import torch

    from seqinv.inference import InferenceSettings, load_task_model, segment_volume
    from training.realbench.references import default_cache_dir
    from training.realbench.run import build_references, find_scans

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ixi")
    p.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real-scans"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(args.threads))
    scans = {k: s for k, s in find_scans(Path(args.real), default_cache_dir()).items() if s.spec.tissue}
    build_references(scans)
    model, _ = load_task_model("ixi", args.model)
    settings = InferenceSettings(device="cpu", threads=args.threads)
    rows = []
    for name, scan in scans.items():
        v, mask = scan.volume, scan.mask
        second = scan.cache.array("atropos_tpm", lambda v=v, m=mask: prior_guided_labels(v.data, v.affine, m))
        labels = segment_volume(v, model, settings).labels
        row = {"scan": name, "model": args.model}
        for who, lab in (
            ("model", labels),
            ("model in mask", np.where(mask, labels, 0)),
            ("atropos-kmeans", scan.tissue),
        ):
            per, mean = mean_dice(lab, second)
            row[who] = {
                "csf": round(per[0], 1),
                "gm": round(per[1], 1),
                "wm": round(per[2], 1),
                "mean": round(mean, 1),
            }
        for who, lab in (
            ("atropos-tpm", second),
            ("atropos-kmeans", scan.tissue),
            ("model in mask", np.where(mask, labels, 0)),
        ):
            row[f"{who} mL"] = [round(x) for x in volumes_ml(lab, v.voxel_ml)]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
