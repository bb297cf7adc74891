"""The SynthSeg-grade generator (training/synth.py) on the small generated head of the phantom tests."""

import dataclasses

import numpy as np
import pytest
import torch

from seqinv.errors import ParameterError
from seqinv.physics.anatomy import (
    DEVELOPMENT_MAPS,
    FIT_MAPS,
    GEN_INDEX,
    TEST_MAPS,
    AnatomyAugment,
    identity_deformation,
    load_anatomy,
    prepare_anatomy,
    sample_generation,
    source_coords,
)
from tests.physics.test_head_phantom import synthetic_head, synthetic_lia
from training.head_phantoms import HeadSubject
from training.synth import (
    SynthPatchMaker,
    SynthPrior,
    draw_resolution,
    mixture_image,
    resample,
    synth_sample,
    targets,
)

STILL = AnatomyAugment.none()


@pytest.fixture(scope="module")
def subject():
    labels, affine = synthetic_lia()
    return HeadSubject("synthetic", prepare_anatomy(labels, affine, "synthetic"))


def _whole(subject):
    """Generation classes, kinds and distances of the undeformed anatomy on its own grid."""
    anatomy = subject.anatomy
    deformation = identity_deformation(anatomy.shape)
    coords = source_coords(deformation, (0, 0, 0), anatomy.shape)
    return sample_generation(anatomy, coords, deformation)


def test_sets_are_disjoint_and_fit_maps_leave_out_development_and_test():
    assert set(FIT_MAPS).isdisjoint(DEVELOPMENT_MAPS) and set(FIT_MAPS).isdisjoint(TEST_MAPS)
    assert set(DEVELOPMENT_MAPS).isdisjoint(TEST_MAPS)
    assert sorted(FIT_MAPS + DEVELOPMENT_MAPS + TEST_MAPS) == list(range(1, 19))


def test_generation_classes_keep_every_label_apart(subject):
    kinds, _, classes, distance = _whole(subject)
    present = {int(c) for c in torch.unique(classes)}
    # the vessel (30) keeps its own class; the unknown 999 takes its nearest neighbour's (soft tissue 507)
    for label in (0, 2, 3, 4, 10, 24, 30, 506, 507, 511, 515):
        assert GEN_INDEX[label] in present, label
    assert len(present) == 11
    # distance to parenchyma: 0 inside WM, the CSF shell r in [15, 16) lies 0.5-1.5 mm from the cortex
    assert int(distance[classes == GEN_INDEX[2]].max()) == 0
    shell = distance[classes == GEN_INDEX[24]].float() / 20
    assert float(shell.min()) >= 0.5 and float(shell.max()) <= 2.0


def test_csf_rim_turns_far_extra_cerebral_csf_into_background(subject):
    kinds, _, classes, distance = _whole(subject)
    csf24 = classes == GEN_INDEX[24]
    wide = targets(kinds.clone(), classes, distance, rim_mm=12.0)
    none = targets(kinds.clone(), classes, distance, rim_mm=0.0)
    assert bool((wide[csf24] == 1).all()) and bool((none[csf24] == 0).all())
    # the ventricle stays CSF whatever the rim; GM and WM never change
    ventricle = classes == GEN_INDEX[4]
    assert bool((none[ventricle] == 1).all())
    assert torch.equal(wide[~csf24], none[~csf24])


def test_atrophy_gives_the_new_csf_label_24s_class_at_distance_zero(subject):
    anatomy = subject.anatomy
    deformation = dataclasses.replace(identity_deformation(anatomy.shape), sulcal_mm=2.0)
    coords = source_coords(deformation, (0, 0, 0), anatomy.shape)
    kinds, _, classes, distance = sample_generation(anatomy, coords, deformation)
    _, _, before, _ = _whole(subject)
    turned = (before == GEN_INDEX[3]) & (classes == GEN_INDEX[24])
    assert int(turned.sum()) > 100
    assert int(distance[turned].max()) == 0
    assert bool((targets(kinds, classes, distance, 0.0)[turned] == 1).all())


def test_mixture_draws_one_mean_and_spread_per_class():
    classes = torch.zeros((40, 40, 40), dtype=torch.uint8)
    classes[20:] = GEN_INDEX[2]
    prior = SynthPrior(background=(1.0, 0.0, 0.0))
    image, record = mixture_image(classes, torch.Generator().manual_seed(3), prior)
    assert record["background"] == "random"
    for part in (image[:20], image[20:]):
        assert float(part.std()) <= prior.std_max * 1.05
    zero = SynthPrior(background=(0.0, 0.0, 1.0))
    image, record = mixture_image(classes, torch.Generator().manual_seed(3), zero)
    assert record["background"] == "zero" and float(image[:20].abs().max()) == 0.0


def test_resolution_draws_follow_the_prior():
    gen = torch.Generator().manual_seed(0)
    draws = [draw_resolution(gen, SynthPrior()) for _ in range(2000)]
    coarse = [r for r, _ in draws if max(r) > 1.0]
    isotropic = [r for r in coarse if r[0] == r[1] == r[2]]
    assert 0.92 < len(coarse) / len(draws) < 0.98
    assert 0.06 < len(isotropic) / len(coarse) < 0.14
    assert max(max(r) for r in isotropic) <= 4.0 and max(max(r) for r in coarse) <= 8.0
    assert all(1.0 <= f <= 1.77 for _, f in draws)


def test_resample_blurs_only_the_coarse_axis():
    image = torch.zeros((32, 32, 32))
    image[16, 16, 16] = 1.0
    out = resample(image, [1.0, 1.0, 5.0], 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(out.sum(), torch.tensor(1.0), atol=0.05)
    assert int((out[16, 16] > 0.01).sum()) >= 4 and int((out[:, 16, 16] > 1e-6).sum()) == 1


def test_sample_shapes_labels_and_determinism(subject):
    prior = SynthPrior(anatomy=STILL, brain_centre=1.0)
    first = synth_sample(subject, 7, 32, prior)
    again = synth_sample(subject, 7, 32, prior)
    other = synth_sample(subject, 8, 32, prior)
    assert first["image"].shape == (1, 32, 32, 32) and first["label"].shape == (1, 32, 32, 32)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])
    assert abs(float(first["image"].mean())) < 1e-4 and abs(float(first["image"].std()) - 1) < 1e-3
    assert set(torch.unique(first["label"]).tolist()) <= {0, 1, 2, 3}


def test_every_crop_holds_brain(subject):
    prior = SynthPrior(anatomy=STILL, brain_centre=0.0, brain_min=0.05)
    for seed in range(12):
        label = synth_sample(subject, seed, 32, prior)["label"]
        assert float((label > 0).float().mean()) > 0.0, seed


def test_physics_samples_and_maker(subject):
    maker = SynthPatchMaker(32, SynthPrior(physics=1.0, anatomy=STILL), sequences=("fse",))
    sample = maker.sample(subject, 5)
    assert set(sample) == {"image", "label"} and torch.isfinite(sample["image"]).all()
    record = synth_sample(subject, 5, 32, SynthPrior(physics=1.0, anatomy=STILL), ("fse",))["record"]
    assert record["contrast"] == "physics" and record["sequence"]["sequence"] == "fse"


def test_prior_checks():
    with pytest.raises(ParameterError, match="background"):
        SynthPrior(background=(0.5, 0.2, 0.2)).check()
    with pytest.raises(ParameterError, match="csf-rim-mm"):
        SynthPrior(csf_rim_mm=20).check()


def test_anatomy_cache_is_plain_arrays(tmp_path):
    import nibabel as nib

    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_head().astype(np.int16), np.eye(4)), path)
    cache = tmp_path / "cache"
    built = load_anatomy(str(path), cache_dir=cache)
    (entry,) = cache.iterdir()
    assert entry.suffix == ".npz"
    with np.load(entry, allow_pickle=False) as data:
        assert set(data.files) == {"packed", "extra", "affine"}
    cached = load_anatomy(str(path), cache_dir=cache)
    assert torch.equal(cached.packed, built.packed) and torch.equal(cached.extra, built.extra)
    entry.write_bytes(b"not an npz")  # a damaged or planted entry is rebuilt, never executed
    rebuilt = load_anatomy(str(path), cache_dir=cache)
    assert torch.equal(rebuilt.extra, built.extra)


def test_synth_options_are_checked():
    from training.options import FinetuneOptions

    base = dict(output="o", encoder="e", phantom=True, phantom_source="synth")
    FinetuneOptions(**base).validate()
    FinetuneOptions(**base, task="arc").validate()
    with pytest.raises(ParameterError, match="use it with --task ixi, arc"):
        FinetuneOptions(**base, task="denoise").validate()
    with pytest.raises(ParameterError, match="--lesion-free 1.2"):
        FinetuneOptions(**base, task="arc", lesion_free=1.2).validate()
    with pytest.raises(ParameterError, match="--physics-share 1.5"):
        FinetuneOptions(**base, physics_share=1.5).validate()
    with pytest.raises(ParameterError, match="--csf-rim-mm -1"):
        FinetuneOptions(**base, csf_rim_mm=-1.0).validate()
    with pytest.raises(ParameterError, match="--warmup-steps 10"):
        FinetuneOptions(**base, steps=10, warmup_steps=10).validate()


def test_synth_pool_leaves_out_the_development_and_test_maps(tmp_path):
    import nibabel as nib

    from training.head_phantoms import head_subjects
    from training.options import FinetuneOptions

    labels, affine = synthetic_lia()
    for number in range(1, 19):
        nib.save(
            nib.Nifti1Image(labels.astype(np.int16), affine), tmp_path / f"training_seg_{number:02d}.nii.gz"
        )
    opts = FinetuneOptions(phantom_source="synth", phantoms=14, label_maps=str(tmp_path))
    subjects, desc = head_subjects(opts, tmp_path / "cache")
    assert [s.name for s in subjects] == [f"synthseg-{n:02d}" for n in FIT_MAPS]
    with pytest.raises(ParameterError, match="need 1-14"):
        head_subjects(FinetuneOptions(phantom_source="synth", phantoms=15, label_maps=str(tmp_path)), None)


def test_warmup_ramps_then_decays():
    from training.loop import poly_schedule

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = poly_schedule(optimizer, total_steps=100, power=1.0, warmup=10)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(0.91)
    assert rates[50] == pytest.approx(0.5) and max(rates) <= 1.0


def test_synth_fine_tuning_runs_end_to_end(tmp_path, monkeypatch, subject):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    SeqInvEncoder(preset="tiny").save_pretrained(tmp_path / "enc")
    monkeypatch.setattr(finetune, "build_subjects", lambda opts: ([subject], "synthetic head"))
    opts = finetune.FinetuneOptions(
        output=str(tmp_path / "seg"), encoder=str(tmp_path / "enc"), task="ixi", phantom=True,
        phantom_source="synth", patch_size=32, steps=3, lr=1e-3, warmup_steps=1, train_encoder=True,
    )  # fmt: skip
    finetune.run_finetune(opts, show_progress=False)
    unet = SeqInvUNet.from_pretrained(str(tmp_path / "seg"))
    assert unet.config.training["options"]["phantom_source"] == "synth"
    assert np.isfinite(unet.config.training["metrics"]["final_loss"])


def test_synth_lesion_fine_tuning_runs_end_to_end(tmp_path, monkeypatch, subject):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    SeqInvEncoder(preset="tiny").save_pretrained(tmp_path / "enc")
    monkeypatch.setattr(finetune, "build_subjects", lambda opts: ([subject], "synthetic head"))
    opts = finetune.FinetuneOptions(
        output=str(tmp_path / "arc"), encoder=str(tmp_path / "enc"), task="arc", phantom=True,
        phantom_source="synth", patch_size=32, steps=3, lr=1e-3, warmup_steps=1, train_encoder=True,
        class_weights="1,1", lesion_free=0.5,
    )  # fmt: skip
    finetune.run_finetune(opts, show_progress=False)
    unet = SeqInvUNet.from_pretrained(str(tmp_path / "arc"))
    assert unet.config.labels == ["background", "lesion"]
    assert unet.config.training["options"]["lesion_free"] == 0.5
    assert "lesion_prior_shift" not in unet.config.training  # the old generator's correction is not its


def test_a_training_pool_refuses_the_test_maps():
    from training.head_phantoms import head_pool

    with pytest.raises(ParameterError, match=r"\[17\] are test maps"):
        head_pool(1, maps=(17,))
