"""Real images with labels from disk, in their usual layouts (see docs/training.md).

IXI-style (task ixi / denoise):
    DIR/images/<ID>-<CONTRAST>.nii.gz     ID like IXI002-Guys-0828 (site = second field), CONTRAST T1|T2|PD
    DIR/labels/<ID>.nii.gz                0 background, 1 CSF, 2 GM, 3 WM, on the images' grid
BIDS-style ARC (task arc):
    DIR/sub-*/ses-*/anat/sub-*_ses-*_<T1w|T2w|FLAIR>.nii.gz
    DIR/derivatives/**/sub-*/ses-*/**/*lesion*mask*.nii.gz   (0/1 lesion mask on the image's grid)
Images are reoriented to RAS and resampled to 1 mm (labels with nearest neighbour).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from training.data import Subject

IXI_CONTRASTS = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}
ARC_CONTRASTS = ("T1w", "T2w", "FLAIR")
NIFTI = re.compile(r"\.nii(\.gz)?$")


def _stem(path: Path) -> str:
    return NIFTI.sub("", path.name)


def read_ras_1mm(path: Path, *, labels: bool = False) -> np.ndarray:
    """A NIfTI volume reoriented to RAS and resampled to 1 mm isotropic."""
    import nibabel as nib

    from seqinv.errors import InputError

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
    except Exception as err:  # nibabel raises many types for unreadable files
        raise InputError(f"cannot read {path}: {err}") from err
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path} has shape {data.shape}; expected a 3D volume")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if np.allclose(zooms, 1.0, atol=1e-3):
        return data
    from scipy.ndimage import zoom

    return zoom(data, zooms, order=0 if labels else 1).astype(np.float32)


def _check_same_grid(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    from seqinv.errors import InputError

    if image.shape != label.shape:
        raise InputError(
            f"{label_path} has shape {label.shape} after resampling but {image_path} has {image.shape}; "
            "labels must be on the image's grid (register them first)"
        )


def ixi_subjects(folder: Path, with_labels: bool = True) -> list[Subject]:
    from seqinv.errors import InputError

    images = sorted((folder / "images").glob("*.nii*"))
    if not images:
        raise InputError(f"no images in {folder / 'images'}; expected IXI-style <ID>-T1.nii.gz files")
    subjects = []
    for path in images:
        ident, _, suffix = _stem(path).rpartition("-")
        if suffix not in IXI_CONTRASTS:
            raise InputError(
                f"{path.name}: contrast suffix {suffix!r} is not one of {', '.join(IXI_CONTRASTS)}"
            )
        image = read_ras_1mm(path)
        label = None
        if with_labels:
            label_path = next(iter(sorted((folder / "labels").glob(f"{ident}.nii*"))), None)
            if label_path is None:
                raise InputError(f"no label map labels/{ident}.nii.gz for {path.name}")
            label_arr = read_ras_1mm(label_path, labels=True)
            _check_same_grid(image, label_arr, path, label_path)
            label = torch.as_tensor(np.rint(label_arr).astype(np.uint8))
        site = ident.split("-")[1] if ident.count("-") >= 1 else ""
        subjects.append(
            Subject(
                name=ident,
                image=torch.as_tensor(image),
                labels=label,
                contrast=IXI_CONTRASTS[suffix],
                site=site,
            )
        )
    return subjects


def arc_subjects(folder: Path) -> list[Subject]:
    from seqinv.errors import InputError

    subjects = []
    for anat in sorted(folder.glob("sub-*/ses-*/anat")):
        sub, ses = anat.parent.parent.name, anat.parent.name
        masks = sorted((folder / "derivatives").glob(f"**/{sub}/{ses}/**/*lesion*mask*.nii*"))
        if not masks:
            continue
        mask = read_ras_1mm(masks[0], labels=True)
        for contrast in ARC_CONTRASTS:
            for path in sorted(anat.glob(f"{sub}_{ses}*_{contrast}.nii*")):
                image = read_ras_1mm(path)
                _check_same_grid(image, mask, path, masks[0])
                subjects.append(
                    Subject(
                        name=f"{sub}_{ses}",
                        image=torch.as_tensor(image),
                        lesion=torch.as_tensor((mask > 0.5).astype(np.uint8)),
                        contrast=contrast,
                        site="ARC",
                    )
                )
    if not subjects:
        raise InputError(
            f"no ARC images with lesion masks under {folder}; expected sub-*/ses-*/anat/*_T1w.nii.gz and "
            "derivatives/.../sub-*/ses-*/.../*lesion*mask*.nii.gz"
        )
    return subjects


def load_folder(folder: str | Path, task: str) -> list[Subject]:
    from seqinv.errors import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist")
    return arc_subjects(folder) if task == "arc" else ixi_subjects(folder, with_labels=task == "ixi")


def load_cases(folder: str | Path, task: str):
    """Evaluation cases (whole volumes rescaled to [0, 1]) from an IXI- or ARC-style test folder."""
    from training.augment import percentile_rescale
    from training.evaluate import EvalCase

    cases = []
    for s in load_folder(folder, task):
        reference = s.lesion if task == "arc" else s.labels
        cases.append(EvalCase(s.name, s.contrast, s.site, percentile_rescale(s.image), reference))
    return cases
