"""Stroke lesions in the SynthSeg-grade generator (task arc; issue 34, items 1-2).

A sample is training/synth.py's sample of the same seed (same anatomy, crop, contrast and acquisition
draws) with, unless it is a negative, strokes painted into its crop before the image is rendered:

- shapes: territory infarcts (1-150 mL; a cone from the lateral ventricle, or the cerebellar white matter,
  through a cortical point of the crop, widening toward the surface and cut to one hemisphere's
  parenchyma) and lacunes (0.1-2 mL; small ovoids in the deep grey nuclei or deep white matter); several
  per head sometimes, in one hemisphere or both. Each is drawn in its own box of the output grid (so its
  volume is exact even where the crop cuts it), its outline roughened by a smooth field, its volume set
  by a quantile of its level function, then pasted into the crop;
- stages: an acute lesion is a core (with, sometimes, a milder rim of its own); a chronic one is a
  CSF-like cavity with a gliotic rim, its cortex lost to the cavity and the ventricle beside it widened.
  The target is the lesion (core, cavity, rim), never the widened ventricle;
- intensities: in the Gaussian mixture the core, the cavity and the rim are generation classes of their
  own with random means like every class (a cavity's mean often near the ventricles'); in the physics
  path they take acute or chronic stroke qMRI values (`STROKE_VALUES`);
- negatives: a share `lesion_free` of the samples has no lesion; those are bit-identical to
  `synth_sample`'s, deep grey nuclei, choroid plexus, vessels and ventricle rims at every intensity the
  mixture gives them.

The lesion draws come from a second generator seeded from the sample's seed, so the main generator draws
exactly what `synth_sample` draws.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from seqinv.physics.anatomy import (
    CLASS_OF_KIND,
    DIST_SCALE,
    GEN_INDEX,
    GEN_LABELS,
    KIND,
    KINDS,
    PARAMS,
    _chance,
    _uniform,
)
from training.augment import zscore
from training.synth import SynthPrior, crop_start, finish, mixture_image, physics_image

# codes of a crop's part volume
CORE, CAVITY, RIM, WIDEN_LEFT, WIDEN_RIGHT = 1, 2, 3, 4, 5
LESION_PARTS = (CORE, CAVITY, RIM)
# the parts' extra kinds (physics) and generation classes (mixture), after the anatomy's own
PART_KIND = {CORE: len(KINDS), CAVITY: len(KINDS) + 1, RIM: len(KINDS) + 2}
PART_CLASS = {CORE: len(GEN_LABELS), CAVITY: len(GEN_LABELS) + 1, RIM: len(GEN_LABELS) + 2}
WIDEN_CLASS = {WIDEN_LEFT: GEN_INDEX[4], WIDEN_RIGHT: GEN_INDEX[43]}  # the lateral ventricles

# 3 T qMRI ranges (units as KIND_VALUES: pd p.u., r1/r2s/r2 1/s, mt p.u.), widened by `physics_widen` as
# every kind. Acute core: oedema adds 5-15 p.u. of water and lengthens T2 by 10-50 % and T1 with it over
# the first hours to days (quantitative T2 in patients: Siemonsen et al., Stroke 2009;40:1612; T1 and T2
# time courses: Knight et al., Stroke 1991;22:802), MT falls: T1 1.25-2.2 s, T2 90-170 ms. Gliotic rim:
# long T2 (bright on FLAIR), T1 and PD between white matter and CSF.
STROKE_VALUES = {
    CORE: dict(pd=(76, 92), r1=(0.45, 0.80), r2s=(10, 20), mt=(0.4, 1.2), r2=(6.0, 11.0)),
    RIM: dict(pd=(78, 92), r1=(0.40, 0.75), r2s=(8, 16), mt=(0.4, 1.2), r2=(4.0, 9.0)),
}
# Chronic cavity: encephalomalacia holds fluid that follows CSF in every contrast (dark on FLAIR), so it
# takes the subject's CSF values times these factors (a little more protein: slightly shorter T1, T2).
CAVITY_FACTORS = dict(pd=(0.97, 1.0), r1=(1.0, 1.1), r2s=(1.0, 1.3), mt=(1.0, 1.3), r2=(1.0, 1.3))

# parenchyma groups of the generation classes: a lesion stays inside one
CEREBRAL_LEFT, CEREBRAL_RIGHT, CEREBELLAR_LEFT, CEREBELLAR_RIGHT = 1, 2, 3, 4
_GROUP_LABELS = {
    CEREBRAL_LEFT: (2, 3, 10, 11, 12, 13, 17, 18, 25, 26, 28, 30),
    CEREBRAL_RIGHT: (41, 42, 49, 50, 51, 52, 53, 54, 57, 58, 60, 62),
    CEREBELLAR_LEFT: (7, 8),
    CEREBELLAR_RIGHT: (46, 47),
}
GROUP_OF_CLASS = torch.zeros(len(GEN_LABELS) + len(PART_CLASS), dtype=torch.uint8)
for _group, _labels in _GROUP_LABELS.items():
    GROUP_OF_CLASS[[GEN_INDEX[label] for label in _labels]] = _group
SIDE_NAME = {1: "left", 2: "right"}
DEEP_NUCLEI = ("thalamus", "caudate", "putamen", "pallidum")
DEEP_WM_MM = 8.0  # lacunes' white matter: at least this far from the sulcal CSF


@dataclass(frozen=True)
class LesionPrior:
    """Priors of the stroke lesions, with their ranges (volumes in mL of the 1 mm output grid)."""

    lesion_free: float = 0.4  # share of samples with no lesion (issue 34: at least a third)
    territory: float = 0.75  # share of lesion heads with a territory infarct
    second_territory: float = 0.15  # share of those with a second one
    cerebellar: float = 0.1  # share of territory infarcts in a cerebellar hemisphere
    lacunes: tuple[int, int] = (0, 4)  # lacunes per lesion head, uniform (one where nothing else was drawn)
    bilateral: float = 0.35  # share of lesion heads whose lesions each pick a hemisphere (else all one)
    chronic: float = 0.5  # share of lesions that are chronic (cavity, gliotic rim)
    territory_ml: tuple[float, float] = (1.0, 150.0)  # log-uniform
    lacune_ml: tuple[float, float] = (0.1, 2.0)  # log-uniform
    rim_vox: tuple[int, int] = (1, 3)  # rim width, voxels (uniform; at most a third of a lacune's radius)
    acute_rim: float = 0.5  # share of acute lesions with a milder rim of its own class
    widen_mm: tuple[float, float] = (1.0, 5.0)  # chronic: ventricle widened beside it, x min(1, (mL/30)^⅓)
    outline: tuple[float, float] = (0.1, 0.4)  # amplitude of the smooth field roughening the outline
    csf_cavity: float = 0.7  # mixture: share of cavities with a mean within 0.08 of the lateral ventricle's
    box_max: int = 64  # largest half-size of a lesion's drawing box, voxels

    def check(self) -> None:
        from seqinv.errors import ParameterError

        rates = ("lesion_free", "territory", "second_territory", "cerebellar", "bilateral", "chronic",
                 "acute_rim", "csf_cavity")  # fmt: skip
        for name in rates:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParameterError(f"lesion prior {name} = {getattr(self, name)}: a rate in [0, 1]")
        for name in ("territory_ml", "lacune_ml", "widen_mm", "outline", "lacunes", "rim_vox"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ParameterError(f"lesion prior {name} = {(low, high)}: a range 0 <= low <= high")
        if self.territory_ml[0] <= 0 or self.lacune_ml[0] <= 0 or self.rim_vox[0] < 1:
            raise ParameterError("lesion prior: volumes above 0 mL and a rim of at least 1 voxel")
        if self.box_max < 8:
            raise ParameterError(f"lesion prior box_max = {self.box_max}: at least 8 voxels")


@dataclass
class LesionCrop:
    """A crop's anatomy as sampled (before painting) and the parts drawn into it."""

    kinds: torch.Tensor  # uint8 kinds (`KINDS`)
    bone_depth: torch.Tensor
    classes: torch.Tensor  # uint8 generation classes (`GEN_LABELS`)
    part: torch.Tensor  # uint8 codes: 0 untouched, CORE, CAVITY, RIM, WIDEN_LEFT, WIDEN_RIGHT
    lesions: list[dict] = field(default_factory=list)
    lesion_free: bool = True
    record: dict = field(default_factory=dict)

    @property
    def label(self) -> torch.Tensor:
        return (self.part >= CORE) & (self.part <= RIM)


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """The main generator (as `synth_sample`'s) and the lesions' own, both from the sample's seed."""
    lesion_seed = int(np.random.SeedSequence([int(seed), 34]).generate_state(1)[0])
    return torch.Generator().manual_seed(int(seed)), torch.Generator().manual_seed(lesion_seed)


def _log_uniform(gen: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(gen, math.log(low), math.log(high)))


def _parenchyma(kinds: torch.Tensor) -> torch.Tensor:
    return CLASS_OF_KIND[kinds.long()] >= 2


def allowed_region(kinds, classes, group: int, lacune: bool) -> torch.Tensor:
    """Where a lesion of `group` may lie: that group's parenchyma (a lacune: no cortex)."""
    allowed = _parenchyma(kinds) & (GROUP_OF_CLASS[classes.long()] == group)
    if lacune:
        allowed &= (kinds != KIND["cortex"]) & (kinds != KIND["cerebellar_cortex"])
    return allowed


def anchors(kinds, classes, sulcal_mm, group: int, lacune: bool) -> torch.Tensor:
    """Crop voxels a lesion may start from: cortex (territory) or deep nuclei and deep WM (lacune)."""
    in_group = GROUP_OF_CLASS[classes.long()] == group
    if not lacune:
        cortex = KIND["cortex"] if group <= CEREBRAL_RIGHT else KIND["cerebellar_cortex"]
        return in_group & (kinds == cortex)
    deep = torch.isin(kinds, torch.tensor([KIND[k] for k in DEEP_NUCLEI], dtype=kinds.dtype))
    deep_wm = (kinds == KIND["wm"]) & (sulcal_mm >= DEEP_WM_MM)
    return in_group & (deep | deep_wm) & (group <= CEREBRAL_RIGHT)


def distances_mm(anatomy, coords) -> tuple[torch.Tensor, torch.Tensor]:
    """(ventricle, sulcal CSF) distances in mm at source coordinates (far outside the label map)."""
    from seqinv.physics.anatomy import _source_index

    index, inside = _source_index(anatomy.shape, coords)
    packed = anatomy.packed.reshape(-1).take(index)
    far = torch.tensor(255.0)
    ventricle = torch.where(inside, ((packed >> 16) & 255).float(), far) / DIST_SCALE
    sulcal = torch.where(inside, ((packed >> 24) & 255).float(), far) / DIST_SCALE
    return ventricle, sulcal


_LANDMARKS: dict[int, tuple] = {}


def landmarks(anatomy) -> dict[int, np.ndarray]:
    """Source-voxel centroid a territory cone starts from, per group: the lateral ventricle (cerebral) or
    the cerebellar white matter; the brain's centroid where the map lacks that label. Cached."""
    hit = _LANDMARKS.get(id(anatomy))
    if hit is not None and hit[0] is anatomy:
        return hit[1]
    classes = (anatomy.extra & 255).to(torch.uint8)
    brain = torch.nonzero(anatomy.brain_mask()).double().mean(0).numpy()
    points = {}
    labels = {CEREBRAL_LEFT: 4, CEREBRAL_RIGHT: 43, CEREBELLAR_LEFT: 7, CEREBELLAR_RIGHT: 46}
    for group, label in labels.items():
        voxels = torch.nonzero(classes == GEN_INDEX[label])
        points[group] = voxels.double().mean(0).numpy() if len(voxels) else brain
    _LANDMARKS[id(anatomy)] = (anatomy, points)
    return points


def to_output(deformation, source_point: np.ndarray) -> np.ndarray:
    """An output-grid point of a source voxel (the affine part of the deformation only)."""
    offset = np.linalg.solve(deformation.matrix, np.asarray(source_point) - deformation.centre)
    return deformation.centre + offset


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2 radius + 1)³ box (separable max-pooling)."""
    if radius <= 0:
        return mask
    x = mask[None, None].float()
    for axis in range(3):
        kernel, pad = [1, 1, 1], [0, 0, 0]
        kernel[axis], pad[axis] = 2 * radius + 1, radius
        x = F.max_pool3d(x, tuple(kernel), stride=1, padding=tuple(pad))
    return x[0, 0] > 0


def bounding_box(mask: torch.Tensor, pad: int) -> tuple[slice, ...]:
    """Slices of the mask's bounding box grown by `pad` voxels (clipped to the volume)."""
    nonzero = torch.nonzero(mask)
    low, high = nonzero.min(0).values, nonzero.max(0).values
    return tuple(slice(max(0, int(lo) - pad), min(n, int(hi) + pad + 1))
                 for lo, hi, n in zip(low, high, mask.shape, strict=True))  # fmt: skip


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage

    labelled, count = ndimage.label(mask.numpy())
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return torch.from_numpy(labelled == int(sizes.argmax()))


def fill_to_volume(level: torch.Tensor, allowed: torch.Tensor, voxels: int, cap: float) -> torch.Tensor:
    """The allowed voxels of lowest level, `voxels` of them (fewer where the level would pass `cap`),
    kept to their largest connected part: the lesion's volume is set here, not by its shape's scale."""
    values = level[allowed]
    if values.numel() == 0 or voxels < 1:
        return torch.zeros_like(allowed)
    k = min(voxels, values.numel())
    threshold = min(float(torch.kthvalue(values, k).values), cap)
    return largest_component(allowed & (level <= threshold))


@dataclass
class Box:
    """A lesion's drawing box on the output grid, with the anatomy rendered in it."""

    start: list[int]
    kinds: torch.Tensor
    classes: torch.Tensor
    coords: torch.Tensor  # (3, *shape) source coordinates

    def axes(self) -> list[torch.Tensor]:
        n = self.kinds.shape
        return [
            torch.arange(s, s + m, dtype=torch.float32).reshape([-1 if a == i else 1 for a in range(3)])
            for i, (s, m) in enumerate(zip(self.start, n, strict=True))
        ]


def render_box(anatomy, deformation, centre: np.ndarray, half: int) -> Box:
    from seqinv.physics.anatomy import sample_generation, source_coords

    start = [int(round(c)) - half for c in centre]
    coords = source_coords(deformation, start, (2 * half + 1,) * 3)
    kinds, _, classes, _ = sample_generation(anatomy, coords, deformation)
    return Box(start, kinds, classes, coords)


def territory_level(box: Box, apex, axis, tau: float, h: float, tan_theta: float) -> torch.Tensor:
    """A wedge: a cone from `apex` along `axis` (1 on its side at the angle whose tangent is `tan_theta`)
    rounded off `h` before its middle (`tau` from the apex) and, barely, `3 h` past it, where the
    cortex lies: widest at the surface, narrow toward the ventricle."""
    d = [a - float(p) for a, p in zip(box.axes(), apex, strict=True)]
    t = d[0] * float(axis[0]) + d[1] * float(axis[1]) + d[2] * float(axis[2])
    radial = (d[0] ** 2 + d[1] ** 2 + d[2] ** 2 - t**2).clamp_min(0).sqrt()
    angle = radial / (t.clamp_min(0.5) * tan_theta)
    along = torch.where(t > tau, (t - tau) / (3 * h), (tau - t) / h)
    return (angle**2 + along**2).sqrt()


def draw_territory(anatomy, deformation, anchor, group: int, gen, prior: LesionPrior):
    """A territory infarct through the cortical `anchor` (output voxel): (box, mask, target mL)."""
    target_ml = _log_uniform(gen, *prior.territory_ml)
    rho = (3 * target_ml * 1000 / (4 * math.pi)) ** (1 / 3)
    source = to_output(deformation, landmarks(anatomy)[group])
    axis = np.asarray(anchor, dtype=np.float64) - source
    if np.linalg.norm(axis) < 1.0:
        axis = torch.randn(3, generator=gen, dtype=torch.float64).numpy()
    axis /= np.linalg.norm(axis)
    h = rho * _uniform(gen, 1.0, 1.6)
    centre = anchor - axis * h * _uniform(gen, 0.2, 0.7)  # the lesion's middle lies under the cortex
    tau = max(float(np.linalg.norm(centre - source)), h + 2.0)
    tan_theta = rho * _uniform(gen, 0.6, 1.1) / tau
    half = min(prior.box_max, int(math.ceil(1.5 * max(1.5 * h, (tau + 1.5 * h) * tan_theta))) + 2)
    box = render_box(anatomy, deformation, centre, half)
    level = territory_level(box, centre - axis * tau, axis, tau, h, tan_theta)
    level += _uniform(gen, *prior.outline) * _smooth(box, _uniform(gen, 6.0, 12.0), gen)
    allowed = allowed_region(box.kinds, box.classes, group, False)
    mask = fill_to_volume(level, allowed, round(target_ml * 1000), 1.5)
    return box, mask, target_ml


def draw_lacune(anatomy, deformation, anchor, group: int, gen, prior: LesionPrior):
    """A lacune: a rough ovoid around `anchor` (output voxel), no cortex: (box, mask, target mL)."""
    target_ml = _log_uniform(gen, *prior.lacune_ml)
    rho = (3 * target_ml * 1000 / (4 * math.pi)) ** (1 / 3)
    radii = [rho * _uniform(gen, 0.7, 1.4) for _ in range(3)]
    half = int(math.ceil(2 * max(radii))) + 2
    box = render_box(anatomy, deformation, np.asarray(anchor, dtype=np.float64), half)
    d = [(a - float(c)) / r for a, c, r in zip(box.axes(), anchor, radii, strict=True)]
    level = (d[0] ** 2 + d[1] ** 2 + d[2] ** 2).sqrt()
    level = level + _uniform(gen, 0.5, 1.0) * _uniform(gen, *prior.outline) * _smooth(box, 3.0, gen)
    allowed = allowed_region(box.kinds, box.classes, group, True)
    mask = fill_to_volume(level, allowed, round(target_ml * 1000), 1.6)
    return box, mask, target_ml


def _smooth(box: Box, cell_mm: float, gen) -> torch.Tensor:
    from seqinv.physics.anatomy import smooth_field

    return smooth_field(box.kinds.shape, cell_mm, gen)


def lesion_parts(box: Box, mask, chronic: bool, rim: int, gen, prior: LesionPrior) -> torch.Tensor:
    """Part codes in the box: core (acute) or cavity (chronic), and a rim `rim` voxels wide where the
    lesion meets normal parenchyma (always for chronic lesions: gliosis)."""
    part = torch.zeros(mask.shape, dtype=torch.uint8)
    near = bounding_box(mask, rim)  # dilations only around the lesion: most of the box is far from it
    border = torch.zeros_like(mask)
    border[near] = mask[near] & dilate(_parenchyma(box.kinds[near]) & ~mask[near], rim)
    if not chronic:
        part[mask] = CORE
        if _chance(gen, prior.acute_rim):
            part[border] = RIM
        return part
    part[mask] = CAVITY
    part[border] = RIM
    return part


def widen_ventricle(anatomy, box: Box, part, group: int, volume_ml: float, atrophy_mm: float, gen,
                    prior) -> None:  # fmt: skip
    """Ex-vacuo widening: the same hemisphere's parenchyma next to the lateral ventricle and near the
    chronic lesion turns into ventricle (in place)."""
    if group > CEREBRAL_RIGHT:
        return
    width = _uniform(gen, *prior.widen_mm) * min(1.0, (volume_ml / 30.0) ** (1 / 3))
    reach = int(round(_uniform(gen, 4.0, 12.0)))
    mask = part > 0
    around = bounding_box(mask, reach)
    near = dilate(mask[around], reach) & ~mask[around]
    near &= allowed_region(box.kinds[around], box.classes[around], group, False)
    ventricle_mm, _ = distances_mm(anatomy, box.coords[(slice(None), *around)])
    code = WIDEN_LEFT if group == CEREBRAL_LEFT else WIDEN_RIGHT
    part[around][near & (ventricle_mm < atrophy_mm + width)] = code


def paste(crop: LesionCrop, start, box: Box, part, group: int, lacune: bool, chronic: bool) -> int:
    """Copy a box's parts into the crop where they overlap: lesion parts only on the crop's own allowed
    parenchyma (a chronic lesion's cortex lost to its cavity), widened ventricle only on untouched
    parenchyma. Returns the lesion voxels pasted."""
    src, dst = [], []
    for b, s, n, m in zip(box.start, start, part.shape, crop.part.shape, strict=True):
        lo, hi = max(b, s), min(b + n, s + m)
        if hi <= lo:
            return 0
        src.append(slice(lo - b, hi - b))
        dst.append(slice(lo - s, hi - s))
    src, dst = tuple(src), tuple(dst)
    piece, target = part[src], crop.part[dst]
    kinds, classes = crop.kinds[dst], crop.classes[dst]
    lesion = (piece >= CORE) & (piece <= RIM) & allowed_region(kinds, classes, group, lacune)
    widen = (piece >= WIDEN_LEFT) & (target == 0) & _parenchyma(kinds)
    target[lesion] = piece[lesion]
    if chronic:
        target[lesion & ((kinds == KIND["cortex"]) | (kinds == KIND["cerebellar_cortex"]))] = CAVITY
    target[widen] = piece[widen]
    return int(lesion.sum())


def lesion_plan(gen, prior: LesionPrior) -> list[str]:
    """The lesion types of one head: territory infarcts and lacunes."""
    types = []
    if _chance(gen, prior.territory):
        types.append("territory")
        if _chance(gen, prior.second_territory):
            types.append("territory")
    low, high = prior.lacunes
    types += ["lacune"] * int(torch.randint(low, high + 1, (), generator=gen))
    return types or ["lacune"]


def draw_lesions(crop: LesionCrop, subject, deformation, start, sulcal_mm, gen, prior: LesionPrior) -> None:
    """Draw one head's lesions, each from an anchor voxel in the crop, into `crop.part` (in place)."""
    from training.crops import _random_voxel

    bilateral = _chance(gen, prior.bilateral)
    head_side = 1 + int(_chance(gen, 0.5))
    for kind in lesion_plan(gen, prior):
        side = 1 + int(_chance(gen, 0.5)) if bilateral else head_side
        lacune = kind == "lacune"
        cerebellar = not lacune and _chance(gen, prior.cerebellar)
        voxel = None
        for lesion_side in (side, 3 - side) if not crop.lesions else (side,):  # the first may change side
            group = lesion_side + 2 * int(cerebellar)
            free = anchors(crop.kinds, crop.classes, sulcal_mm, group, lacune) & ~crop.label
            voxel = _random_voxel(free, gen)  # never inside a lesion already drawn
            if voxel is not None:
                break
        if voxel is None:
            continue
        head_side = head_side if bilateral else lesion_side
        anchor = np.asarray(start, dtype=np.float64) + voxel
        draw = draw_lacune if lacune else draw_territory
        box, mask, target_ml = draw(subject.anatomy, deformation, anchor, group, gen, prior)
        volume_ml = float(mask.sum()) / 1000
        minimum = prior.lacune_ml[0] if lacune else prior.territory_ml[0]
        if volume_ml < minimum:  # squeezed by the anatomy or the box: drawn as nothing
            continue
        chronic = _chance(gen, prior.chronic)
        radius_mm = 6.2 * volume_ml ** (1 / 3)  # of a ball of that volume
        rim = int(torch.randint(prior.rim_vox[0], prior.rim_vox[1] + 1, (), generator=gen))
        rim = min(rim, max(1, round(radius_mm / 3)))
        part = lesion_parts(box, mask, chronic, rim, gen, prior)
        if chronic:
            atrophy_mm = deformation.ventricle_mm
            widen_ventricle(subject.anatomy, box, part, group, volume_ml, atrophy_mm, gen, prior)
        crop_voxels = paste(crop, start, box, part, group, lacune, chronic)
        crop.lesions.append({
            "type": kind, "stage": "chronic" if chronic else "acute", "side": SIDE_NAME[lesion_side],
            "cerebellar": cerebellar, "volume_ml": round(volume_ml, 3), "target_ml": round(target_ml, 3),
            "crop_ml": crop_voxels / 1000,
        })  # fmt: skip


def lesion_crop(subject, gen, lesion_gen, size: int, prior: SynthPrior, lesions: LesionPrior) -> LesionCrop:
    """The crop of `synth_sample` (same draws of `gen`) and, unless a negative, its lesions."""
    from seqinv.physics.anatomy import draw_deformation, sample_generation, source_coords

    deformation = draw_deformation(subject.anatomy.shape, gen, prior.anatomy)
    start = crop_start(subject, deformation, size, gen, prior)
    coords = source_coords(deformation, start, (size,) * 3)
    kinds, bone_depth, classes, _ = sample_generation(subject.anatomy, coords, deformation)
    crop = LesionCrop(kinds, bone_depth, classes, torch.zeros(kinds.shape, dtype=torch.uint8))
    crop.record = {"deformation": deformation.record, "start": start}
    crop.lesion_free = _chance(lesion_gen, lesions.lesion_free)
    if not crop.lesion_free:
        _, sulcal_mm = distances_mm(subject.anatomy, coords)
        draw_lesions(crop, subject, deformation, start, sulcal_mm, lesion_gen, lesions)
    return crop


def painted(crop: LesionCrop) -> tuple[torch.Tensor, torch.Tensor]:
    """(kinds, classes) with the parts painted in: extra kinds and classes, widened ventricle as CSF."""
    kinds, classes = crop.kinds.clone(), crop.classes.clone()
    for code in LESION_PARTS:
        where = crop.part == code
        kinds[where], classes[where] = PART_KIND[code], PART_CLASS[code]
    for code, cls in WIDEN_CLASS.items():
        where = crop.part == code
        kinds[where], classes[where] = KIND["csf"], cls
    return kinds, classes


def _draw(gen, ranges: dict) -> torch.Tensor:
    low = torch.tensor([ranges[p][0] for p in PARAMS], dtype=torch.float32)
    high = torch.tensor([ranges[p][1] for p in PARAMS], dtype=torch.float32)
    return low + (high - low) * torch.rand(low.shape, generator=gen)


def stroke_values(gen, prior: SynthPrior):
    """`physics_image`'s `extend`: appends the qMRI values of core and rim (`STROKE_VALUES`, widened like
    every kind's) and of the cavity (the subject's CSF times `CAVITY_FACTORS`), in `LESION_PARTS` order."""

    def extend(values):
        rows = {code: _draw(gen, STROKE_VALUES[code]) for code in (CORE, RIM)}
        for code in (CORE, RIM):
            rows[code] *= 1.0 + prior.physics_widen * (2.0 * torch.rand(len(PARAMS), generator=gen) - 1.0)
        rows[CAVITY] = values[KIND["csf"]] * _draw(gen, CAVITY_FACTORS)
        return torch.cat([values, torch.stack([rows[code] for code in LESION_PARTS]).to(values.dtype)])

    return extend


def lesion_mixture(gen, prior: SynthPrior, lesions: LesionPrior):
    """`mixture_image`'s `extend`: means U(0, 1) and stds U(0, std_max) of core, cavity and rim; the
    cavity's mean near the lateral ventricle's with probability `csf_cavity`."""

    def extend(means, stds):
        extra = torch.rand(len(LESION_PARTS), generator=gen)
        spread = torch.rand(len(LESION_PARTS), generator=gen) * prior.std_max
        if _chance(gen, lesions.csf_cavity):
            cavity = LESION_PARTS.index(CAVITY)
            extra[cavity] = min(1.0, max(0.0, float(means[GEN_INDEX[4]]) + _uniform(gen, -0.08, 0.08)))
        return torch.cat([means, extra]), torch.cat([stds, spread])

    return extend


def render(crop: LesionCrop, gen, lesion_gen, prior: SynthPrior, lesions: LesionPrior,
           sequences=None) -> dict:  # fmt: skip
    """The crop's image (physics or mixture, then `finish`, z-scored) and lesion label, as
    `synth_sample` renders its crop: `gen` continues its draws, the parts' draw from `lesion_gen`."""
    drawn = bool(crop.part.any())
    kinds, classes = painted(crop) if drawn else (crop.kinds, crop.classes)
    if _chance(gen, prior.physics):
        extend = stroke_values(lesion_gen, prior) if drawn else None
        image, record = physics_image(kinds, crop.bone_depth, gen, prior, sequences, extend)
    else:
        extend = lesion_mixture(lesion_gen, prior, lesions) if drawn else None
        image, record = mixture_image(classes, gen, prior, extend)
    image, acquisition = finish(image, gen, prior)
    lesion_record = {"lesion_free": crop.lesion_free, "lesions": crop.lesions}
    record = record | acquisition | crop.record | lesion_record
    return {"image": zscore(image)[None].float(), "label": crop.label[None].long(), "record": record}


def synth_lesion_sample(subject, seed: int, size: int, prior: SynthPrior, lesions: LesionPrior,
                        sequences=None) -> dict:  # fmt: skip
    """One arc sample: `image` (1, size³) z-scored, `label` (1, size³) 0 background / 1 lesion, `record`."""
    gen, lesion_gen = generators(seed)
    crop = lesion_crop(subject, gen, lesion_gen, size, prior, lesions)
    return render(crop, gen, lesion_gen, prior, lesions, sequences)


class SynthLesionPatchMaker:
    """`PatchDataset`'s sample maker for `--phantom-source synth` with task arc."""

    def __init__(self, patch_size: int, prior: SynthPrior | None = None, sequences=None,
                 lesions: LesionPrior | None = None):  # fmt: skip
        self.patch_size, self.prior, self.sequences = patch_size, prior or SynthPrior(), sequences
        self.lesions = lesions or LesionPrior()
        self.prior.check()
        self.lesions.check()

    def sample(self, subject, seed: int) -> dict:
        sample = synth_lesion_sample(subject, seed, self.patch_size, self.prior, self.lesions, self.sequences)
        return {"image": sample["image"], "label": sample["label"]}


def lesion_prior(opts) -> LesionPrior:
    """The lesion priors from the training options (`lesion_free` where the options have it)."""
    free = getattr(opts, "lesion_free", LesionPrior.lesion_free)
    return dataclasses.replace(LesionPrior(), lesion_free=free)
