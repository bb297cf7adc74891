"""Training samples from whole-head SynthSeg phantoms (`seqinv.physics.anatomy`), chosen with
`--phantom --phantom-source synthseg` (the default `icbm` keeps the ICBM152 phantoms of
training/phantom_cache.py).

Each sample is a new virtual subject rendered only where the crop lies: random anatomy (affine, head size,
smooth deformation, atrophy, left-right flip) → per-kind qMRI values and a physics sequence from the priors,
or (with probability `random_contrast`) a random intensity per kind → partial volume on the signal →
receive field → percentile rescale → clinical acquisition (thick slices, gaps, partial coverage; labels stay
the 1 mm truth, set to background outside the acquired slab) → gamma → bias/Gibbs/noise/dropout as for the
ICBM phantoms → z-score. A sample is a pure function of (run seed, sample index), as in training/patches.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from training.augment import (
    AugmentConfig,
    apply,
    intensity_transforms,
    percentile_rescale,
    seed_transforms,
    zscore,
)
from training.contrasts import receive_field
from training.crops import _random_voxel
from training.patches import PatchMaker
from training.task_ops import NO_TASK, task_ops
from training.views import ViewMaker


@dataclass(frozen=True)
class HeadSampling:
    """Rates of the head-phantom sampler (the anatomy and acquisition priors live in seqinv.physics)."""

    random_contrast: float = 0.3  # share of samples with random per-kind intensities instead of physics
    clinical: float = 0.5  # share of samples acquired with thick slices (AcquisitionPrior.clinical_prob)
    head_focus: float = 0.7  # share of crops centred on a brain voxel (the rest: anywhere in the head)
    lesion: float = 0.0  # share of crops with a stroke-like lesion in their parenchyma (TaskOps.lesion_rate)
    lesion_central: float = 0.0  # share of those whose lesion lies in the crop's central half
    superficial_wm: float = 0.0  # share of samples with WM darker under the cortex (anatomy.superficial_wm)
    pv_range: tuple[float, float] = (0.3, 0.6)  # partial-volume blur, voxels (drawn per sample)
    anatomy: object = None  # seqinv.physics.anatomy.AnatomyAugment (None: its defaults)
    acquisition: object = None  # seqinv.physics.acquisition.AcquisitionPrior (None: from `clinical`)

    def acquisition_prior(self):
        import dataclasses

        from seqinv.physics.acquisition import AcquisitionPrior

        return self.acquisition or dataclasses.replace(AcquisitionPrior(), clinical_prob=self.clinical)


@dataclass
class HeadSubject:
    """A label map of the pool (`seqinv.physics.anatomy.HeadAnatomy`) and its brain mask (crop centres)."""

    name: str
    anatomy: object
    brain: torch.Tensor = field(repr=False, default=None)
    head: torch.Tensor = field(repr=False, default=None)
    labels: None = None  # no fixed label volume: every sample renders its own (PatchMaker duck typing)
    lesion: None = None

    def __post_init__(self):
        if self.brain is None:
            self.brain = self.anatomy.brain_mask()
        if self.head is None:
            self.head = self.anatomy.kinds > 0  # not air


def head_pool(count: int, folder: str = "", cache_dir=None, maps=None) -> list[HeadSubject]:
    """The first `count` of `maps` (default `TRAINING_MAPS`, 1-16; the test maps 17 and 18 never)."""
    from seqinv.errors import ParameterError
    from seqinv.physics.anatomy import TRAINING_MAPS, load_anatomy
    from seqinv.physics.sets import refuse_test

    maps = TRAINING_MAPS if maps is None else maps
    refuse_test("train", maps=maps)
    if not 1 <= count <= len(maps):
        raise ParameterError(
            f"--phantoms {count}: need 1-{len(maps)} label maps, e.g. --phantoms {len(maps)}"
        )
    numbers = maps[:count]
    return [HeadSubject(f"synthseg-{n:02d}", load_anatomy(n, folder or None, cache_dir)) for n in numbers]


def _crop_start(subject: HeadSubject, deformation, size: int, gen, focus: float) -> list[int]:
    """Output-box corner: centred on a random brain voxel with probability `focus`, else on a random voxel
    of the head (neck, face, skull: the crop still reaches into the air around it), mapped through the
    inverse affine."""
    mask = subject.brain if float(torch.rand((), generator=gen)) < focus else subject.head
    voxel = _random_voxel(mask, gen)
    if voxel is None:
        voxel = [n // 2 for n in subject.anatomy.shape]
    src = np.asarray(voxel, dtype=np.float64) - deformation.centre
    centre = deformation.centre + np.linalg.solve(deformation.matrix, src)
    return [int(round(c)) - size // 2 for c in centre]


def render_crop(subject: HeadSubject, gen: torch.Generator, size: int, cfg: HeadSampling) -> dict:
    """One virtual subject's size³ crop before acquisition: maps, kinds, labels, the box and the record."""
    from seqinv.physics.anatomy import draw_deformation, render

    anatomy = subject.anatomy
    deformation = draw_deformation(anatomy.shape, gen, cfg.anatomy)
    start = _crop_start(subject, deformation, size, gen, cfg.head_focus)
    sample = render(
        anatomy,
        deformation,
        start,
        (size,) * 3,
        gen,
        blur_maps=False,
        pv_range=cfg.pv_range,
        lesion_prob=cfg.lesion,
        lesion_central=cfg.lesion_central,
    )
    return {"sample": sample, "start": start, "shape": anatomy.shape}


def contrast_image(sample, gen: torch.Generator, cfg: HeadSampling, kinds=None) -> tuple[torch.Tensor, dict]:
    """The crop's signal in [0, 1]: a physics sequence (priors) or, at rate `random_contrast`, random
    intensities per kind; partial-volume blur on the signal, receive field, percentile rescale."""
    from seqinv.physics import simulate
    from seqinv.physics.anatomy import (
        gaussian_blur,
        kinds_to_random_image,
        random_intensities,
        superficial_wm,
    )
    from seqinv.physics.priors import draw_sequence

    if float(torch.rand((), generator=gen)) < cfg.random_contrast:
        intensity = random_intensities(gen, lesion=sample.lesion is not None)
        image = kinds_to_random_image(sample.kinds, intensity, gen, 0.0)
        record = {"contrast": "random"}
    else:
        sequence = draw_sequence(gen, kinds)
        image = torch.nan_to_num(simulate(sample.maps, sequence).float())
        record = {"contrast": "physics", "sequence": sequence.to_dict()}
    field = receive_field(image.shape, gen)
    # drawn after everything else (only when enabled): runs without it keep their random streams
    if cfg.superficial_wm > 0 and float(torch.rand((), generator=gen)) < cfg.superficial_wm:
        image = superficial_wm(image, sample.kinds, gen)
        record["superficial_wm"] = True
    image = gaussian_blur(image, sample.record["pv_sigma_vox"]) * field
    return percentile_rescale(image), record


def acquire_crop(
    image, labels, start, head_shape, gen, cfg: HeadSampling
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Clinical acquisition of a [0, 1] crop (resolution, coverage, gamma); labels stay 1 mm, background
    outside the acquired slab."""
    from seqinv.physics.acquisition import acquire, apply_gamma, coverage_mask, draw_acquisition

    acq = draw_acquisition(gen, cfg.acquisition_prior())
    image = acquire(image, acq)
    if acq.coverage is not None:  # superior-inferior is the output grid's third (RAS z) axis
        z = torch.arange(start[2], start[2] + image.shape[-1], dtype=torch.float32)
        keep = coverage_mask(z, 0.0, float(head_shape[2] - 1), acq.coverage)
        image = image * keep
        labels = labels * keep.to(labels.dtype)
    return apply_gamma(image.clamp(0, 1), acq.gamma, acq.window), labels, acq.to_dict()


class HeadPatchMaker(PatchMaker):
    """Fine-tuning patches from head phantoms (every trainable task): a `PatchMaker` whose image and labels
    come from `render_crop` instead of a cached phantom; the same intensity augmentation follows. For a
    task whose target is the lesion the label is its mask (crops with a lesion at rate `head.lesion`)."""

    def __init__(self, task: str, patch_size: int, aug: AugmentConfig | None = None, noise=None, *,
                 head: HeadSampling | None = None, kinds=None, **kwargs):  # fmt: skip
        super().__init__(task, patch_size, aug, noise, kinds=kinds, **kwargs)
        self.head = head or HeadSampling()
        # resolution comes from the acquisition model; keep only bias, Gibbs, noise and dropout
        self.intensity = intensity_transforms(self.aug, self.patch_size, noise=not self.denoise)

    def sample(self, subject: HeadSubject, seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        crop = render_crop(subject, gen, self.patch_size, self.head)
        sample = crop["sample"]
        image, record = contrast_image(sample, gen, self.head, self.kinds)
        labels = _lesion_labels(sample) if self.spec.lesion else sample.labels
        image, labels, acq = acquire_crop(image, labels, crop["start"], crop["shape"], gen, self.head)
        seed_transforms(self.intensity, seed + 2)
        image = apply(self.intensity, image[None]).float()
        if self.denoise:
            return self._noisy_pair(image, gen)
        return {"image": zscore(image), "label": labels[None].long()}


def _lesion_labels(sample) -> torch.Tensor:
    if sample.lesion is None:
        return torch.zeros_like(sample.labels)
    return sample.lesion.to(sample.labels.dtype)


class HeadViewMaker(ViewMaker):
    """Pretraining view pairs from head phantoms: one virtual subject's crop, two contrasts (per the
    strategy; each physics or random at rate `random_contrast`), and per view spatial augmentation, then
    an independent clinical acquisition and the intensity augmentation. Targets: after spatial, before
    acquisition."""

    def __init__(self, strategy: str, patch_size: int, aug: AugmentConfig | None = None, *,
                 head: HeadSampling | None = None, **kwargs):  # fmt: skip
        super().__init__(strategy, patch_size, aug, **kwargs)
        self.head = head or HeadSampling()
        self.intensity = intensity_transforms(self.aug, self.patch_size)

    def view(self, image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        from seqinv.physics.acquisition import acquire, apply_gamma, draw_acquisition

        seed_transforms(self.spatial, seed)
        seed_transforms(self.intensity, seed + 1)
        spatial = apply(self.spatial, {"image": image[None]})["image"]
        target = spatial.clone()
        import dataclasses

        gen = torch.Generator().manual_seed(seed + 2)
        # no coverage cut: a blank slab would only teach the reconstruction head to paint the target
        acq = draw_acquisition(gen, dataclasses.replace(self.head.acquisition_prior(), coverage_prob=0.0))
        degraded = apply_gamma(acquire(spatial, acq).clamp(0, 1), acq.gamma, acq.window)
        return zscore(apply(self.intensity, degraded).float()), target

    def pair(self, subject: HeadSubject, seed: int) -> dict:
        from seqinv.physics import make_sequence

        gen = torch.Generator().manual_seed(seed)
        sample = render_crop(subject, gen, self.crop_size, self.head)["sample"]
        if self.strategy == "base":
            image1, rec1 = _fixed_contrast(sample, gen, make_sequence("mprage"))
            image2, rec2 = image1, rec1
        else:
            image1, rec1 = contrast_image(sample, gen, self.head)
            image2, rec2 = (
                (image1, rec1) if self.strategy == "seqaug" else contrast_image(sample, gen, self.head)
            )
        v1, t1 = self.view(image1, seed * 2 + 1)
        v2, t2 = self.view(image2, seed * 2 + 2)
        return {"view1": v1, "view2": v2, "target1": t1, "target2": t2, "sequences": json.dumps([rec1, rec2])}


def _fixed_contrast(sample, gen, sequence):
    from seqinv.physics import simulate
    from seqinv.physics.anatomy import gaussian_blur

    image = gaussian_blur(
        torch.nan_to_num(simulate(sample.maps, sequence).float()), sample.record["pv_sigma_vox"]
    )
    image = image * receive_field(image.shape, gen)
    return percentile_rescale(image), {"contrast": "physics", "sequence": sequence.to_dict()}


def whole_head_lesion_share(subjects: list[HeadSubject], seed: int, count: int = 4) -> float:
    """Mean share of a whole head's grid that one lesion (`add_lesion`) covers, over `count` subjects: what
    a scan with one stroke holds (for the lesion prior correction, training/finetune.py)."""
    from seqinv.physics.anatomy import add_lesion

    shares = []
    for i, subject in enumerate(subjects[:count]):
        kinds = subject.anatomy.kinds.clone()
        mask = add_lesion(kinds, torch.Generator().manual_seed(seed + i))
        shares.append(0.0 if mask is None else float(mask.float().mean()))
    return float(np.mean(shares))


def head_sampling(opts) -> HeadSampling:
    """The sampler rates from the training options (`random_contrast`, `clinical`, the task's lesion rates
    of training/task_ops.py; pretraining names no task: no lesions)."""
    ops = task_ops(opts.task) if hasattr(opts, "task") else NO_TASK
    return HeadSampling(
        random_contrast=opts.random_contrast,
        clinical=opts.clinical,
        lesion=ops.lesion_rate,
        lesion_central=ops.lesion_central,
        superficial_wm=getattr(opts, "superficial_wm", 0.0),
        pv_range=(0.3, getattr(opts, "pv_max", 0.6)),
    )


def head_subjects(opts, cache_dir) -> tuple[list[HeadSubject], str]:
    """The label-map pool: maps 1-16 for `synthseg`; for `synth` the fitting maps only (`FIT_MAPS`, 1-14:
    15 and 16 choose checkpoints and parameters, 17 and 18 only measure)."""
    from seqinv.physics.anatomy import FIT_MAPS

    if opts.phantom_source == "synth":
        subjects = head_pool(opts.phantoms, opts.label_maps, cache_dir, FIT_MAPS)
        numbers = ", ".join(s.name.split("-")[-1] for s in subjects)
        desc = (
            f"SynthSeg whole-head label maps {numbers} through the SynthSeg-grade generator "
            f"(training/synth.py; physics share {opts.physics_share:g}, CSF rim {opts.csf_rim_mm:g} mm)"
        )
        return subjects, desc
    subjects = head_pool(opts.phantoms, opts.label_maps, cache_dir)
    desc = (
        f"{len(subjects)} SynthSeg whole-head label maps (phantoms rendered per sample; random contrast "
        f"{opts.random_contrast:g}, clinical acquisitions {opts.clinical:g})"
    )
    return subjects, desc


def whole_head_image(phantom, seed: int, *, sequence=None, acquisition=None, lesion: bool = False):
    """(image in [0, 1], labels) of a whole-head phantom (`make_head_phantom`): `sequence` (None: random
    contrast) acquired with `acquisition` (None: 1 mm), no bias or noise. Labels: the tissue classes, or
    the lesion mask with `lesion`; background outside the acquired slab."""
    from seqinv.physics import simulate
    from seqinv.physics.acquisition import acquire, apply_gamma, coverage_mask
    from seqinv.physics.anatomy import kinds_to_random_image, random_intensities

    gen = torch.Generator().manual_seed(int(seed))
    labels = torch.as_tensor(np.asarray(phantom.lesion if lesion else phantom.labels))
    if sequence is None:
        kinds = torch.as_tensor(phantom.values["kinds"])
        intensity = random_intensities(gen, lesion=phantom.lesion is not None)
        image = kinds_to_random_image(kinds, intensity, gen, phantom.values["pv_sigma_vox"])
    else:
        image = torch.nan_to_num(simulate(phantom.maps, sequence).float())
    image = percentile_rescale(image)
    if acquisition is not None:
        image = acquire(image, acquisition)
        if acquisition.coverage is not None:
            z = torch.arange(image.shape[-1], dtype=torch.float32)
            keep = coverage_mask(z, 0.0, float(image.shape[-1] - 1), acquisition.coverage)
            image, labels = image * keep, labels * keep.to(labels.dtype)
        image = apply_gamma(image.clamp(0, 1), acquisition.gamma, acquisition.window)
    return image, labels
