"""The real-scan benchmark's code (training.realbench) against hand-made volumes with known answers (its
PSNR, SSIM and Dice are seqinv/metrics.py's: tests/test_metrics.py).

NumPy/SciPy/SimpleITK only: no deepbet, ANTs or BM4D (the full benchmark is not a CI test).
"""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from seqinv.metrics import dice
from training.realbench import denoising as dn
from training.realbench.grids import (
    carry_mask,
    degrade,
    degraded_grid,
    from_sitk,
    register,
    resample,
    resample_probs,
    to_sitk,
)
from training.realbench.metrics import kmeans_labels, outside_percent, tissue_dice
from training.realbench.references import Cache


def box(shape, lo, hi):
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return out


def oblique_affine(voxel_mm=(1.0, 1.5, 2.0), angle_deg=20.0, origin=(-30.0, 12.0, 5.0)):
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(voxel_mm) @ np.diag([-1, 1, 1])  # LAS-like and rotated
    affine[:3, 3] = origin
    return affine


# ------------------------------------------------------------------------------------------------ metrics
def test_tissue_dice_and_mean_within_a_region():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[0], ref[1], ref[2] = 1, 2, 3
    pred = ref.copy()
    pred[2, :2] = 2  # half of WM called GM
    out = tissue_dice(pred, ref)
    assert out["CSF"] == 1.0
    assert out["GM"] == pytest.approx(2 * 16 / (16 + 24))
    assert out["WM"] == pytest.approx(2 * 8 / (8 + 16))
    assert out["mean"] == pytest.approx((out["CSF"] + out["GM"] + out["WM"]) / 3)
    within = np.zeros_like(ref, bool)
    within[:2] = True  # the mistakes are outside the region
    assert tissue_dice(pred, ref, within)["GM"] == 1.0


@pytest.mark.parametrize(("voxel_mm", "expected"), [((1.0, 1.0, 1.0), 25.0), ((2.0, 1.0, 1.0), 40.0)])
def test_outside_percent_counts_voxels_beyond_the_margin_in_mm(voxel_mm, expected):
    mask = box((40, 20, 20), (5, 5, 5), (15, 15, 15))
    labelled = box((40, 20, 20), (5, 5, 5), (25, 15, 15))  # 10 extra layers along x
    # layer d (1..10) lies d * voxel_x mm from the mask: > 5 mm is d >= 6 (5 of 20 layers) at 1 mm,
    # d >= 3 (8 of 20) at 2 mm
    assert outside_percent(labelled, mask, voxel_mm, 5.0) == pytest.approx(expected)
    assert outside_percent(mask, mask, voxel_mm) == 0.0
    assert outside_percent(np.zeros_like(mask), mask, voxel_mm) == 0.0


def test_kmeans_orders_classes_by_intensity():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, size=(20, 20, 20)).astype(np.uint8)
    image = np.choose(truth, [0.0, 30.0, 60.0, 90.0]) + rng.normal(0, 5, truth.shape)
    mask = np.ones(truth.shape, bool)
    mask[:2] = False
    labels = kmeans_labels(image, mask)
    assert (labels[~mask] == 0).all()
    assert (labels[mask] == truth[mask]).mean() > 0.99


# ------------------------------------------------------------------------------------------------ grids
def test_sitk_round_trip_keeps_data_and_ras_affine():
    affine = oblique_affine()
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = to_sitk(data, affine)
    # SimpleITK's physical point of voxel (1, 2, 3) is the LPS form of affine @ (1, 2, 3)
    ras = affine @ [1, 2, 3, 1]
    assert np.allclose(image.TransformIndexToPhysicalPoint((1, 2, 3)), [-ras[0], -ras[1], ras[2]])
    back, back_affine = from_sitk(image)
    assert np.array_equal(back, data) and np.allclose(back_affine, affine)
    assert np.allclose(resample(data, affine, data.shape, affine, order=0), data)


def ball_on_grid(shape, affine, centre_ras, radius_mm):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(ras - centre_ras, axis=1) <= radius_mm).reshape(shape)


def test_carry_mask_with_a_known_rigid_transform():
    affine = oblique_affine(voxel_mm=(1.0, 1.0, 1.0))
    shape = (40, 40, 40)
    centre = affine @ [20, 20, 20, 1]
    source = ball_on_grid(shape, affine, centre[:3] + [4.0, 0, 0], 8.0)
    # the transform maps target points to source points (LPS): a pure shift of (-3, 2, 1) mm in LPS
    shift_lps = np.array([-3.0, 2.0, 1.0])
    transform = sitk.TranslationTransform(3, shift_lps.tolist())
    target_grid = oblique_affine(voxel_mm=(1.2, 1.2, 1.2), angle_deg=-10.0, origin=(-25.0, 10.0, 8.0))
    moved = carry_mask(source, affine, shape, target_grid, transform)
    # a target point p reaches the source at p + shift: the ball's centre moves by -shift (in RAS: x, y flip)
    shift_ras = shift_lps * [-1, -1, 1]
    expected = ball_on_grid(shape, target_grid, centre[:3] + [4.0, 0, 0] - shift_ras, 8.0)
    assert expected.sum() > 1000
    assert dice(moved, expected) > 0.95


def test_rigid_registration_recovers_a_known_motion():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (40, 40, 40)
    ijk = np.stack(np.meshgrid(*[np.arange(n) * 2.0 for n in shape], indexing="ij"), -1)
    blob = lambda c, s: np.exp(-(((ijk - c) / s) ** 2).sum(-1) / 2)  # noqa: E731
    fixed = (blob([40, 38, 40], [12, 8, 10]) + 0.7 * blob([52, 50, 36], [5, 5, 5])).astype(np.float32)
    motion = sitk.Euler3DTransform((40.0, 38.0, 40.0), 0.0, 0.0, math.radians(8.0), (4.0, -3.0, 2.0))
    moving = resample(fixed, affine, shape, affine, motion.GetInverse())
    found = register(fixed, affine, moving, affine, "rigid")
    aligned = resample(moving, affine, shape, affine, found)
    inside = fixed > 0.1
    before = np.abs(moving - fixed)[inside].mean()
    after = np.abs(aligned - fixed)[inside].mean()
    assert after < 0.15 * before


def test_resample_probs_picks_the_likelier_class():
    affine = np.eye(4)
    probs = np.zeros((4, 6, 6, 6), np.float32)
    probs[0] = 1.0
    probs[:, 3:] = 0.0
    probs[2, 3:] = 1.0
    labels = resample_probs(probs, affine, (6, 6, 6), affine)
    assert (labels[:3] == 0).all() and (labels[3:] == 2).all()


# ------------------------------------------------------------------------------------------------ degrade
def test_degraded_grid_keeps_the_field_of_view():
    affine = oblique_affine(voxel_mm=(1.0, 1.0, 1.0))
    shape, coarse = degraded_grid((40, 40, 50), affine, (1.0, 1.0, 5.0))
    assert shape == (40, 40, 10)
    assert np.allclose(np.linalg.norm(coarse[:3, :3], axis=0), [1.0, 1.0, 5.0])
    # the first coarse slice is centred on fine slices 0..4 (index 2); the two fields of view share a centre
    assert np.allclose(coarse[:3, 3], affine[:3, :3] @ [0, 0, 2] + affine[:3, 3])
    fine_centre = affine @ [19.5, 19.5, 24.5, 1]
    coarse_centre = coarse @ [19.5, 19.5, 4.5, 1]
    assert np.allclose(fine_centre, coarse_centre)
    assert degraded_grid((188, 256, 190), np.diag([0.88, 0.88, 0.88, 1]), (3, 3, 3))[0] == (55, 75, 56)


@pytest.mark.parametrize("profile", ["gaussian", "boxcar"])
def test_degrade_has_the_effective_resolution_of_its_slice_profile(profile):
    """A sinusoid along z (period 30 mm) loses amplitude as the slice profile predicts, in-plane nothing."""
    period = 30.0
    z_mm = np.arange(60.0)
    data = np.broadcast_to(np.cos(2 * np.pi * z_mm / period), (8, 8, 60)).astype(np.float32)
    affine = np.eye(4)
    out, coarse = degrade(data, affine, (1.0, 1.0, 5.0), profile)
    assert out.shape == (8, 8, 12)
    z_coarse = coarse[2, 2] * np.arange(12) + coarse[2, 3]
    basis = np.c_[np.cos(2 * np.pi * z_coarse / period), np.sin(2 * np.pi * z_coarse / period)]
    middle = slice(3, 9)  # away from the edges (the blur pads by repeating the edge)
    amplitude = np.hypot(*np.linalg.lstsq(basis[middle], out[4, 4, middle], rcond=None)[0])
    if profile == "gaussian":  # FWHM 5 mm less the source's 1 mm, in quadrature
        sigma_mm = math.sqrt(5.0**2 - 1.0**2) / (2 * math.sqrt(2 * math.log(2)))
        expected = math.exp(-2 * math.pi**2 * sigma_mm**2 / period**2)
    else:  # the mean of 5 samples 1 mm apart
        expected = math.sin(5 * math.pi / period) / (5 * math.sin(math.pi / period))
    assert amplitude == pytest.approx(expected, abs=0.01)
    assert np.allclose(out[:, :, 5], out[0, 0, 5])  # in-plane untouched


# ------------------------------------------------------------------------------------------------ denoising
def test_rician_noise_on_air_has_the_rayleigh_mean():
    noisy = dn.add_noise(np.zeros((40, 40, 40), np.float32), "rician", 0.08, seed=0)
    assert noisy.min() >= 0
    assert noisy.mean() == pytest.approx(0.08 * math.sqrt(math.pi / 2), rel=0.02)
    gaussian = dn.add_noise(np.zeros((40, 40, 40), np.float32), "gaussian", 0.2, seed=0)
    assert gaussian.std() == pytest.approx(0.2, rel=0.02)


def test_denoise_region_is_a_slab_of_the_asked_thickness_through_the_brain():
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    brain = box((50, 60, 40), (10, 12, 20), (40, 48, 30))
    region = dn.denoise_region(affine, brain, slab_mm=24.0, margin_mm=4.0)
    assert region[2] == slice(19, 31)  # 12 slices of 2 mm centred on the brain's centroid (slice 24.5)
    assert region[0] == slice(6, 44) and region[1] == slice(8, 52)  # the brain's box + 4 mm (4 voxels)
    assert dn.denoise_region(affine, brain, 24.0, margin_mm=40.0)[0] == slice(0, 50)  # clipped to the grid
    assert dn.axial_axis(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])) == 1


def test_cache_computes_once(tmp_path):
    cache = Cache(tmp_path, "ab" * 32)
    calls = []
    compute = lambda: calls.append(1) or np.arange(3)  # noqa: E731
    assert np.array_equal(cache.array("x", compute), np.arange(3))
    assert np.array_equal(Cache(tmp_path, "ab" * 32).array("x", compute), np.arange(3))
    assert len(calls) == 1
    assert np.array_equal(Cache(tmp_path, "cd" * 32).array("x", compute), np.arange(3))
    assert len(calls) == 2  # another file's sha256: another entry


def test_options_reject_unknown_methods(tmp_path):
    from seqinv.errors import InputError, ParameterError
    from training.realbench.run import options_from

    with pytest.raises(ParameterError, match="unknown \\['bm3d'\\]"):
        options_from(str(tmp_path), str(tmp_path), methods="seqinv,bm3d")
    with pytest.raises(InputError, match="no such folder"):
        options_from(str(tmp_path / "missing"), str(tmp_path))
    assert options_from(str(tmp_path), str(tmp_path), denoise_model="none").denoise_model is None
    with pytest.raises(ParameterError, match="--passes 3 is not one of 1, 2, 4, 8"):
        options_from(str(tmp_path), str(tmp_path), denoise_passes=3)
    assert options_from(str(tmp_path), str(tmp_path), denoise_passes=8).denoise_passes == 8


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--real", "no/such/folder"], "--real no/such/folder: no such folder"),
        (["--real", ".", "--phantom"], "exactly one test source"),
    ],
)
def test_evaluate_real_bad_input_is_one_error_line(tmp_path, args, expected):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "seqinv", "evaluate", *args, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()


def test_real_folder_without_known_scans_is_an_error(tmp_path):
    from seqinv.errors import InputError
    from training.realbench.run import find_scans

    with pytest.raises(InputError, match="holds none of the benchmark's scans"):
        find_scans(tmp_path, tmp_path / "cache")


def test_scan_rows_and_report_on_a_hand_made_scan(tmp_path):
    """A 'scan' whose model labels are the reference shifted by 2 voxels: the figures in the Markdown are
    the ones computed by hand."""
    from seqinv.io import Volume
    from training.realbench.report import markdown
    from training.realbench.run import SCANS, RealOptions, Scan, scan_rows

    ref = np.zeros((30, 20, 20), np.uint8)
    ref[5:15, 5:15, 5:15] = 3
    ref[15:25, 5:15, 5:15] = 2
    labels = np.roll(ref, 2, axis=0)
    volume = Volume(data=ref.astype(np.float32), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    scan = Scan(SCANS[0], volume, "ab" * 32, Cache(tmp_path, "ab" * 32), mask=ref > 0, tissue=ref)
    scan.kmeans, scan.labels = ref, labels
    rows = scan_rows(scan, "ixi")
    brain = {r["metric"]: r["value"] for r in rows if r["section"] == "brain" and r["model"] == "ixi"}
    assert brain["dice"] == pytest.approx(2 * 1800 / 4000)  # 18 of 20 layers shared
    assert brain["outside_5mm_pct"] == 0.0  # 2 layers of 2 mm: 4 mm out
    assert brain["brain_ml"] == pytest.approx(2000 * 0.008)
    context = {
        "scans": {"chris_t1": scan},
        "models": {"segment": "`ixi`"},
        "times": {"total_s": 1.0},
        "cache": (str(tmp_path), 0, 1),
        "options": RealOptions(str(tmp_path), str(tmp_path)),
        "machine": "test CPU",
    }
    text = markdown(rows, [], context)
    assert "the yardstick: no seqinv model is trained or tuned on them" in text
    assert "| chris_t1 | T1w | 2x2x2 | deepbet | 90.0 | 0.0 | 16 | 16 |" in text
    assert "| chris_t1 kmeans | 100.0 | 100.0 | 100.0 | 100.0 |" in text
    wm = 2 * 800 / 2000  # WM shifted into 8 of its 10 layers
    gm = 2 * 800 / 2000
    assert f"| chris_t1 ixi | 100.0 | {100 * gm:.1f} | {100 * wm:.1f} |" in text


def test_resolution_rows_score_the_input_grid_and_the_1mm_grid(tmp_path):
    """chris_t1 degraded: one set of rows per output grid, each scored on the sharp grid."""
    import torch

    from seqinv.inference import InferenceSettings
    from seqinv.io import Volume
    from seqinv.models import ModelConfig, SeqInvUNet
    from training.realbench.run import SCANS, Scan, resolution_rows

    torch.manual_seed(0)
    labels = ["background", "csf", "gm", "wm"]
    config = ModelConfig.from_preset(
        "tiny",
        arch="unet",
        patch_size=(32, 32, 32),
        task="segment",
        task_name="ixi",
        out_channels=4,
        labels=labels,
    )
    ref = np.zeros((24, 24, 20), np.uint8)
    ref[4:20, 4:20, 4:16] = 3
    volume = Volume(data=ref.astype(np.float32) * 30, affine=np.eye(4))
    scan = Scan(SCANS[0], volume, "cd" * 32, Cache(tmp_path, "cd" * 32), mask=ref > 0, tissue=ref)
    scan.labels = ref
    rows = resolution_rows({"chris_t1": scan}, SeqInvUNet(config), InferenceSettings(), "tiny", "gaussian")
    dice_scans = {r["scan"] for r in rows if r["metric"] == "dice"}
    grids = {"chris_t1@1x1x5mm", "chris_t1@3mm-iso"}
    assert dice_scans == grids | {f"{name}/1mm" for name in grids}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"] == "dice")  # fractions
