"""Helpers of `seqinv simulate` for whole-head phantoms, thick-slice acquisitions and random contrast."""

from __future__ import annotations

from pathlib import Path

from seqinv.errors import ParameterError

AXES = {"x": 0, "y": 1, "z": 2, "sag": 0, "cor": 1, "ax": 2, "0": 0, "1": 1, "2": 2}
CONTRASTS = ("physics", "random")


def acquisition_from_options(
    slice_mm: float, slice_axis: str, gap_mm: float, inplane_mm: float, profile: str
):
    """An `Acquisition` (None for the plain 1 mm image) from the CLI options."""
    from seqinv.physics.acquisition import thick_slices

    if slice_mm < 0 or gap_mm < 0 or inplane_mm <= 0:
        raise ParameterError(
            f"--slice-mm {slice_mm}, --gap-mm {gap_mm}, --inplane-mm {inplane_mm}: need >= 0, >= 0, > 0"
        )
    axis = AXES.get(str(slice_axis).lower())
    if axis is None:
        raise ParameterError(f"--slice-axis {slice_axis!r}: use x|y|z (RAS voxel axes) or sag|cor|ax")
    if slice_mm <= 1.0 and inplane_mm <= 1.0 and gap_mm == 0:
        return None
    return thick_slices(max(slice_mm, 1.0), axis, gap_mm, inplane_mm, profile=profile)


def head_phantom(label_map: str, label_maps: str | None, seed: int):
    """(maps, labels, kinds, record) of a whole-head SynthSeg phantom."""
    from seqinv.physics.anatomy import make_head_phantom

    phantom = make_head_phantom(label_map, seed, folder=label_maps or None)
    record = {
        "label_map": str(label_map),
        "phantom_seed": seed,
        "deformation": phantom.values["deformation"],
        "pv_sigma_vox": phantom.values["pv_sigma_vox"],
    }
    return phantom, record


def random_contrast_image(phantom, seed: int):
    """Random per-kind intensities (in [0, 1]) of a head phantom, as the training's random-contrast mode."""
    import torch

    from seqinv.physics.anatomy import kinds_to_random_image, random_intensities

    gen = torch.Generator().manual_seed(int(seed))
    kinds = torch.as_tensor(phantom.values["kinds"])
    return kinds_to_random_image(kinds, random_intensities(gen), gen, phantom.values["pv_sigma_vox"])


def write_labels(folder: Path, phantom) -> Path:
    from seqinv.io import write_volume

    path = folder / "phantom_labels.nii.gz"
    write_volume(path, phantom.labels, phantom.affine, dtype="uint8")
    return path
