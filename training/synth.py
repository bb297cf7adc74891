"""The SynthSeg-grade segmentation generator (`--phantom-source synth`; ../GENERATOR.md in the project's
shared notes sets it beside SynthSeg's, Billot et al. 2023).

Each sample is a new virtual subject rendered only where its crop lies, a pure function of (run seed,
sample index):

1. anatomy: a label map of the pool under a random affine (per-axis scale, rotation, shear, left-right
   flip), a smooth displacement and, sometimes, atrophy (`seqinv.physics.anatomy.draw_deformation`);
   the crop lies anywhere in the head, neck and face included, but always holds brain;
2. contrast: with probability `physics`, a physics sequence on qMRI values drawn from ranges widened by
   `physics_widen`; otherwise SynthSeg's Gaussian mixture: every generation class
   (`anatomy.GEN_LABELS`: left and right apart, label 24 apart, each extra-cerebral label apart) gets a
   mean U(0, 1) and a standard deviation U(0, `std_max`) per voxel; background random like any class,
   dark or zero;
3. partial volume, a bias field exp(N(0, s²)) on coarse control points, a random acquired resolution
   (isotropic 1-4 mm or one axis 1-8 mm, blur tied to it) interpolated back to 1 mm, percentile
   rescale, gamma exp(N(0, 0.5²)), z-score.

Targets (the CSF convention of docs/physics.md): background, CSF, GM, WM as `anatomy.KIND_CLASS` groups
them, except that label 24 (CSF outside the brain) counts as CSF only within `csf_rim_mm` of GM or WM:
the ventricles, the sulci and a thin shell at the brain's surface, not the whole subarachnoid space.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from seqinv.physics.anatomy import _chance, _uniform
from training.augment import percentile_rescale, zscore


def _default_anatomy():
    from seqinv.physics.anatomy import AnatomyAugment

    # SynthSeg: per-axis scale U(0.8, 1.2), rotation ±15°, smooth field std up to 4 voxels; atrophy rarer
    # and milder than the physics phantoms' (it thickened the CSF rim in half of ixi 1.2's samples)
    return AnatomyAugment(
        scale=(0.9, 1.1), axis_scale=0.1, shear=0.02, large_mm=10.0, small_mm=3.0,
        atrophy_prob=0.25, ventricle_mm=4.0, sulcal_mm=1.0,
    )  # fmt: skip


@dataclass(frozen=True)
class SynthPrior:
    """Every prior of the generator, with its range (the defaults are SynthSeg's where it has one)."""

    physics: float = 0.2  # share of samples from a physics sequence instead of the Gaussian mixture
    physics_widen: float = 0.25  # physics: each qMRI range widened by this fraction of its value, both ways
    std_max: float = 0.12  # mixture: per-class standard deviation U(0, std_max) (SynthSeg: 30 / 250)
    background: tuple[float, float, float] = (0.7, 0.25, 0.05)  # random like a class, dark, zero
    dark_max: float = 0.06  # a dark background's mean U(0, dark_max) (SynthSeg: 15 / 250)
    noise_max: float = 0.04  # physics: Gaussian noise std U(0, noise_max) of the image's 99th percentile
    pv_range: tuple[float, float] = (0.0, 0.6)  # partial-volume blur, voxels
    bias_prob: float = 0.95
    bias_max: float = 0.7  # log-field std U(0, bias_max)
    bias_cell_mm: float = 50.0  # control-point spacing (SynthSeg: 4³ points over 160 mm)
    gamma_sd: float = 0.5  # log gamma ~ N(0, gamma_sd²), clipped at ±2.5 sd
    resample_prob: float = 0.95  # share of samples acquired at a lower resolution
    isotropic: float = 0.1  # share of those isotropic (the rest: one random axis)
    isotropic_mm: tuple[float, float] = (1.0, 4.0)
    slice_mm: tuple[float, float] = (1.0, 8.0)
    blur_fwhm: tuple[float, float] = (1.0, 1.77)  # profile FWHM / resolution (SynthSeg's sigma 0.75 r: 1.77)
    brain_centre: float = 0.5  # share of crops centred on a brain voxel (the rest: any head voxel)
    brain_min: float = 0.02  # least share of brain in a crop centred elsewhere
    csf_rim_mm: float = 1.5  # label 24 is CSF within this distance of GM or WM, background beyond
    anatomy: object = field(default_factory=_default_anatomy)

    def check(self) -> None:
        from seqinv.errors import ParameterError

        for name in ("physics", "bias_prob", "resample_prob", "isotropic", "brain_centre", "brain_min"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParameterError(f"synth prior {name} = {getattr(self, name)}: a rate in [0, 1]")
        if abs(sum(self.background) - 1.0) > 1e-6 or min(self.background) < 0:
            raise ParameterError(f"synth prior background {self.background}: three shares summing to 1")
        if not 0.0 <= self.csf_rim_mm <= 12.0:
            raise ParameterError(f"--csf-rim-mm {self.csf_rim_mm}: a distance in [0, 12] mm")


def crop_start(subject, deformation, size: int, gen: torch.Generator, prior: SynthPrior) -> list[int]:
    """Output-box corner of a crop that holds brain: centred on a brain voxel with probability
    `brain_centre`, else on any head voxel whose box (in the label map, before deformation) holds at
    least `brain_min` brain (8 tries, then a brain voxel)."""
    from training.crops import _random_voxel

    voxel = None
    if not _chance(gen, prior.brain_centre):
        for _ in range(8):
            candidate = _random_voxel(subject.head, gen)
            if candidate is not None and _brain_share(subject.brain, candidate, size) >= prior.brain_min:
                voxel = candidate
                break
    if voxel is None:
        voxel = _random_voxel(subject.brain, gen) or [n // 2 for n in subject.anatomy.shape]
    src = np.asarray(voxel, dtype=np.float64) - deformation.centre
    centre = deformation.centre + np.linalg.solve(deformation.matrix, src)
    return [int(round(c)) - size // 2 for c in centre]


def _brain_share(brain: torch.Tensor, centre, size: int) -> float:
    box = tuple(slice(max(0, c - size // 2), max(0, c - size // 2 + size)) for c in centre)
    return float(brain[box].sum()) / size**3


def targets(kinds, classes, distance, rim_mm: float) -> torch.Tensor:
    """Tissue classes 0-3 of the crop: label 24 beyond `rim_mm` of GM or WM is background."""
    from seqinv.physics.anatomy import DIST_SCALE, GEN_INDEX, classes_of

    labels = classes_of(kinds)
    far = (classes == GEN_INDEX[24]) & (distance.float() > rim_mm * DIST_SCALE)
    return labels.masked_fill_(far, 0)


def mixture_image(
    classes: torch.Tensor, gen: torch.Generator, prior: SynthPrior, extend=None
) -> tuple[torch.Tensor, dict]:
    """SynthSeg's Gaussian mixture: per generation class a mean U(0, 1) and std U(0, std_max) per voxel.

    `extend(means, stds)` may append (means, stds) of extra classes (indices from `len(GEN_LABELS)` on,
    training/synth_lesion.py); it must draw from its own generator so that `gen`'s draws stay the same."""
    from seqinv.physics.anatomy import GEN_INDEX, GEN_LABELS

    n = len(GEN_LABELS)
    means = torch.rand(n, generator=gen)
    stds = torch.rand(n, generator=gen) * prior.std_max
    pick = _uniform(gen, 0.0, 1.0)
    background = "random"
    if pick >= prior.background[0] + prior.background[1]:
        background, means[GEN_INDEX[0]], stds[GEN_INDEX[0]] = "zero", 0.0, 0.0
    elif pick >= prior.background[0]:
        background, means[GEN_INDEX[0]] = "dark", _uniform(gen, 0.0, prior.dark_max)
        stds[GEN_INDEX[0]] = min(float(stds[GEN_INDEX[0]]), float(means[GEN_INDEX[0]]) / 2)
    if extend is not None:
        means, stds = extend(means, stds)
    index = classes.long()
    noise = torch.randn(classes.shape, generator=gen)
    image = means[index] + stds[index] * noise
    return image.clamp_(min=0.0), {"contrast": "mixture", "background": background}


def physics_image(kinds, bone_depth, gen: torch.Generator, prior: SynthPrior, sequences=None, extend=None):
    """A physics sequence (`seqinv.physics.priors`) on qMRI values from widened per-kind ranges, with
    within-tissue texture and Gaussian noise. `extend(values)` may append the (m, 5) qMRI values of extra
    kinds (indices from `len(KINDS)` on, training/synth_lesion.py), drawn from its own generator."""
    from seqinv.physics import simulate
    from seqinv.physics.anatomy import PARAMS, draw_values, flow_voids, kinds_to_maps, split_tissues
    from seqinv.physics.maps import QMRIMaps
    from seqinv.physics.priors import draw_sequence

    kinds = split_tissues(kinds, bone_depth, gen)
    values = draw_values(gen)
    spread = 1.0 + prior.physics_widen * (2.0 * torch.rand(values.shape, generator=gen) - 1.0)
    values = flow_voids(values * spread, gen)
    if extend is not None:
        values = extend(values)
    maps = kinds_to_maps(kinds, values, gen, 0.0)
    sequence = draw_sequence(gen, sequences)
    image = torch.nan_to_num(
        simulate(QMRIMaps(**{p: maps[i] for i, p in enumerate(PARAMS)}), sequence).float()
    )
    scale = float(torch.quantile(image.flatten()[::97], 0.99).clamp_min(1e-6))
    image = image + torch.randn(image.shape, generator=gen) * (_uniform(gen, 0, prior.noise_max) * scale)
    return image.clamp_(min=0.0), {"contrast": "physics", "sequence": sequence.to_dict()}


def draw_resolution(gen: torch.Generator, prior: SynthPrior) -> tuple[list[float], float]:
    """Acquired voxel size per axis (mm) and the profile's FWHM as a multiple of it."""
    resolution = [1.0, 1.0, 1.0]
    if _chance(gen, prior.resample_prob):
        if _chance(gen, prior.isotropic):
            resolution = [_uniform(gen, *prior.isotropic_mm)] * 3
        else:
            resolution[min(2, int(3 * _uniform(gen, 0, 1)))] = _uniform(gen, *prior.slice_mm)
    return resolution, _uniform(gen, *prior.blur_fwhm)


def resample(image: torch.Tensor, resolution, fwhm: float, gen: torch.Generator) -> torch.Tensor:
    """The 1 mm image acquired at `resolution` (Gaussian profile of FWHM `fwhm` x resolution), linearly
    interpolated back to 1 mm (what inference's resampling to the model grid does)."""
    from seqinv.physics.acquisition import axis_matrix

    out = image
    for axis, size_mm in enumerate(resolution):
        if size_mm <= 1.0:
            continue
        matrix = axis_matrix(out.shape[axis], fwhm * size_mm, size_mm, "gaussian", _uniform(gen, 0, 1))
        out = torch.movedim(torch.movedim(out, axis, -1) @ matrix.t(), -1, axis)
    return out.contiguous()


def bias_field(shape, gen: torch.Generator, prior: SynthPrior) -> torch.Tensor | None:
    from seqinv.physics.anatomy import smooth_field

    if not _chance(gen, prior.bias_prob):
        return None
    return torch.exp(_uniform(gen, 0.0, prior.bias_max) * smooth_field(shape, prior.bias_cell_mm, gen))


def finish(image: torch.Tensor, gen: torch.Generator, prior: SynthPrior) -> tuple[torch.Tensor, dict]:
    """Bias, resolution, percentile rescale and gamma of a rendered [0, ∞) image; returns it in [0, 1]."""
    from seqinv.physics.anatomy import gaussian_blur

    image = gaussian_blur(image, _uniform(gen, *prior.pv_range))
    field = bias_field(image.shape, gen, prior)
    if field is not None:
        image = image * field
    resolution, fwhm = draw_resolution(gen, prior)
    image = percentile_rescale(resample(image, resolution, fwhm, gen))
    log_gamma = max(-2.5, min(2.5, float(torch.randn((), generator=gen)))) * prior.gamma_sd
    record = {"resolution_mm": [round(r, 2) for r in resolution], "fwhm": round(fwhm, 2),
              "bias": field is not None, "gamma": round(math.exp(log_gamma), 3)}  # fmt: skip
    return image.clamp_(0.0, 1.0).pow_(math.exp(log_gamma)), record


def synth_sample(subject, seed: int, size: int, prior: SynthPrior, sequences=None) -> dict:
    """One training sample: `image` (1, size³) z-scored, `label` (1, size³) classes 0-3, `record`."""
    from seqinv.physics.anatomy import draw_deformation, sample_generation, source_coords

    gen = torch.Generator().manual_seed(int(seed))
    deformation = draw_deformation(subject.anatomy.shape, gen, prior.anatomy)
    start = crop_start(subject, deformation, size, gen, prior)
    coords = source_coords(deformation, start, (size,) * 3)
    kinds, bone_depth, classes, distance = sample_generation(subject.anatomy, coords, deformation)
    labels = targets(kinds, classes, distance, prior.csf_rim_mm)
    if _chance(gen, prior.physics):
        image, record = physics_image(kinds, bone_depth, gen, prior, sequences)
    else:
        image, record = mixture_image(classes, gen, prior)
    image, acquisition = finish(image, gen, prior)
    record = record | acquisition | {"deformation": deformation.record, "start": start}
    return {"image": zscore(image)[None].float(), "label": labels[None].long(), "record": record}


class SynthPatchMaker:
    """`PatchDataset`'s sample maker for `--phantom-source synth` (task ixi)."""

    def __init__(self, patch_size: int, prior: SynthPrior | None = None, sequences=None):
        self.patch_size, self.prior, self.sequences = patch_size, prior or SynthPrior(), sequences
        self.prior.check()

    def sample(self, subject, seed: int) -> dict:
        sample = synth_sample(subject, seed, self.patch_size, self.prior, self.sequences)
        return {"image": sample["image"], "label": sample["label"]}


def synth_prior(opts) -> SynthPrior:
    """The generator's priors from the training options (`physics_share`, `csf_rim_mm`)."""
    return dataclasses.replace(SynthPrior(), physics=opts.physics_share, csf_rim_mm=opts.csf_rim_mm)
