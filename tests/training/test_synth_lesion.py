"""Stroke lesions in the SynthSeg-grade generator (training/synth_lesion.py) on SynthSeg's label map 1."""

import dataclasses

import pytest
import torch

from seqinv.errors import ParameterError
from seqinv.physics.anatomy import CLASS_OF_KIND, GEN_INDEX, GEN_LABELS, KIND, load_anatomy
from training.head_phantoms import HeadSubject
from training.phantom_cache import default_cache_dir
from training.synth import SynthPrior, synth_sample
from training.synth_lesion import (
    CAVITY,
    CORE,
    GROUP_OF_CLASS,
    PART_CLASS,
    RIM,
    WIDEN_LEFT,
    LesionPrior,
    SynthLesionPatchMaker,
    generators,
    lesion_crop,
    lesion_mixture,
    painted,
    render,
    synth_lesion_sample,
)

PRIOR = SynthPrior(brain_centre=1.0)
LESIONS = LesionPrior(lesion_free=0.0)
# physics without the acquisition's distortions: the image orders tissues as their qMRI values do
CLEAN = SynthPrior(physics=1.0, brain_centre=1.0, bias_prob=0.0, resample_prob=0.0, pv_range=(0.0, 0.0),
                   gamma_sd=0.0, noise_max=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def head():
    return HeadSubject("synthseg-01", load_anatomy("bundled", cache_dir=default_cache_dir()))


def _crop(head, seed, size=56, prior=PRIOR, lesions=LESIONS):
    gen, lesion_gen = generators(seed)
    return lesion_crop(head, gen, lesion_gen, size, prior, lesions)


@pytest.fixture(scope="module")
def crops(head):
    return [_crop(head, seed) for seed in range(10)]


def test_sample_shapes_labels_and_determinism(head):
    first = synth_lesion_sample(head, 3, 48, PRIOR, LESIONS)
    again = synth_lesion_sample(head, 3, 48, PRIOR, LESIONS)
    other = synth_lesion_sample(head, 4, 48, PRIOR, LESIONS)
    assert first["image"].shape == (1, 48, 48, 48) and first["label"].shape == (1, 48, 48, 48)
    assert first["image"].dtype == torch.float32 and first["label"].dtype == torch.long
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])
    assert abs(float(first["image"].mean())) < 1e-4 and abs(float(first["image"].std()) - 1) < 1e-3
    assert set(torch.unique(first["label"]).tolist()) == {0, 1}
    assert torch.equal(first["label"][0].bool(), _crop(head, 3, 48).label)


def test_lesion_volumes_lie_in_the_stated_ranges(crops):
    lesions = [lesion for crop in crops for lesion in crop.lesions]
    territories = [x["volume_ml"] for x in lesions if x["type"] == "territory"]
    lacunes = [x["volume_ml"] for x in lesions if x["type"] == "lacune"]
    assert territories and lacunes
    assert all(1.0 <= v <= 150.0 for v in territories), territories
    assert all(0.1 <= v <= 2.0 for v in lacunes), lacunes
    assert max(territories) > 10.0  # not all small: the range is used
    # what the crop shows of a lesion is part of it (1 mm voxels: 1000 per mL)
    assert all(x["crop_ml"] <= x["volume_ml"] + 0.05 for x in lesions)
    for crop in crops:  # lesions may overlap
        shown = [x["crop_ml"] for x in crop.lesions]
        assert max(shown, default=0) - 1e-6 <= float(crop.label.sum()) / 1000 <= sum(shown) + 1e-6


def test_lesions_lie_in_the_parenchyma_of_one_hemisphere_each(head, crops):
    for crop in crops:
        label = crop.label
        assert bool((CLASS_OF_KIND[crop.kinds[label].long()] >= 2).all())  # GM or WM, as sampled
        assert bool((GROUP_OF_CLASS[crop.classes[label].long()] > 0).all())
        # the widened ventricle is parenchyma turned CSF, never lesion
        widened = crop.part >= WIDEN_LEFT
        assert not bool((widened & label).any())
        assert bool((CLASS_OF_KIND[crop.kinds[widened].long()] >= 2).all())
    one_side = dataclasses.replace(LESIONS, bilateral=0.0, lacunes=(2, 4))
    for seed in range(3):
        crop = _crop(head, seed, lesions=one_side)
        groups = set(torch.unique(GROUP_OF_CLASS[crop.classes[crop.label].long()]).tolist())
        assert groups <= {1, 3} or groups <= {2, 4}, (seed, groups)  # cerebral or cerebellar, one side


def test_both_hemispheres_are_drawn(head, crops):
    assert {x["side"] for crop in crops for x in crop.lesions} == {"left", "right"}
    # a bilateral head's lesions pick their sides apart (where the crop holds both hemispheres)
    bilateral = dataclasses.replace(LESIONS, bilateral=1.0, territory=0.0, lacunes=(3, 4))
    sides = [{x["side"] for x in _crop(head, seed, 64, lesions=bilateral).lesions} for seed in range(4)]
    assert {"left", "right"} in sides


def test_chronic_lesions_lose_their_cortex_and_widen_the_ventricle(head):
    chronic = dataclasses.replace(LESIONS, chronic=1.0, territory=1.0, lacunes=(0, 0), cerebellar=0.0)
    widened = 0
    for seed in range(5):
        crop = _crop(head, seed, 48, lesions=chronic)
        cortex = crop.label & (crop.kinds == KIND["cortex"])
        assert bool((crop.part[cortex] == CAVITY).all())
        assert set(torch.unique(crop.part[crop.label]).tolist()) <= {CAVITY, RIM}
        widened += int((crop.part >= WIDEN_LEFT).sum())
    assert widened > 0
    acute = _crop(head, 0, 48, lesions=dataclasses.replace(chronic, chronic=0.0, acute_rim=0.0))
    assert set(torch.unique(acute.part).tolist()) == {0, CORE}


def test_lesion_free_share_and_crops_that_hold_a_lesion(head):
    prior = LesionPrior()
    assert prior.lesion_free >= 1 / 3
    small = dataclasses.replace(prior, territory_ml=(1.0, 4.0), lacunes=(0, 1))  # fast; the share matters
    crops = [_crop(head, seed, 32, lesions=small) for seed in range(30)]
    free = [c for c in crops if c.lesion_free]
    assert abs(len(free) / len(crops) - prior.lesion_free) < 0.2
    assert all(not bool(c.part.any()) for c in free)
    holding = [bool(c.label.any()) for c in crops if not c.lesion_free]
    assert sum(holding) >= 0.8 * len(holding)


@pytest.mark.parametrize("physics", [0.0, 1.0])
def test_negatives_are_the_tissue_generators_samples(head, physics):
    # deep grey nuclei, choroid plexus, vessels and ventricle rims keep every intensity synth.py gives them
    prior = dataclasses.replace(PRIOR, physics=physics)
    lesions = LesionPrior(lesion_free=1.0)
    for seed in (0, 1):
        negative = synth_lesion_sample(head, seed, 40, prior, lesions, ("fse",))
        tissue = synth_sample(head, seed, 40, prior, ("fse",))
        assert torch.equal(negative["image"], tissue["image"]) and not bool(negative["label"].any())
        assert negative["record"]["lesion_free"]


@pytest.mark.parametrize("sequence", ["fse", "mprage"])
def test_chronic_cavities_look_like_csf_in_physics_mode(head, sequence):
    chronic = dataclasses.replace(LESIONS, chronic=1.0, territory=1.0, lacunes=(0, 0), cerebellar=0.0,
                                  territory_ml=(5.0, 50.0))  # fmt: skip
    checked = 0
    for seed in range(3):
        gen, lesion_gen = generators(seed)
        crop = lesion_crop(head, gen, lesion_gen, 48, CLEAN, chronic)
        image = render(crop, gen, lesion_gen, CLEAN, chronic, (sequence,))["image"][0]
        cavity, csf = image[crop.part == CAVITY], image[crop.kinds == KIND["csf"]]
        wm = image[crop.kinds == KIND["wm"]]
        if len(cavity) < 200 or len(csf) < 200:
            continue
        gap = abs(float(cavity.mean() - csf.mean()))
        assert gap < 0.35 and gap < abs(float(cavity.mean() - wm.mean())), (seed, gap)
        checked += 1
    assert checked >= 2


def test_mixture_gives_the_parts_classes_of_their_own(crops):
    crop = next(c for c in crops if c.label.any())
    _, classes = painted(crop)
    assert set(torch.unique(classes[crop.label]).tolist()) <= set(PART_CLASS.values())
    assert torch.equal(classes[crop.part == 0], crop.classes[crop.part == 0])
    n = len(GEN_LABELS)
    means, stds = torch.rand(n, generator=torch.Generator().manual_seed(0)), torch.zeros(n)
    near = LesionPrior(csf_cavity=1.0)
    extend = lesion_mixture(torch.Generator().manual_seed(1), PRIOR, near)
    more_means, more_stds = extend(means, stds)
    assert more_means.shape == (n + 3,) and float(more_stds.max()) <= PRIOR.std_max
    cavity = PART_CLASS[CAVITY]
    assert abs(float(more_means[cavity] - means[GEN_INDEX[4]])) <= 0.08 + 1e-6


def test_maker_and_prior_checks(head):
    maker = SynthLesionPatchMaker(32, PRIOR, lesions=LESIONS)
    sample = maker.sample(head, 5)
    assert set(sample) == {"image", "label"} and sample["label"].shape == (1, 32, 32, 32)
    with pytest.raises(ParameterError, match="lesion_free"):
        LesionPrior(lesion_free=1.5).check()
    with pytest.raises(ParameterError, match="territory_ml"):
        LesionPrior(territory_ml=(20.0, 5.0)).check()
    with pytest.raises(ParameterError, match="above 0 mL"):
        LesionPrior(lacune_ml=(0.0, 2.0)).check()
