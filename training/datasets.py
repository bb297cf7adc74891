"""Real images with labels from disk, in their usual layouts (see docs/training.md).

Which layout a task reads is its `read_folder` (training/task_ops.py `load_folder`).

IXI-style (task ixi / denoise):
    DIR/images/<ID>-<CONTRAST>.nii.gz     ID like IXI002-Guys-0828 (site = second field), CONTRAST T1|T2|PD
    DIR/labels/<ID>.nii.gz                0 background, 1 CSF, 2 GM, 3 WM, on the images' grid
BIDS-style ARC (task arc):
    DIR/sub-*/ses-*/anat/sub-*_ses-*_<T1w|T2w|FLAIR>.nii.gz
    DIR/derivatives/**/sub-*/ses-*/**/*lesion*mask*.nii.gz   (0/1 lesion mask on the image's grid)
Volumes are read with `seqinv.io.read_volume` and brought to the 1 mm RAS grid of `seqinv.preprocess` (as at
inference); labels follow their image by their affines (nearest neighbour).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from training.subjects import Subject

IXI_CONTRASTS = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}
ARC_CONTRASTS = ("T1w", "T2w", "FLAIR")
NIFTI = re.compile(r"\.nii(\.gz)?$")


def _stem(path: Path) -> str:
    return NIFTI.sub("", path.name)


def read_ras_1mm(path: Path):
    """A volume (any format `seqinv.io.read_volume` reads) on the 1 mm RAS grid of `seqinv.preprocess`.

    Returns (float32 array, record); `record.grid_affine` is the array's voxel → RAS mm affine. Axis-aligned
    1 mm inputs are only reoriented (exact); others are resampled trilinearly, as at inference.
    """
    from seqinv.io import read_volume
    from seqinv.preprocess import Preprocessor

    grid, record = Preprocessor(None, crop=False).to_grid(read_volume(path))  # None: 1 mm, no crop
    return grid.astype(np.float32, copy=False), record


def read_labels_on(path: Path, record, image_path: Path) -> np.ndarray:
    """A label map brought onto an image's 1 mm RAS grid (`record` from `read_ras_1mm`) by its own affine.

    Same grid as the image: exact reorientation. Otherwise nearest-neighbour resampling through world
    coordinates, so labels never mix classes.
    """
    import nibabel.orientations as nio
    from scipy.ndimage import affine_transform

    from seqinv.errors import InputError
    from seqinv.io import read_volume

    labels = read_volume(path)
    same_grid = labels.shape == tuple(record.input_shape) and np.allclose(
        labels.affine, record.input_affine, atol=1e-3
    )
    if same_grid and not record.resampled:
        return np.ascontiguousarray(nio.apply_orientation(labels.data, record.ornt))
    matrix = np.linalg.inv(labels.affine) @ record.grid_affine  # grid voxel -> label voxel
    grid = affine_transform(labels.data, matrix, output_shape=record.grid_shape, order=0, cval=0.0)
    if labels.data.any() and not grid.any():
        raise InputError(
            f"{path} does not overlap {image_path} in scanner space (check both affines); "
            "labels must be on, or registered to, the image"
        )
    return grid


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
        image, record = read_ras_1mm(path)
        label = None
        if with_labels:
            label_path = next(iter(sorted((folder / "labels").glob(f"{ident}.nii*"))), None)
            if label_path is None:
                raise InputError(f"no label map labels/{ident}.nii.gz for {path.name}")
            label_arr = read_labels_on(label_path, record, path)
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
        for contrast in ARC_CONTRASTS:
            for path in sorted(anat.glob(f"{sub}_{ses}*_{contrast}.nii*")):
                image, record = read_ras_1mm(path)
                mask = read_labels_on(masks[0], record, path)
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
