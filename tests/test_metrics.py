"""seqinv.metrics, the one metrics module, against MONAI (an independent implementation), exhaustive
surface distances and closed forms. MONAI works in float32: Dice agrees to 1e-6."""

import math

import numpy as np
import pytest
import torch

from seqinv import metrics

monai_metrics = pytest.importorskip("monai.metrics", reason="the train/test extra installs MONAI")

LABELS = ["background", "csf", "gm", "wm"]


def random_labels(seed: int, shape=(12, 13, 11), classes: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=shape)


def one_hot(labels, classes: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels).long(), classes).movedim(-1, 0)[None]


def smooth_pair(seed: int = 0, shape=(20, 22, 18)) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g, dtype=torch.float64).cumsum(0)
    noisy = clean + torch.randn(shape, generator=g, dtype=torch.float64)
    return clean.numpy(), noisy.numpy()


# ---- PSNR ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("peak", [1.0, 4.5])
def test_psnr_equals_monai(peak):
    clean, noisy = smooth_pair()
    reference = monai_metrics.PSNRMetric(max_val=peak)(
        torch.as_tensor(noisy)[None, None], torch.as_tensor(clean)[None, None]
    )
    assert metrics.psnr_db(clean, noisy, peak) == pytest.approx(float(reference), rel=1e-9)
    assert metrics.psnr_db(torch.as_tensor(clean), torch.as_tensor(noisy), peak) == pytest.approx(
        float(reference), rel=1e-9
    )  # torch tensors too


def test_psnr_over_a_region_and_of_equal_images():
    clean, noisy = smooth_pair()
    region = np.zeros(clean.shape, bool)
    region[:10] = True
    reference = monai_metrics.PSNRMetric(max_val=1.0)(
        torch.as_tensor(noisy[:10])[None, None], torch.as_tensor(clean[:10])[None, None]
    )
    assert metrics.psnr_db(clean, noisy, 1.0, region) == pytest.approx(float(reference), rel=1e-9)
    assert metrics.psnr_db(clean, clean, 1.0) == math.inf


def test_psnr_pair_uses_peak_1_and_the_clean_range():
    clean, noisy = smooth_pair()
    pair = metrics.psnr_pair(clean, noisy)
    value_range = float(clean.max() - clean.min())
    for key, peak in (("psnr_l1_db", 1.0), ("psnr_range_db", value_range)):
        reference = monai_metrics.PSNRMetric(max_val=peak)(
            torch.as_tensor(noisy)[None, None], torch.as_tensor(clean)[None, None]
        )
        assert pair[key] == pytest.approx(float(reference), rel=1e-9)


def test_psnr_l1_is_the_papers_convention_and_range_psnr_uses_the_clean_range():
    clean = torch.linspace(-1, 3, 1000)
    noisy = clean + 0.2 * torch.where(torch.arange(1000) % 2 == 0, 1.0, -1.0)  # RMSE exactly 0.2
    values = metrics.psnr_pair(clean, noisy)
    assert values["psnr_l1_db"] == pytest.approx(20 * math.log10(1 / 0.2), rel=1e-5)  # ≈ 14 dB
    assert values["psnr_range_db"] == pytest.approx(20 * math.log10(4 / 0.2), rel=1e-5)


def test_psnr_known_values_over_a_region():
    clean = np.zeros((16, 16, 16), np.float32)
    assert metrics.psnr_db(clean, clean + 0.1, 1.0) == pytest.approx(20.0)
    region = np.zeros(clean.shape, bool)
    region[:8] = True
    half = clean.copy()
    half[8:] = 0.5  # errors outside the region only
    assert metrics.psnr_db(clean, half, 1.0, region) == math.inf


# ---- SSIM ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [7, 11])
def test_ssim_equals_monai(window):
    clean, noisy = smooth_pair()
    data_range = float(clean.max() - clean.min())
    reference = monai_metrics.SSIMMetric(spatial_dims=3, data_range=data_range, win_size=window)
    expected = float(reference(torch.as_tensor(noisy)[None, None], torch.as_tensor(clean)[None, None]).mean())
    assert metrics.ssim_3d(clean, noisy, data_range, window) == pytest.approx(expected, abs=1e-6)
    assert metrics.ssim_3d(clean, clean, data_range, window) == pytest.approx(1.0, abs=1e-9)


def test_ssim_of_thin_volumes_uses_a_shorter_window():
    clean, noisy = smooth_pair(shape=(20, 22, 5))
    data_range = float(clean.max() - clean.min())
    reference = monai_metrics.SSIMMetric(spatial_dims=3, data_range=data_range, win_size=5)
    expected = float(reference(torch.as_tensor(noisy)[None, None], torch.as_tensor(clean)[None, None]).mean())
    assert metrics.ssim_3d(clean, noisy, data_range) == pytest.approx(expected, abs=1e-6)


def test_ssim_known_values():
    rng = np.random.default_rng(1)
    image = rng.random((16, 16, 16)).astype(np.float32)
    assert metrics.ssim_3d(image, image, 1.0) == pytest.approx(1.0, abs=1e-6)
    # constant images: only the luminance term is left, (2ab + c1) / (a^2 + b^2 + c1), c1 = (0.01 L)^2
    a, b = np.full((9, 9, 9), 0.5), np.full((9, 9, 9), 0.6)
    assert metrics.ssim_3d(a, b, 1.0) == pytest.approx((0.6 + 1e-4) / (0.25 + 0.36 + 1e-4))
    noisier = [metrics.ssim_3d(image, image + rng.normal(0, s, image.shape), 1.0) for s in (0.05, 0.2, 0.5)]
    assert noisier == sorted(noisier, reverse=True)


# ---- Dice ----------------------------------------------------------------------------------------------


def test_dice_per_class_equals_monai():
    pred, truth = random_labels(0), random_labels(1)
    ours = metrics.dice_per_class(pred, truth, LABELS)
    reference = monai_metrics.compute_dice(one_hot(pred), one_hot(truth), include_background=False)[0]
    assert list(ours) == LABELS[1:]
    assert list(ours.values()) == pytest.approx(reference.tolist(), rel=1e-6)
    assert metrics.dice_per_class(torch.as_tensor(pred), torch.as_tensor(truth), LABELS) == ours


def test_dice_within_a_region_equals_monai_on_the_masked_maps():
    pred, truth = random_labels(2), random_labels(3)
    within = np.zeros(pred.shape, bool)
    within[2:9, 3:] = True
    ours = metrics.dice_per_class(pred, truth, LABELS, within)
    masked = one_hot(np.where(within, pred, 0)), one_hot(np.where(within, truth, 0))
    reference = monai_metrics.compute_dice(*masked, include_background=False)[0]
    assert list(ours.values()) == pytest.approx(reference.tolist(), rel=1e-6)


def test_dice_of_a_class_absent_from_both_is_1():
    pred = np.zeros((4, 4, 4), int)
    assert metrics.dice_per_class(pred, pred, ["background", "lesion"]) == {"lesion": 1.0}
    assert metrics.dice(pred > 0, pred > 0) == 1.0


def box(shape, lo, hi):
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return out


def test_dice_of_two_half_overlapping_boxes():
    a = box((30, 30, 30), (0, 0, 0), (10, 10, 10))
    b = box((30, 30, 30), (5, 0, 0), (15, 10, 10))
    assert metrics.dice(a, b) == pytest.approx(0.5)  # 500 shared of 1000 + 1000
    assert metrics.dice(a, a) == 1.0 and metrics.dice(a, ~a) == 0.0
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_binary_dice_equals_monai():
    a, b = random_labels(4, classes=2), random_labels(5, classes=2)
    reference = monai_metrics.compute_dice(one_hot(a, 2), one_hot(b, 2), include_background=False)[0, 0]
    assert metrics.dice(a, b) == pytest.approx(float(reference), rel=1e-6)


def test_mean_tissue_dice_is_monais_mean_over_csf_gm_wm_of_the_argmax():
    g = np.random.default_rng(6)
    probs = g.random((4, 10, 9, 8))
    truth = random_labels(7, shape=(10, 9, 8))
    pred = probs.argmax(0)
    reference = monai_metrics.compute_dice(one_hot(pred), one_hot(truth), include_background=False)
    assert metrics.mean_tissue_dice(probs, torch.as_tensor(truth)) == pytest.approx(
        float(reference.mean()), rel=1e-6
    )


# ---- HD95 ----------------------------------------------------------------------------------------------


def brute_force_hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """Symmetric 95th percentile of the distances (mm) between the two masks' surface voxels (a voxel of
    the mask with a 6-neighbour outside it), by exhaustive pairs."""
    from scipy import ndimage

    def surface(mask):
        return np.argwhere(mask & ~ndimage.binary_erosion(mask)) * np.asarray(spacing)

    a, b = surface(pred), surface(truth)
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    truth = np.zeros((24, 24, 24), int)
    truth[6:14, 6:14, 6:14] = 1
    pred = np.roll(truth, 3, axis=0)
    distances = metrics.hd95_per_class(pred, truth, ["bg", "lesion"], (2.0, 1.0, 1.0))
    assert distances["lesion"] == pytest.approx(6.0)


def test_hd95_per_class_equals_monais():
    import torch
    from monai.metrics import compute_hausdorff_distance

    grid = np.indices((26, 24, 22)) - np.array([13, 12, 11])[:, None, None, None]
    r = np.sqrt((grid**2).sum(0))
    truth = np.select([r < 4, r < 7, r < 9], [3, 2, 1], 0)
    pred = np.select([r < 5, np.abs(grid[1]) + r < 9, r < 10], [3, 2, 1], 0)
    spacing = [1.0, 1.5, 2.0]

    def one_hot(x):
        return torch.nn.functional.one_hot(torch.as_tensor(x), 4).movedim(-1, 0)[None]

    theirs = compute_hausdorff_distance(
        one_hot(pred), one_hot(truth), include_background=False, percentile=95, spacing=spacing
    )[0]
    ours = metrics.hd95_per_class(pred, truth, LABELS, spacing)
    assert [ours[name] for name in LABELS[1:]] == pytest.approx(theirs.tolist(), rel=1e-5)


def test_hd95_per_class_equals_exhaustive_surface_distances():
    grid = np.indices((26, 24, 22)) - np.array([13, 12, 11])[:, None, None, None]
    r = np.sqrt((grid**2).sum(0))
    truth = np.select([r < 4, r < 7, r < 9], [3, 2, 1], 0)
    pred = np.select([r < 5, np.abs(grid[0]) + r < 9, r < 10], [3, 2, 1], 0)
    spacing = (1.0, 1.5, 2.0)
    ours = metrics.hd95_per_class(pred, truth, LABELS, spacing)
    for c, name in enumerate(LABELS[1:], start=1):
        assert ours[name] == pytest.approx(brute_force_hd95(pred == c, truth == c, spacing), rel=1e-6)
