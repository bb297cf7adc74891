"""Whole-head phantoms from label maps (seqinv.physics.anatomy) and their training samplers
(training/head_phantoms.py), on a small generated SynthSeg-style head (no shared data needed)."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from seqinv.physics import make_sequence, simulate
from seqinv.physics.anatomy import (
    KIND,
    AnatomyAugment,
    classes_of,
    draw_deformation,
    group_labels,
    identity_deformation,
    kinds_to_random_image,
    make_head_phantom,
    prepare_anatomy,
    random_intensities,
    render,
)

# FreeSurfer conformed LIA voxel order (as SynthSeg's maps): voxel axes = (-x, -z, +y) in RAS
LIA = np.array([[-1.0, 0, 0, 30], [0, 0, 1, -30], [0, -1, 0, 30], [0, 0, 0, 1]])


def synthetic_head(n: int = 60) -> np.ndarray:
    """A small head in RAS voxel order: brain (WM, ventricle, cortex, CSF), skull, scalp, eyes in front and a
    neck of soft tissue below, plus a vessel label (30) and an unknown value (999)."""
    x, y, z = np.meshgrid(*[np.arange(n) - n / 2 + 0.5] * 3, indexing="ij")
    zb = z - 6  # the brain sits above the head's centre
    r = np.sqrt(x**2 + y**2 + zb**2)
    labels = np.zeros((n, n, n), np.int32)
    neck = (np.sqrt(x**2 + y**2) < 14) & (z < 0)
    labels[neck] = 507
    labels[r < 23] = 511  # scalp
    labels[r < 22] = 507  # soft tissue
    labels[r < 20] = 515  # skull
    labels[r < 16] = 24  # extra-cerebral CSF
    labels[r < 15] = 3  # cortex
    labels[r < 12] = 2  # WM
    labels[r < 4] = 4  # ventricle
    labels[(r >= 4) & (r < 5) & (x > 0)] = 10  # a thalamus
    for side in (-8, 8):
        labels[np.sqrt((x - side) ** 2 + (y - 19) ** 2 + (zb + 2) ** 2) < 3] = 506  # eyes
    labels[np.sqrt(x**2 + y**2 + (zb - 8) ** 2) < 1.5] = 30  # a vessel inside the WM
    labels[(np.abs(x) < 2) & (np.abs(y) < 2) & (np.abs(z + 20) < 2)] = 999  # unknown value in the neck
    return labels


def synthetic_lia():
    ras = synthetic_head()
    # RAS array → LIA array: i = -x, j = -z, k = +y
    lia = np.transpose(ras, (0, 2, 1))[::-1, ::-1, :]
    return np.ascontiguousarray(lia), LIA


@pytest.fixture(scope="module")
def anatomy():
    labels, affine = synthetic_lia()
    return prepare_anatomy(labels, affine, "synthetic")


def test_grouping_known_and_unknown_labels():
    labels = np.array([[[2, 3, 24, 515, 506, 0, 999, 999, 507]]])
    kinds = group_labels(labels)
    expected = ["wm", "cortex", "csf", "bone", "vitreous", "air", "air", "muscle", "muscle"]
    # 999 takes the kind of its nearest known voxel: air on one side, soft tissue (muscle) on the other
    assert [list(KIND)[k] for k in kinds[0, 0]] == expected
    assert classes_of(torch.as_tensor(kinds))[0, 0].tolist() == [3, 2, 1, 0, 0, 0, 0, 0, 0]


def test_anatomy_is_ras_and_cropped_to_the_head(anatomy):
    assert np.allclose(np.diag(anatomy.affine)[:3], 1.0) and np.allclose(anatomy.affine[:3, :3], np.eye(3))
    # a world point in the WM of the LIA file is WM in the RAS anatomy, and so is an eye in front
    for world, label, kind in (([3.0, 2.0, 11.0], 2, "wm"), ([8.0, 19.0, 4.0], 506, "vitreous")):
        lia_voxel = np.linalg.solve(LIA, [*world, 1])[:3].round().astype(int)
        assert synthetic_lia()[0][tuple(lia_voxel)] == label
        ours = np.linalg.solve(anatomy.affine, [*world, 1])[:3].round().astype(int)
        assert anatomy.kinds[tuple(ours)] == KIND[kind]
    assert int(anatomy.kinds.max()) < len(KIND)  # no unknown kinds left


def test_phantom_has_signal_in_neck_and_face_with_background_labels(anatomy):
    phantom = make_head_phantom("", 1, anatomy=anatomy, deform=False)
    kinds = torch.as_tensor(phantom.values["kinds"])
    labels = torch.as_tensor(phantom.labels)
    assert set(torch.unique(labels).tolist()) == {0, 1, 2, 3}
    for sequence in (make_sequence("mprage"), make_sequence("fse", tr_s=5.0, te_s=0.1)):
        image = simulate(phantom.maps, sequence)
        brain = image[labels > 0].mean()
        for kind in ("muscle", "fat", "vitreous"):
            region = kinds == KIND[kind]
            assert region.sum() > 20
            assert (labels[region] == 0).all()  # neck, face, eyes: background
            assert image[region].mean() > 0.05 * brain  # ... but not dark
        assert image[kinds == KIND["air"]].mean() < 0.02 * brain  # air stays dark (PD 0; blurred at edges)


def test_same_seed_same_phantom_and_new_seed_new_subject(anatomy):
    a = make_head_phantom("", 3, anatomy=anatomy)
    b = make_head_phantom("", 3, anatomy=anatomy)
    c = make_head_phantom("", 4, anatomy=anatomy)
    assert torch.equal(a.maps.pd, b.maps.pd) and np.array_equal(a.labels, b.labels)
    assert a.values["deformation"] == b.values["deformation"]
    assert not np.array_equal(a.labels, c.labels)


def test_head_size_scaling_and_atrophy(anatomy):
    gen = torch.Generator().manual_seed(0)
    base = render(anatomy, identity_deformation(anatomy.shape), (0, 0, 0), anatomy.shape, gen, maps=False)
    brain = int((base.labels > 0).sum())
    big = AnatomyAugment(rotate_deg=0, scale=(1.15, 1.15), axis_scale=0, shear=0, flip_prob=0, large_mm=0,
                         small_mm=0, atrophy_prob=0)  # fmt: skip
    deformation = draw_deformation(anatomy.shape, torch.Generator().manual_seed(1), big)
    scaled = render(anatomy, deformation, (0, 0, 0), anatomy.shape, gen, maps=False)
    assert int((scaled.labels > 0).sum()) / brain == pytest.approx(1.15**3, rel=0.08)

    deformation = identity_deformation(anatomy.shape)
    deformation.ventricle_mm, deformation.sulcal_mm = 2.0, 1.0
    atrophic = render(anatomy, deformation, (0, 0, 0), anatomy.shape, gen, maps=False)
    assert int((atrophic.labels == 1).sum()) > 1.3 * int((base.labels == 1).sum())
    assert int((atrophic.labels > 0).sum()) == brain  # CSF replaces tissue: the brain outline stays


def test_left_right_flip_mirrors_the_head(anatomy):
    flip = AnatomyAugment(rotate_deg=0, scale=(1, 1), axis_scale=0, shear=0, flip_prob=1.0, large_mm=0,
                          small_mm=0, atrophy_prob=0)  # fmt: skip
    deformation = draw_deformation(anatomy.shape, torch.Generator().manual_seed(0), flip)
    gen = torch.Generator().manual_seed(0)
    flipped = render(anatomy, deformation, (0, 0, 0), anatomy.shape, gen, maps=False).labels
    original = classes_of(anatomy.kinds)
    assert torch.equal(flipped, torch.flip(original, dims=[0]))  # thalamus (x > 0) moves to x < 0


def test_random_contrast_is_piecewise_constant_up_to_texture(anatomy):
    gen = torch.Generator().manual_seed(5)
    sample = render(anatomy, identity_deformation(anatomy.shape), (0, 0, 0), anatomy.shape, gen, maps=False)
    intensity = random_intensities(torch.Generator().manual_seed(2))
    flat = kinds_to_random_image(sample.kinds, intensity, gen, pv_sigma=0.0, texture=0.0)
    textured = kinds_to_random_image(sample.kinds, intensity, gen, pv_sigma=0.0, texture=0.05)
    for kind in torch.unique(sample.kinds).tolist():
        region = sample.kinds == kind
        assert torch.allclose(flat[region], intensity[kind].expand(int(region.sum())))
        relative = textured[region] / intensity[kind] - 1.0
        assert relative.std() < 0.05 * 1.5 and relative.abs().max() < 0.05 * 5  # smooth texture of sd 5 %
    other = random_intensities(torch.Generator().manual_seed(3))
    assert not torch.allclose(intensity, other)  # each draw is a new contrast


def _subject(anatomy):
    from training.head_phantoms import HeadSubject

    return HeadSubject("synthetic", anatomy)


def test_patch_samples_keep_binary_1mm_labels_and_replay(anatomy):
    from training.head_phantoms import HeadPatchMaker, HeadSampling

    maker = HeadPatchMaker("ixi", 32, head=HeadSampling(random_contrast=0.5, clinical=1.0))
    subject = _subject(anatomy)
    a, b = maker.sample(subject, 11), maker.sample(subject, 11)
    assert a["image"].shape == (1, 32, 32, 32) and a["label"].shape == (1, 32, 32, 32)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    labels = torch.cat([maker.sample(subject, s)["label"].flatten() for s in range(6)])
    assert set(torch.unique(labels).tolist()) <= {0, 1, 2, 3} and (labels > 0).any()
    assert a["image"].dtype == torch.float32 and torch.isfinite(a["image"]).all()


def test_superficial_wm_moves_wm_beside_the_cortex_towards_it():
    from seqinv.physics.anatomy import superficial_wm

    kinds = torch.full((12, 4, 4), KIND["wm"], dtype=torch.uint8)
    kinds[:2] = KIND["cortex"]  # WM at x = 2 is 1 voxel from the cortex, x = 11 is 10
    image = torch.where(kinds == KIND["cortex"], 0.4, 1.0)
    out = superficial_wm(image, kinds, torch.Generator().manual_seed(0), strength=(0.3, 0.3), depth_mm=(2, 2))
    assert torch.equal(out[:2], image[:2])  # the cortex keeps its signal
    assert out[2].mean().item() == pytest.approx(1.0 - 0.3 * 0.6)  # full strength next to the cortex
    assert out[4].mean().item() == pytest.approx(1.0 - 0.3 * 0.6 * np.exp(-1.0), rel=1e-5)  # d = 3, λ = 2
    assert out[11].mean().item() > 0.99  # deep WM barely moves
    no_cortex = torch.full((6, 4, 4), KIND["wm"], dtype=torch.uint8)
    assert torch.equal(superficial_wm(torch.ones(6, 4, 4), no_cortex, torch.Generator()), torch.ones(6, 4, 4))


def test_superficial_wm_rate_changes_the_white_matter_beside_the_cortex(anatomy):
    from training.head_phantoms import HeadSampling, contrast_image, render_crop

    subject = _subject(anatomy)
    base = dict(random_contrast=0.0, clinical=0.0, pv_range=(0.0, 0.0))  # no blur: changes stay in place
    images = []
    for rate, flagged in ((0.0, None), (1.0, True)):
        cfg = HeadSampling(**base, superficial_wm=rate)
        sample = render_crop(subject, torch.Generator().manual_seed(3), 32, cfg)["sample"]
        image, record = contrast_image(sample, torch.Generator().manual_seed(4), cfg)
        assert record.get("superficial_wm") is flagged
        images.append(image)
    change = (images[1] - images[0]).abs()  # same sequence and receive field: drawn before the new draws
    wm, cortex = sample.kinds == KIND["wm"], sample.kinds == KIND["cortex"]
    depth = torch.from_numpy(ndi.distance_transform_edt(~cortex.numpy())).float()
    near, deep = change[wm & (depth <= 1.5)].mean(), change[wm & (depth >= 6)].mean()
    assert near > 3 * change[cortex].mean() and near > 3 * deep


def test_lesions_replace_parenchyma_only_and_leave_other_draws_alone(anatomy):
    from seqinv.physics.anatomy import CLASS_OF_KIND, add_lesion, draw_values

    kinds = anatomy.kinds.clone()
    mask = add_lesion(kinds, torch.Generator().manual_seed(1))
    before = CLASS_OF_KIND[anatomy.kinds.long()]
    assert mask.sum() > 50 and bool((before[mask] >= 2).all())  # GM or WM before
    assert bool((kinds[mask] == KIND["lesion"]).all()) and torch.equal(kinds[~mask], anatomy.kinds[~mask])
    assert add_lesion(torch.zeros(8, 8, 8, dtype=torch.uint8), torch.Generator()) is None
    for seed in range(4):  # `central`: the lesion is centred in the volume's central half
        mask = add_lesion(anatomy.kinds.clone(), torch.Generator().manual_seed(seed), central=1.0)
        centre = torch.nonzero(mask).float().mean(0)
        quarter = torch.tensor(anatomy.kinds.shape, dtype=torch.float32) / 4
        assert bool((centre > quarter - 3).all() and (centre < 3 * quarter + 3).all()), seed
    # a subject with a lesion draws the same values for every other kind as one without
    plain = draw_values(torch.Generator().manual_seed(5))
    with_lesion = draw_values(torch.Generator().manual_seed(5), lesion=True)
    assert torch.equal(plain[:-1], with_lesion[:-1]) and not torch.equal(plain[-1], with_lesion[-1])


def test_lesion_patches_label_the_lesion_at_the_rate_asked(anatomy):
    from training.head_phantoms import HeadPatchMaker, HeadSampling

    maker = HeadPatchMaker("arc", 32, head=HeadSampling(lesion=0.8, head_focus=1.0))
    labels = [maker.sample(_subject(anatomy), s)["label"] for s in range(10)]
    assert all(set(torch.unique(lab).tolist()) <= {0, 1} for lab in labels)
    with_lesion = sum(bool(lab.any()) for lab in labels)
    assert 5 <= with_lesion <= 10
    none = HeadPatchMaker("arc", 32, head=HeadSampling(lesion=0.0))
    assert not any(none.sample(_subject(anatomy), s)["label"].any() for s in range(3))


def test_the_lesion_prior_correction_of_head_phantoms_is_negative_and_finite(anatomy):
    from training.finetune import lesion_prior_shift
    from training.head_phantoms import HeadPatchMaker, HeadSampling, whole_head_lesion_share

    subjects = [_subject(anatomy)]
    share = whole_head_lesion_share(subjects, seed=0)
    assert 0 < share < 0.2  # one lesion in a whole (small) head's grid
    maker = HeadPatchMaker("arc", 32, head=HeadSampling(lesion=1.0, head_focus=1.0))
    shift = lesion_prior_shift(subjects, maker, seed=0, samples=8)
    assert -10 < shift < 0  # crops hold more lesion than whole heads


def test_thick_slices_leave_the_labels_at_1mm(anatomy):
    from seqinv.physics.acquisition import AcquisitionPrior
    from training.head_phantoms import HeadSampling, acquire_crop, contrast_image, render_crop

    thick = HeadSampling(
        acquisition=AcquisitionPrior(clinical_prob=1.0, thickness_mm=(6, 7), coverage_prob=0)
    )
    gen = torch.Generator().manual_seed(4)
    crop = render_crop(_subject(anatomy), gen, 40, thick)
    image, _ = contrast_image(crop["sample"], gen, thick)
    acquired, labels, record = acquire_crop(
        image, crop["sample"].labels, crop["start"], crop["shape"], gen, thick
    )
    assert record["resolution_mm"][record["slice_axis"]] >= 6
    assert torch.equal(labels, crop["sample"].labels)  # the 1 mm truth, not a thick-slice version
    assert not torch.allclose(acquired, image.clamp(0, 1) ** record["gamma"], atol=1e-3)


def test_coverage_cut_blanks_image_and_labels(anatomy):
    from seqinv.physics.acquisition import AcquisitionPrior
    from training.head_phantoms import HeadSampling, acquire_crop

    cut = HeadSampling(acquisition=AcquisitionPrior(clinical_prob=0.0, coverage_prob=1.0, gamma_prob=0.0))
    image = torch.rand(20, 20, 60)
    labels = torch.ones(20, 20, 60, dtype=torch.uint8)
    out, out_labels, record = acquire_crop(image, labels, (0, 0, 0), (20, 20, 60), torch.Generator(), cut)
    kept = out_labels[0, 0].bool()
    assert 0.5 < kept.float().mean() < 0.95
    assert (out[..., ~kept] == 0).all() and torch.equal(out[..., kept], image[..., kept])
    side = record["coverage"][0]
    assert kept[0] == (side == "top") and kept[-1] == (side == "bottom")


def test_view_pairs_from_head_phantoms(anatomy):
    from training.head_phantoms import HeadViewMaker

    maker = HeadViewMaker("seqinv", 32)
    pair = maker.pair(_subject(anatomy), 3)
    assert pair["view1"].shape == pair["target1"].shape == (1, 32, 32, 32)
    assert not torch.equal(pair["view1"], pair["view2"])


def test_options_choose_and_check_the_phantom_source():
    from seqinv.errors import ParameterError
    from training.options import FinetuneOptions, PretrainOptions

    assert FinetuneOptions().phantom_source == "icbm"  # the old default stays
    base = dict(output="o", encoder="e", phantom=True)
    with pytest.raises(ParameterError, match="--phantom-source 'mni'"):
        FinetuneOptions(**base, phantom_source="mni").validate()
    FinetuneOptions(**base, phantom_source="synthseg", task="arc").validate()  # lesions are drawn per crop
    with pytest.raises(ParameterError, match="--random-contrast 1.5"):
        PretrainOptions(output="o", phantom=True, phantom_source="synthseg", random_contrast=1.5).validate()
    FinetuneOptions(**base, phantom_source="synthseg").validate()
    with pytest.raises(ParameterError, match="--superficial-wm 2"):
        FinetuneOptions(**base, phantom_source="synthseg", superficial_wm=2.0).validate()
    with pytest.raises(ParameterError, match="--pv-max 0.1"):
        FinetuneOptions(**base, phantom_source="synthseg", pv_max=0.1).validate()


@pytest.fixture(scope="module")
def label_map_folder(tmp_path_factory):
    import nibabel as nib

    folder = tmp_path_factory.mktemp("label_maps")
    labels, affine = synthetic_lia()
    for number in (17, 18):
        nib.save(
            nib.Nifti1Image(labels.astype(np.int16), affine), folder / f"training_seg_{number:02d}.nii.gz"
        )
    return folder


def test_held_out_heads_cover_thick_slice_and_random_contrast(label_map_folder):
    from training.evaluate import head_phantom_cases, held_out_protocols

    cases = head_phantom_cases("ixi", folder=str(label_map_folder))
    names = [name for name, _, _ in held_out_protocols()]
    assert [c.contrast for c in cases] == names * 2
    assert {c.subject for c in cases} == {"synthseg-17", "synthseg-18"}
    assert {"T2w-5mm-axial", "random"} <= set(names)
    by_name = {c.contrast: c for c in cases if c.subject == "synthseg-17"}
    for case in by_name.values():
        assert set(torch.unique(case.labels).tolist()) <= {0, 1, 2, 3}
        assert case.image.shape == case.labels.shape and float(case.image.min()) >= 0
    thin, thick = by_name["T2w"].image, by_name["T2w-5mm-axial"].image
    along_z = lambda im: float(im.diff(dim=2).abs().mean())  # noqa: E731
    along_x = lambda im: float(im.diff(dim=0).abs().mean())  # noqa: E731
    assert along_z(thick) < 0.6 * along_z(thin) and along_x(thick) > 0.6 * along_x(thin)

    lesions = head_phantom_cases("arc", folder=str(label_map_folder))
    assert [c.contrast for c in lesions] == names * 2
    for case in lesions:
        assert set(torch.unique(case.labels).tolist()) == {0, 1}
    t1 = next(c for c in lesions if c.contrast == "T1w")
    inside = t1.image[t1.labels > 0].mean()
    assert abs(float(inside) - float(by_name["T1w"].image[t1.labels > 0].mean())) > 0.05  # it shows


def test_simulate_cli_writes_head_phantoms_with_thick_slices(label_map_folder, tmp_path):
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from seqinv.cli import app

    runner = CliRunner()
    out = tmp_path / "t2.nii.gz"
    args = ["simulate", "--phantom", "--label-map", "17", "--label-maps", str(label_map_folder), "-s", "fse",
            "--slice-mm", "5", "--slice-axis", "ax", "--gap-mm", "1", "-o", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "t2.json").read_text())
    assert (
        record["acquisition"]["resolution_mm"] == [1.0, 1.0, 5.0] and record["acquisition"]["gap_mm"] == 1.0
    )
    assert record["source"]["label_map"] == "17"
    labels = nib.load(tmp_path / "phantom_labels.nii.gz")
    assert set(np.unique(np.asarray(labels.dataobj)).tolist()) == {0, 1, 2, 3}
    assert np.allclose(labels.affine, nib.load(out).affine)

    random_dir = tmp_path / "random"
    args = ["simulate", "--phantom", "--label-map", "18", "--label-maps", str(label_map_folder),
            "--contrast", "random", "--random", "2", "-o", str(random_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first, second = (np.asarray(nib.load(p).dataobj) for p in sorted(random_dir.glob("sim_*.nii.gz")))
    assert not np.allclose(first, second)  # two random contrasts


@pytest.mark.parametrize(
    "args, message",
    [
        (["--phantom", "--label-map", "icbm", "--contrast", "random"], "--contrast random needs a label map"),
        (["--phantom", "--contrast", "t1"], "--contrast 't1'"),
        (["--phantom", "-s", "fse", "--slice-mm", "4", "--slice-axis", "w"], "--slice-axis 'w'"),
        (["--phantom", "-s", "fse", "--label-map", "19", "--label-maps", "."], "outside 1-18"),
    ],
)
def test_simulate_cli_bad_head_options(args, message, tmp_path):
    from typer.testing import CliRunner

    from seqinv.cli import app

    result = CliRunner().invoke(app, ["simulate", *args, "-o", str(tmp_path / "x.nii.gz")])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output


def test_denoiser_training_images_are_scaled_whole_head_phantoms(tmp_path):
    import nibabel as nib

    from seqinv.inference.denoising import intensity_scale
    from training.denoise_resnet import head_phantom_images

    labels, affine = synthetic_lia()
    nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), tmp_path / "training_seg_01.nii.gz")
    (image,) = head_phantom_images(1, str(tmp_path), seed=0)
    assert image.dtype == torch.float16 and image.ndim == 3
    assert min(image.shape) > 30  # the whole head (cropped to its content), not a patch
    assert float(image.min()) >= 0
    assert intensity_scale(image.float().numpy()) == pytest.approx(1.0, rel=0.02)
