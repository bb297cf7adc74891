"""Whole-head qMRI phantoms from SynthSeg's 18 label maps of real heads (Billot et al. 2023, Apache-2.0).

A label map (FreeSurfer labels, 1 mm) is grouped once into tissue *kinds* (`FS_LABELS`), with three
distance maps for atrophy and the skull's diploë (`prepare_anatomy`). Every phantom or training sample is
then a new virtual subject: a random affine (rotation, head size ±15 %, shear, left-right flip), a large
smooth displacement, random atrophy (ventricles and sulci widened by up to a few mm), per-kind qMRI values
drawn from `KIND_VALUES`, within-tissue texture and partial volume at borders (`render`). Only the brain gets
seqinv tissue classes (`KIND_CLASS`); neck, face, skull and everything else is background (0).

The tables and the grouping are documented in docs/physics.md ("Whole-head phantoms").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqinv.errors import InputError, ParameterError
from seqinv.physics.maps import QMRIMaps

ANATOMY_VERSION = 2  # bump when grouping or distance maps change (keys the on-disk cache)
LABEL_MAPS_ENV = "SEQINV_LABEL_MAPS"
N_MAPS = 18
# The sets (with the phantom seeds in seqinv/physics/phantom.py; `seqinv.physics.sets.refuse_test` keeps
# them apart): test maps measure only; development maps choose checkpoints, parameters and stages; fitting
# maps train. Models up to ixi 1.2 trained on 1-16 (`TRAINING_MAPS`, kept for replay).
TEST_MAPS = (17, 18)
HELD_OUT_MAPS = TEST_MAPS
DEVELOPMENT_MAPS = (15, 16)
TRAINING_MAPS = tuple(i for i in range(1, N_MAPS + 1) if i not in TEST_MAPS)
FIT_MAPS = tuple(i for i in TRAINING_MAPS if i not in DEVELOPMENT_MAPS)
PARAMS = ("pd", "r1", "r2s", "mt", "r2")

# Per-subject uniform ranges at 3 T (pd p.u., r1 1/s, r2s 1/s, mt p.u., r2 1/s). Brain: docs/physics.md
# and literature values for each nucleus (R2* rises with iron: pallidum > putamen > caudate > thalamus).
KIND_VALUES: dict[str, dict[str, tuple[float, float]]] = {
    "air": dict(pd=(0, 0), r1=(1, 1), r2s=(30, 30), mt=(0, 0), r2=(20, 20)),
    "csf": dict(pd=(95, 100), r1=(0.22, 0.28), r2s=(1, 5), mt=(0.0, 0.2), r2=(0.5, 1.0)),
    "cortex": dict(pd=(78, 85), r1=(0.55, 0.70), r2s=(14, 18), mt=(0.7, 1.0), r2=(10, 12)),
    "wm": dict(pd=(66, 72), r1=(0.90, 1.20), r2s=(18, 25), mt=(1.4, 2.0), r2=(12, 14)),
    "cerebellar_cortex": dict(pd=(80, 86), r1=(0.60, 0.72), r2s=(15, 19), mt=(0.7, 1.0), r2=(10, 12)),
    "cerebellar_wm": dict(pd=(67, 72), r1=(0.85, 1.10), r2s=(18, 24), mt=(1.3, 1.9), r2=(12, 14)),
    "brainstem": dict(pd=(68, 75), r1=(0.80, 1.00), r2s=(18, 26), mt=(1.2, 1.8), r2=(11, 14)),
    "thalamus": dict(pd=(72, 78), r1=(0.75, 0.90), r2s=(19, 24), mt=(1.0, 1.4), r2=(12, 14)),
    "caudate": dict(pd=(76, 82), r1=(0.65, 0.78), r2s=(22, 30), mt=(0.8, 1.1), r2=(12, 15)),
    "putamen": dict(pd=(75, 81), r1=(0.68, 0.82), r2s=(26, 38), mt=(0.8, 1.2), r2=(13, 17)),
    "pallidum": dict(pd=(70, 77), r1=(0.85, 1.05), r2s=(35, 55), mt=(1.0, 1.5), r2=(15, 22)),
    "hippocampus": dict(pd=(80, 87), r1=(0.55, 0.68), r2s=(14, 18), mt=(0.6, 0.9), r2=(9, 11)),
    "amygdala": dict(pd=(79, 86), r1=(0.58, 0.70), r2s=(15, 20), mt=(0.7, 0.95), r2=(10, 12)),
    "accumbens": dict(pd=(77, 83), r1=(0.62, 0.75), r2s=(18, 24), mt=(0.75, 1.0), r2=(11, 13)),
    "ventral_dc": dict(pd=(72, 78), r1=(0.78, 0.95), r2s=(25, 40), mt=(1.0, 1.5), r2=(12, 16)),
    "choroid_plexus": dict(pd=(85, 95), r1=(0.45, 0.70), r2s=(10, 30), mt=(0.3, 0.8), r2=(6, 10)),
    "vitreous": dict(pd=(95, 100), r1=(0.25, 0.35), r2s=(1, 5), mt=(0.0, 0.2), r2=(0.5, 1.5)),
    "muscle": dict(pd=(70, 80), r1=(0.65, 0.85), r2s=(35, 50), mt=(1.8, 3.0), r2=(25, 35)),
    "fat": dict(pd=(85, 100), r1=(2.4, 3.0), r2s=(25, 40), mt=(0.1, 0.5), r2=(8, 12)),
    "skin": dict(pd=(60, 75), r1=(0.8, 1.2), r2s=(30, 50), mt=(1.0, 2.0), r2=(18, 30)),
    "mucosa": dict(pd=(85, 95), r1=(0.45, 0.70), r2s=(15, 30), mt=(0.3, 0.8), r2=(8, 14)),
    "bone": dict(pd=(5, 15), r1=(1.5, 3.0), r2s=(300, 800), mt=(0.5, 2.0), r2=(100, 300)),
    "marrow": dict(pd=(60, 85), r1=(2.0, 3.0), r2s=(40, 80), mt=(0.3, 1.0), r2=(10, 16)),
    "nerve": dict(pd=(68, 75), r1=(0.80, 1.00), r2s=(20, 30), mt=(1.2, 1.8), r2=(11, 14)),
    "blood": dict(pd=(80, 90), r1=(0.50, 0.65), r2s=(15, 40), mt=(0.0, 0.2), r2=(5, 12)),
    # a stroke lesion, as in seqinv.physics.phantom (placed only for the lesion task: `add_lesion`); it must
    # stay the last kind: draw_values and random_intensities draw it last, only for subjects that have one
    "lesion": dict(pd=(82, 95), r1=(0.30, 0.60), r2s=(5, 12), mt=(0.2, 0.7), r2=(3, 8)),
}
KINDS = tuple(KIND_VALUES)
KIND = {name: i for i, name in enumerate(KINDS)}
# seqinv classes: 0 background, 1 CSF, 2 GM, 3 WM. Brain stem, ventral DC and the optic chiasm count as WM,
# every nucleus, hippocampus, amygdala and both cortices as GM, choroid plexus (inside the ventricles) as CSF.
KIND_CLASS = {
    "csf": 1, "choroid_plexus": 1,
    "cortex": 2, "cerebellar_cortex": 2, "thalamus": 2, "caudate": 2, "putamen": 2, "pallidum": 2,
    "hippocampus": 2, "amygdala": 2, "accumbens": 2,
    "wm": 3, "cerebellar_wm": 3, "brainstem": 3, "ventral_dc": 3,
    "lesion": 3,  # inside the brain: the tissue model's brain must hold it (it bounds the lesion calls)
}  # fmt: skip
CLASS_OF_KIND = torch.tensor([KIND_CLASS.get(k, 0) for k in KINDS], dtype=torch.uint8)

# FreeSurfer label → kind. Labels >= 500 are SynthSeg's extra-cerebral classes, identified by where they lie
# and what they touch in all 18 maps (docs/physics.md): 502 arteries along the skull base and neck,
# 506 eyes, 507 soft tissue of face and neck (muscle, split per sample into muscle and fat), 508 orbital
# tissue behind the eyes (extra-ocular muscles), 509 nasal turbinates (mucosa), 511 outermost layer
# (scalp: fat and skin), 512 spinal cord, 514 dura and venous sinuses, 515 skull (bone; its deep part
# becomes diploë marrow), 516 bone marrow of vault, skull base, mandible and vertebrae, 530 optic nerves.
FS_LABELS: dict[int, str] = {
    0: "air",  # outside the head and the air of sinuses, nasal cavity, pharynx and mastoids
    2: "wm", 41: "wm", 77: "wm", 85: "wm", 25: "wm", 57: "wm",  # 77/25/57: WM hypo-intensities, lesions
    3: "cortex", 42: "cortex",
    4: "csf", 5: "csf", 14: "csf", 15: "csf", 24: "csf", 43: "csf", 44: "csf", 72: "csf",
    7: "cerebellar_wm", 46: "cerebellar_wm", 8: "cerebellar_cortex", 47: "cerebellar_cortex",
    10: "thalamus", 49: "thalamus", 11: "caudate", 50: "caudate", 12: "putamen", 51: "putamen",
    13: "pallidum", 52: "pallidum", 16: "brainstem", 17: "hippocampus", 53: "hippocampus",
    18: "amygdala", 54: "amygdala", 26: "accumbens", 58: "accumbens", 28: "ventral_dc", 60: "ventral_dc",
    31: "choroid_plexus", 63: "choroid_plexus", 136: "choroid_plexus", 137: "choroid_plexus",
    163: "choroid_plexus", 164: "choroid_plexus",
    502: "blood", 506: "vitreous", 507: "muscle", 508: "muscle", 509: "mucosa", 511: "fat", 512: "nerve",
    514: "blood", 515: "bone", 516: "marrow", 530: "nerve",
}  # fmt: skip
VENTRICLE_LABELS = (4, 5, 14, 15, 43, 44, 72)
SULCAL_CSF_LABELS = (24,)
# Any other value (e.g. 30/62, vessels inside the basal ganglia, or a value of a newer map) takes the kind
# of the nearest voxel with a known label.

DIST_SCALE = 20.0  # distance maps are uint8 in 1/20 mm, capped at 12.75 mm
DIST_CAP_MM = 255 / DIST_SCALE


@dataclass
class HeadAnatomy:
    """One label map grouped into kinds, on a 1 mm RAS grid cropped to the head, plus distance maps.

    `packed` holds four uint8 volumes in one int32 (one gather per sample instead of four): bits 0-7 the
    kind (`KINDS`), 8-15 the depth inside the skull, 16-23 the distance to the ventricles, 24-31 the
    distance to extra-cerebral CSF (distances in 1/`DIST_SCALE` mm, capped at `DIST_CAP_MM`).
    """

    name: str
    packed: torch.Tensor  # int32 (X, Y, Z)
    affine: np.ndarray  # voxel → RAS mm (axis-aligned, 1 mm)
    # int16: bits 0-7 the generation class (index into `GEN_LABELS`), 8-15 the distance to brain
    # parenchyma (GM or WM) in 1/`DIST_SCALE` mm (training/synth.py: the CSF rim)
    extra: torch.Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.packed.shape)

    def field(self, index: int) -> torch.Tensor:
        return ((self.packed >> (8 * index)) & 255).to(torch.uint8)

    @property
    def kinds(self) -> torch.Tensor:
        return self.field(0)

    def brain_mask(self) -> torch.Tensor:
        return CLASS_OF_KIND[self.kinds.long()] > 0


def _pack(*volumes: torch.Tensor) -> torch.Tensor:
    packed = torch.zeros(volumes[0].shape, dtype=torch.int32)
    for i, v in enumerate(volumes):
        packed |= v.to(torch.int32) << (8 * i)  # bits 24-31 wrap into the sign: unpack with & 255
    return packed


def _to_dist(distance_mm: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.minimum(np.rint(distance_mm * DIST_SCALE), 255).astype(np.uint8))


# Generation classes of the SynthSeg-style generator (training/synth.py): every label value its own class
# (left and right apart, label 24 apart, each extra-cerebral label apart), FreeSurfer's vessels 30/62 too.
GEN_LABELS = tuple(sorted(set(FS_LABELS) | {30, 62}))
GEN_INDEX = {value: i for i, value in enumerate(GEN_LABELS)}


def _lookup(labels: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """uint8 `table[label]` per voxel; unknown values take the value of the nearest known voxel."""
    from scipy import ndimage

    labels = np.asarray(labels).astype(np.int32)
    lut = np.full(max(int(labels.max()), max(table)) + 1, 255, np.uint8)
    for value, index in table.items():
        lut[value] = index
    out = lut[np.clip(labels, 0, None)]
    unknown = out == 255
    if unknown.any():
        if unknown.all():
            raise InputError("the label map holds no known FreeSurfer/SynthSeg label")
        index = ndimage.distance_transform_edt(unknown, return_distances=False, return_indices=True)
        out = out[tuple(index)]
    return out


def group_labels(labels: np.ndarray) -> np.ndarray:
    """FreeSurfer labels → uint8 kind indices; unknown values take the kind of the nearest known voxel."""
    return _lookup(labels, {value: KIND[kind] for value, kind in FS_LABELS.items()})


def generation_classes(labels: np.ndarray) -> np.ndarray:
    """FreeSurfer labels → uint8 indices into `GEN_LABELS` (unknown values: the nearest known voxel's)."""
    return _lookup(labels, GEN_INDEX)


def prepare_anatomy(labels: np.ndarray, affine: np.ndarray, name: str = "", margin: int = 4) -> HeadAnatomy:
    """Group a label map (any axis-aligned orientation, 1 mm) and compute its distance maps.

    The volume is reoriented to RAS and cropped to the head's bounding box plus `margin` voxels.
    """
    import nibabel as nib
    from scipy import ndimage

    labels = np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(affine)
    labels = nib.orientations.apply_orientation(labels, ornt)
    affine = affine @ nib.orientations.inv_ornt_aff(ornt, labels.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    if not np.allclose(zooms, 1.0, atol=0.02):
        raise InputError(f"label map {name or ''} has {zooms.round(3).tolist()} mm voxels; expected 1 mm")
    nonzero = np.argwhere(labels > 0)
    if len(nonzero) == 0:
        raise InputError(f"label map {name or ''} is empty (all 0)")
    lo = np.maximum(nonzero.min(0) - margin, 0)
    hi = np.minimum(nonzero.max(0) + margin + 1, labels.shape)
    labels = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]

    kinds = group_labels(labels)
    ventricles = np.isin(labels, VENTRICLE_LABELS)
    sulcal = np.isin(labels, SULCAL_CSF_LABELS)
    bone = kinds == KIND["bone"]
    far = np.full(labels.shape, DIST_CAP_MM, np.float32)
    ventricle_mm = ndimage.distance_transform_edt(~ventricles) if ventricles.any() else far
    sulcal_mm = ndimage.distance_transform_edt(~sulcal) if sulcal.any() else far
    bone_mm = ndimage.distance_transform_edt(bone)
    packed = _pack(torch.from_numpy(np.ascontiguousarray(kinds)), _to_dist(bone_mm), _to_dist(ventricle_mm),
                   _to_dist(sulcal_mm))  # fmt: skip
    parenchyma = CLASS_OF_KIND.numpy()[kinds] >= 2
    parenchyma_mm = ndimage.distance_transform_edt(~parenchyma) if parenchyma.any() else far
    extra = torch.from_numpy(generation_classes(labels)).to(torch.int32) | (
        _to_dist(parenchyma_mm).to(torch.int32) << 8
    )
    extra = extra.to(torch.int16)  # bits 8-15 wrap into the sign: unpack with & 255
    return HeadAnatomy(name=name, packed=packed, affine=affine, extra=extra)


# SynthSeg's label map 1 (a fitting map; Apache-2.0, seqinv/data/LICENSE-synthseg-label-maps.txt), shipped
# so that `seqinv simulate --phantom` gives a whole head on a fresh install
BUNDLED_HEAD = Path(__file__).resolve().parents[1] / "data" / "synthseg_head_01.nii.gz"


def label_map_path(which: str | int, folder: str | Path | None = None) -> Path:
    """A label map file: `which` is a path, `bundled` (`BUNDLED_HEAD`), or a number 1-18 of SynthSeg's
    maps in `folder` (default: $SEQINV_LABEL_MAPS)."""
    text = str(which)
    if text == "bundled":
        return BUNDLED_HEAD
    if not text.isdigit():
        path = Path(text)
        if not path.is_file():
            raise InputError(
                f"label map {path} does not exist; give a NIfTI label map or a number 1-{N_MAPS}"
            )
        return path
    number = int(text)
    if not 1 <= number <= N_MAPS:
        raise ParameterError(f"label map number {number} is outside 1-{N_MAPS}")
    folder = folder or os.environ.get(LABEL_MAPS_ENV)
    if not folder:
        raise InputError(
            f"label map {number}: no folder of SynthSeg label maps; pass --label-maps DIR or set "
            f"${LABEL_MAPS_ENV} (the folder with training_seg_01.nii.gz ...)"
        )
    path = Path(folder) / f"training_seg_{number:02d}.nii.gz"
    if not path.is_file():
        raise InputError(f"{path} does not exist; {folder} must hold training_seg_01..18.nii.gz")
    return path


def load_anatomy(which: str | int, folder=None, cache_dir: str | Path | None = None) -> HeadAnatomy:
    """`prepare_anatomy` of a label map file, cached in `cache_dir` (a few seconds → tens of ms)."""
    import nibabel as nib

    path = label_map_path(which, folder)
    name = path.name.split(".")[0]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"anatomy_v{ANATOMY_VERSION}_{name}_{path.stat().st_size}.npz"
        if cache.exists():
            try:
                return _read_cache(cache, name)
            except Exception:  # a truncated or foreign entry: rebuild it
                cache.unlink(missing_ok=True)
    try:
        image = nib.load(str(path))
        labels = np.asarray(image.dataobj)
    except Exception as err:
        raise InputError(f"cannot read label map {path}: {err}") from err
    if labels.ndim != 3:
        raise InputError(f"label map {path} has shape {labels.shape}; expected a 3D volume")
    anatomy = prepare_anatomy(np.rint(labels).astype(np.int32), image.affine, name)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        arrays = {"packed": anatomy.packed.numpy(), "extra": anatomy.extra.numpy(), "affine": anatomy.affine}
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, cache)
    return anatomy


def _read_cache(path: Path, name: str) -> HeadAnatomy:
    """A cached anatomy: plain arrays only (no pickle: a planted cache file cannot run code)."""
    with np.load(path, allow_pickle=False) as data:
        packed, extra, affine = data["packed"], data["extra"], data["affine"]
    if packed.dtype != np.int32 or extra.dtype != np.int16 or packed.shape != extra.shape:
        raise ValueError(f"{path} is not an anatomy cache entry")
    if affine.shape != (4, 4):
        raise ValueError(f"{path} is not an anatomy cache entry")
    packed, extra = torch.from_numpy(packed), torch.from_numpy(extra)
    return HeadAnatomy(name=name, packed=packed, affine=affine, extra=extra)


# --- random virtual subjects ------------------------------------------------------------------------------


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _chance(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen, dtype=torch.float64)) < p


@dataclass(frozen=True)
class AnatomyAugment:
    """Strengths of the per-subject anatomy randomisation (`draw_deformation`)."""

    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)  # head size (global)
    axis_scale: float = 0.05  # extra per-axis scale ±
    shear: float = 0.05
    flip_prob: float = 0.5  # left-right
    large_mm: float = 8.0  # max amplitude of the coarse (4³ control points) displacement
    small_mm: float = 2.5  # max amplitude of the finer (8³) displacement
    atrophy_prob: float = 0.5
    ventricle_mm: float = 4.0  # max ventricle widening
    sulcal_mm: float = 1.5  # max cortical thinning next to extra-cerebral CSF (voxel centres within t + ½)

    @classmethod
    def none(cls) -> AnatomyAugment:
        return cls(0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class Deformation:
    """Output voxel o → source voxel c + M (o − c) + displacement(o) (c: the anatomy's centre)."""

    matrix: np.ndarray  # 3×3
    centre: np.ndarray  # source voxel (3,)
    extent: tuple[int, int, int]  # output extent the displacement control grid spans
    displacement: torch.Tensor | None  # (3, n, n, n) control-point displacements in voxels, or None
    ventricle_mm: float = 0.0
    sulcal_mm: float = 0.0
    record: dict = field(default_factory=dict)


def _rotation(angles_rad) -> np.ndarray:
    cos, sin = np.cos(angles_rad), np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cos[0], -sin[0]], [0, sin[0], cos[0]]])
    ry = np.array([[cos[1], 0, sin[1]], [0, 1, 0], [-sin[1], 0, cos[1]]])
    rz = np.array([[cos[2], -sin[2], 0], [sin[2], cos[2], 0], [0, 0, 1]])
    return rx @ ry @ rz


def draw_deformation(shape, gen: torch.Generator, aug: AnatomyAugment | None = None) -> Deformation:
    """A random virtual subject's spatial transform and atrophy for an anatomy of `shape`."""
    aug = aug or AnatomyAugment()
    angles = [math.radians(_uniform(gen, -aug.rotate_deg, aug.rotate_deg)) for _ in range(3)]
    size = _uniform(gen, *aug.scale)
    scales = np.array([size * _uniform(gen, 1 - aug.axis_scale, 1 + aug.axis_scale) for _ in range(3)])
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = [_uniform(gen, -aug.shear, aug.shear) for _ in range(3)]
    flip = _chance(gen, aug.flip_prob)
    matrix = _rotation(angles) @ shear @ np.diag(1.0 / scales)  # a bigger head: source steps shrink
    if flip:
        matrix = matrix @ np.diag([-1.0, 1.0, 1.0])  # RAS x: left ↔ right
    displacement = None
    large, small = _uniform(gen, 0, aug.large_mm), _uniform(gen, 0, aug.small_mm)
    if large > 0 or small > 0:
        coarse = torch.randn((1, 3, 4, 4, 4), generator=gen) * (large / 2)
        fine = torch.randn((1, 3, 8, 8, 8), generator=gen) * (small / 2)
        displacement = (F.interpolate(coarse, size=(8, 8, 8), mode="trilinear", align_corners=True) + fine)[0]
    atrophy = _chance(gen, aug.atrophy_prob)
    ventricle = _uniform(gen, 0, aug.ventricle_mm) if atrophy else 0.0
    sulcal = _uniform(gen, 0, aug.sulcal_mm) if atrophy else 0.0
    record = dict(
        rotate_deg=[round(math.degrees(a), 2) for a in angles],
        scale=[round(float(s), 4) for s in scales],
        flip_lr=flip,
        displacement_mm=[round(large, 2), round(small, 2)],
        ventricle_mm=round(ventricle, 2),
        sulcal_mm=round(sulcal, 2),
    )
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    return Deformation(matrix, centre, tuple(shape), displacement, ventricle, sulcal, record)


def identity_deformation(shape) -> Deformation:
    return Deformation(np.eye(3), (np.asarray(shape, dtype=np.float64) - 1) / 2, tuple(shape), None)


def output_grid(start, shape) -> list[torch.Tensor]:
    """Per-axis output voxel coordinates of a box (broadcastable 1-D tensors)."""
    return [torch.arange(s, s + n, dtype=torch.float32) for s, n in zip(start, shape, strict=True)]


def source_coords(deformation: Deformation, start, shape) -> torch.Tensor:
    """(3, *shape) source voxel coordinates of the output box at `start` (voxels of the output extent)."""
    axes = output_grid(start, shape)
    views = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    centre, matrix = deformation.centre, deformation.matrix
    out = torch.empty((3, *shape), dtype=torch.float32)
    for row in range(3):
        value = out[row]
        value.fill_(float(centre[row]))
        for col in range(3):
            value += float(matrix[row, col]) * (views[col] - float(centre[col]))
    if deformation.displacement is not None:
        out += _displacement(deformation, start, shape)
    return out


def _displacement(deformation: Deformation, start, shape, step: int = 8) -> torch.Tensor:
    """(3, *shape) displacement: the control grid sampled every ~`step` voxels of the box, then separable
    linear upsampling (the field varies over ~30 mm; 5x faster than grid_sample at every voxel)."""
    from seqinv.physics.phantom import _linear_upsampler

    counts = [max(2, -(-n // step) + 1) for n in shape]
    axes = [torch.linspace(s, s + n - 1, m) for s, n, m in zip(start, shape, counts, strict=True)]
    norm = [a * (2.0 / max(e - 1, 1)) - 1.0 for a, e in zip(axes, deformation.extent, strict=True)]
    grid = torch.stack(torch.meshgrid(*norm, indexing="ij")[::-1], -1)  # (x, y, z) = (last, ..., first)
    field = F.grid_sample(
        deformation.displacement[None], grid[None], mode="bilinear", padding_mode="border", align_corners=True
    )[0]
    for axis, (m, n) in enumerate(zip(counts, shape, strict=True)):
        field = torch.movedim(torch.movedim(field, axis + 1, -1) @ _linear_upsampler(m, n), -1, axis + 1)
    return field


# outside the label map: air, no bone, far from ventricles and CSF (as a signed int32)
_OUTSIDE = (255 << 24) + (255 << 16) - (1 << 32) + KIND["air"]


def _source_index(shape, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of the nearest source voxel (clamped) and whether it lies inside the label map."""
    voxel = (coords + 0.5).floor_().int()
    inside = torch.ones(coords.shape[1:], dtype=torch.bool)
    for axis in range(3):
        inside &= (voxel[axis] >= 0) & (voxel[axis] < shape[axis])
        voxel[axis].clamp_(0, shape[axis] - 1)
    return (voxel[0].long() * shape[1] + voxel[1]) * shape[2] + voxel[2], inside


def sample_kinds(anatomy: HeadAnatomy, coords: torch.Tensor, deformation: Deformation):
    """(kinds, bone depth) at the source coordinates (nearest voxel, air outside), with the atrophy."""
    kinds, bone_depth, _ = _sample_packed(anatomy, *_source_index(anatomy.shape, coords), deformation)
    return kinds, bone_depth


def _sample_packed(anatomy: HeadAnatomy, index, inside, deformation: Deformation):
    """(kinds, bone depth, atrophied voxels) at flat source voxels `index`."""
    packed = anatomy.packed.reshape(-1).take(index).masked_fill_(~inside, _OUTSIDE)
    kinds = (packed & 255).to(torch.uint8)
    bone_depth = ((packed >> 8) & 255).to(torch.uint8)
    atrophied = torch.zeros_like(kinds, dtype=torch.bool)
    if deformation.ventricle_mm > 0:  # enlarged ventricles: parenchyma next to them becomes CSF
        near = ((packed >> 16) & 255) < (deformation.ventricle_mm + 0.5) * DIST_SCALE
        atrophied |= near & (CLASS_OF_KIND[kinds.long()] > 1)
    if deformation.sulcal_mm > 0:  # widened sulci: cortex next to extra-cerebral CSF becomes CSF
        near = ((packed >> 24) & 255) < (deformation.sulcal_mm + 0.5) * DIST_SCALE
        cortex = (kinds == KIND["cortex"]) | (kinds == KIND["cerebellar_cortex"])
        atrophied |= near & cortex & ~atrophied
    kinds[atrophied] = KIND["csf"]
    return kinds, bone_depth, atrophied


# outside the label map: background's generation class, far from parenchyma (as a signed int16)
_OUTSIDE_EXTRA = (GEN_INDEX[0] | (255 << 8)) - (1 << 16)


def sample_generation(anatomy: HeadAnatomy, coords: torch.Tensor, deformation: Deformation):
    """(kinds, bone depth, generation classes, distance to parenchyma in 1/`DIST_SCALE` mm) at the source
    coordinates, with the atrophy: tissue turned into CSF takes label 24's class at distance 0."""
    if anatomy.extra is None:
        raise ParameterError(f"anatomy {anatomy.name} has no generation classes; prepare it again")
    index, inside = _source_index(anatomy.shape, coords)
    kinds, bone_depth, atrophied = _sample_packed(anatomy, index, inside, deformation)
    extra = anatomy.extra.reshape(-1).take(index).masked_fill_(~inside, _OUTSIDE_EXTRA)
    classes = (extra & 255).to(torch.uint8)
    distance = ((extra >> 8) & 255).to(torch.uint8)
    classes[atrophied] = GEN_INDEX[24]
    distance[atrophied] = 0
    return kinds, bone_depth, classes, distance


def classes_of(kinds: torch.Tensor) -> torch.Tensor:
    """seqinv tissue classes (0 background, 1 CSF, 2 GM, 3 WM) of a kind volume."""
    return CLASS_OF_KIND[kinds.long()]


def smooth_field(shape, cell_mm: float, gen: torch.Generator, channels: int | None = None) -> torch.Tensor:
    """N(0, 1) on control points every ~`cell_mm` voxels, trilinearly upsampled to `shape`."""
    from seqinv.physics.phantom import _smooth_noise

    cells = tuple(max(2, int(round(n / cell_mm)) + 1) for n in shape)
    return _smooth_noise(tuple(shape), cells, gen, channels=channels)


def split_tissues(kinds: torch.Tensor, bone_depth: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Within-label variety: soft tissue → muscle with fat streaks, scalp → fat with skin, skull → tables and
    diploë marrow, skull-base fatty tissue → marrow and fat (smooth random fields, new per subject)."""
    fields = smooth_field(kinds.shape, 12.0, gen, channels=3)
    out = kinds.clone()
    muscle = kinds == KIND["muscle"]
    out[muscle & (fields[0] > _uniform(gen, 0.8, 1.8))] = KIND["fat"]  # 4-21 % fat
    scalp = kinds == KIND["fat"]
    out[scalp & (fields[1] > _uniform(gen, 0.8, 1.6))] = KIND["skin"]
    marrow = kinds == KIND["marrow"]
    out[marrow & (fields[2] > _uniform(gen, -0.5, 0.5))] = KIND["fat"]
    diploe = (kinds == KIND["bone"]) & (bone_depth > _uniform(gen, 1.0, 2.0) * DIST_SCALE + 10 * fields[2])
    out[diploe] = KIND["marrow"]
    return out


LESION_RADIUS_MM = (4.0, 20.0)  # per-axis semi-axes of the stroke-like blob


def add_lesion(kinds: torch.Tensor, gen: torch.Generator, central: float = 0.0) -> torch.Tensor | None:
    """Turn a stroke-like blob of the parenchyma (GM, WM) of a kind volume into `lesion`, in place: an
    ellipsoid with random semi-axes in `LESION_RADIUS_MM` and an irregular outline, centred on a random
    parenchyma voxel (with probability `central`, one within a quarter of the volume's size of its
    centre, as training crops centred on the lesion). Returns its mask (None without parenchyma)."""
    parenchyma = CLASS_OF_KIND[kinds.long()] >= 2
    candidates = parenchyma
    if central > 0 and _chance(gen, central):
        near = torch.zeros_like(parenchyma)
        near[tuple(slice(n // 4, n - n // 4) for n in kinds.shape)] = True
        candidates = parenchyma & near if bool((parenchyma & near).any()) else parenchyma
    flat = torch.nonzero(candidates.reshape(-1)).reshape(-1)
    if len(flat) == 0:
        return None
    centre = np.unravel_index(int(flat[torch.randint(len(flat), (), generator=gen)]), kinds.shape)
    radii = [_uniform(gen, *LESION_RADIUS_MM) for _ in range(3)]
    axes = [
        ((torch.arange(n, dtype=torch.float32) - c) / r) ** 2
        for n, c, r in zip(kinds.shape, centre, radii, strict=True)
    ]
    level = (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]).sqrt_()
    level += 0.3 * smooth_field(kinds.shape, 4.0, gen)  # irregular outline
    mask = (level < 1.0) & parenchyma
    kinds[mask] = KIND["lesion"]
    return mask


def draw_values(gen: torch.Generator, lesion: bool = False) -> torch.Tensor:
    """(n_kinds, 5) per-kind qMRI values of one virtual subject (uniform in `KIND_VALUES`).

    The lesion's values are drawn last and only when the subject has one (`lesion`), else set to the
    middle of their range: a subject without a lesion draws exactly what it drew before lesions existed.
    """
    low = torch.tensor([[KIND_VALUES[k][p][0] for p in PARAMS] for k in KINDS], dtype=torch.float32)
    high = torch.tensor([[KIND_VALUES[k][p][1] for p in PARAMS] for k in KINDS], dtype=torch.float32)
    unit = torch.rand((len(KINDS) - 1, len(PARAMS)), generator=gen)
    last = torch.rand((1, len(PARAMS)), generator=gen) if lesion else torch.full((1, len(PARAMS)), 0.5)
    return low + (high - low) * torch.cat([unit, last])


# within-tissue texture: relative amplitude of a smooth multiplicative field per parameter (as phantom.py)
TEXTURE = dict(pd=0.02, r1=0.04, r2s=0.06, mt=0.06, r2=0.04)


def gaussian_blur(volume: torch.Tensor, sigma_vox: float) -> torch.Tensor:
    """Separable Gaussian blur of the last three dims; edges replicate.

    Shifted adds, not conv3d: torch's CPU conv3d with 1-D kernels is ~30x slower on large volumes.
    """
    if sigma_vox <= 0:
        return volume
    radius = max(1, int(math.ceil(2.5 * sigma_vox)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    weights = (weights / weights.sum()).tolist()
    out = volume
    for axis in range(volume.dim() - 3, volume.dim()):
        n = out.shape[axis]
        first, last = out.narrow(axis, 0, 1), out.narrow(axis, n - 1, 1)
        padded = torch.cat([first] * radius + [out] + [last] * radius, dim=axis)
        blurred = padded.narrow(axis, 0, n) * weights[0]
        for k in range(1, 2 * radius + 1):
            blurred.add_(padded.narrow(axis, k, n), alpha=weights[k])
        out = blurred
    return out


def kinds_to_maps(
    kinds: torch.Tensor, values: torch.Tensor, gen: torch.Generator, pv_sigma: float
) -> torch.Tensor:
    """(5, *shape) qMRI maps: per-kind values, smooth texture, partial-volume blur of `pv_sigma` voxels."""
    maps = values.index_select(0, kinds.reshape(-1).int()).t().reshape(len(PARAMS), *kinds.shape)
    texture = smooth_field(kinds.shape, 8.0, gen, channels=len(PARAMS))
    amplitude = torch.tensor([TEXTURE[p] for p in PARAMS])[:, None, None, None]
    maps.mul_(texture.mul_(amplitude).add_(1.0))
    return gaussian_blur(maps, pv_sigma).clamp_(min=0.0)


def flow_voids(values: torch.Tensor, gen: torch.Generator, prob: float = 0.5) -> torch.Tensor:
    """Flowing blood is dark on many scans: lower the blood PD of this subject with probability `prob`."""
    if _chance(gen, prob):
        values = values.clone()
        values[KIND["blood"], 0] *= _uniform(gen, 0.0, 0.3)
    return values


def random_intensities(gen: torch.Generator, lesion: bool = False) -> torch.Tensor:
    """Random-contrast mode (SynthSeg-like): an independent intensity U(0, 1) per kind; air U(0, 0.1).
    The lesion's is drawn last, only with `lesion` (as in `draw_values`)."""
    intensity = torch.rand(len(KINDS) - 1, generator=gen)
    intensity[KIND["air"]] *= 0.1
    last = torch.rand(1, generator=gen) if lesion else torch.full((1,), 0.5)
    return torch.cat([intensity, last])


def kinds_to_random_image(kinds, intensity, gen, pv_sigma: float, texture: float = 0.05) -> torch.Tensor:
    """A random-contrast image: piecewise constant per kind, times smooth texture, partial-volume blurred."""
    image = intensity[kinds.long()]
    image = image * (1.0 + texture * smooth_field(kinds.shape, 8.0, gen))
    return gaussian_blur(image, pv_sigma).clamp_(min=0.0)


# cortex and the white matter beside it (cerebral and cerebellar)
_CORTEX_KINDS = ("cortex", "cerebellar_cortex")
_WM_KINDS = ("wm", "cerebellar_wm")


def superficial_wm(
    image: torch.Tensor, kinds: torch.Tensor, gen: torch.Generator, strength=(0.1, 0.4), depth_mm=(1.0, 3.0)
) -> torch.Tensor:
    """Darken superficial white matter: WM just under the cortex holds less myelin than deep WM, so its
    signal lies between cortex and deep WM (the GM/WM contrast of real T1w scans grows over the first
    2-3 mm into WM). WM voxels move towards the mean cortex signal of the crop by strength · exp(−(d − 1)/λ),
    d their distance in voxels (1 mm) to the cortex; strength and λ drawn per sample. Labels stay WM."""
    from scipy.ndimage import distance_transform_edt

    s, scale = _uniform(gen, *strength), _uniform(gen, *depth_mm)
    cortex = torch.isin(kinds, torch.tensor([KIND[k] for k in _CORTEX_KINDS], dtype=kinds.dtype))
    wm = torch.isin(kinds, torch.tensor([KIND[k] for k in _WM_KINDS], dtype=kinds.dtype))
    if not bool(cortex.any()) or not bool(wm.any()):
        return image
    depth = torch.from_numpy(distance_transform_edt(~cortex.numpy())).float()
    weight = (s * torch.exp(-(depth - 1.0).clamp(min=0.0) / scale)) * wm
    return image + weight * (image[cortex].mean() - image)


@dataclass
class HeadSample:
    """A rendered virtual subject (or part of one): kinds, classes, qMRI maps and the record of its draws."""

    kinds: torch.Tensor  # uint8
    labels: torch.Tensor  # uint8 classes 0-3
    maps: QMRIMaps | None
    record: dict
    lesion: torch.Tensor | None = None  # bool mask of the lesion (`render(lesion_prob=...)`)
    classes: torch.Tensor | None = None  # generation classes (`GEN_LABELS` indices), where prepared
    distance: torch.Tensor | None = None  # distance to parenchyma, 1/`DIST_SCALE` mm, where prepared


def render(
    anatomy: HeadAnatomy,
    deformation: Deformation,
    start,
    shape,
    gen: torch.Generator,
    *,
    maps: bool = True,
    blur_maps: bool = True,
    pv_range=(0.3, 0.6),
    lesion_prob: float = 0.0,
    lesion_central: float = 0.0,
) -> HeadSample:
    """Render the output box (`start`, `shape`) of a virtual subject: kinds, labels and (optionally) maps.

    Partial volume is a Gaussian blur of `record["pv_sigma_vox"]` (drawn in `pv_range`) voxels: of the maps
    with `blur_maps`, else left to the caller (training blurs the simulated signal: one channel, not five).
    With probability `lesion_prob` a stroke-like lesion replaces some parenchyma (`add_lesion`, which
    centres it near the box's centre with probability `lesion_central`).
    """
    coords = source_coords(deformation, start, shape)
    classes = distance = None
    if anatomy.extra is not None:
        kinds, bone_depth, classes, distance = sample_generation(anatomy, coords, deformation)
    else:
        kinds, bone_depth = sample_kinds(anatomy, coords, deformation)
    kinds = split_tissues(kinds, bone_depth, gen)
    has_lesion = lesion_prob > 0 and _chance(gen, lesion_prob)
    lesion = add_lesion(kinds, gen, lesion_central) if has_lesion else None
    labels = classes_of(kinds)
    pv = _uniform(gen, *pv_range)
    record = {"anatomy": anatomy.name, "deformation": deformation.record, "pv_sigma_vox": round(pv, 3)}
    qmri = None
    if maps:
        values = flow_voids(draw_values(gen, lesion=lesion is not None), gen)
        volume = kinds_to_maps(kinds, values, gen, pv if blur_maps else 0.0)
        qmri = QMRIMaps(**{p: volume[i] for i, p in enumerate(PARAMS)})
    return HeadSample(kinds, labels, qmri, record, lesion, classes, distance)


def output_affine(anatomy: HeadAnatomy, start) -> np.ndarray:
    """The RAS affine of an output box at `start` (the output grid shares the anatomy's voxel axes)."""
    affine = anatomy.affine.copy()
    affine[:3, 3] = anatomy.affine[:3, :3] @ np.asarray(start, dtype=np.float64) + anatomy.affine[:3, 3]
    return affine


def make_head_phantom(
    which: str | int,
    seed: int,
    *,
    folder=None,
    cache_dir=None,
    deform: bool = True,
    pad: int = 8,
    anatomy: HeadAnatomy | None = None,
    lesion: bool = False,
):
    """A whole-head phantom (`seqinv.physics.phantom.Phantom`) from label map `which` (number or file).

    The grid is the head's bounding box plus `pad` voxels (room for the deformation), 1 mm RAS.
    `.values` holds the record of the draws (deformation, partial volume) and `"kinds"`, the uint8 kind
    volume (for random-contrast images, `kinds_to_random_image`). `lesion` adds a stroke-like lesion
    (`add_lesion`; `.lesion` is its uint8 mask).
    """
    from seqinv.physics.phantom import Phantom

    anatomy = anatomy or load_anatomy(which, folder, cache_dir)
    gen = torch.Generator().manual_seed(int(seed))
    shape = tuple(n + 2 * pad for n in anatomy.shape)
    start = (-pad,) * 3
    deformation = draw_deformation(anatomy.shape, gen) if deform else identity_deformation(anatomy.shape)
    sample = render(anatomy, deformation, start, shape, gen, lesion_prob=1.0 if lesion else 0.0)
    affine = output_affine(anatomy, start)
    sample.maps.affine = affine
    return Phantom(
        maps=sample.maps,
        labels=sample.labels.numpy(),
        tissue_probs=None,
        lesion=None if sample.lesion is None else sample.lesion.to(torch.uint8).numpy(),
        affine=affine.copy(),
        seed=int(seed),
        values=sample.record | {"kinds": sample.kinds.numpy()} | _generation_values(sample),
    )


def _generation_values(sample: HeadSample) -> dict:
    if sample.classes is None:
        return {}
    return {"classes": sample.classes.numpy(), "parenchyma_distance": sample.distance.numpy()}
