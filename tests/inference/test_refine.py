"""Intensity refinement of tissue probabilities (seqinv/inference/refine.py) on volumes with known classes."""

import numpy as np
import pytest
from scipy import ndimage

from seqinv.inference.refine import refine_probabilities

SHAPE = (48, 48, 48)


def radius():
    grid = np.indices(SHAPE).astype(np.float64) - 23.5
    return np.sqrt((grid**2).sum(axis=0))


def shells(wm: float, gm: float, csf: float) -> np.ndarray:
    """0 background, 1 CSF, 2 GM, 3 WM: WM sphere of radius `wm`, then GM and CSF shells."""
    r = radius()
    return np.select([r < wm, r < gm, r < csf], [3, 2, 1], 0).astype(np.uint8)


def blurred_one_hot(labels: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    probs = np.stack([ndimage.gaussian_filter((labels == c).astype(np.float32), sigma) for c in range(4)])
    return probs / probs.sum(axis=0)


def scan(truth: np.ndarray, values, noise: float, bias: float, seed: int = 0) -> np.ndarray:
    """Class intensities `values` (background, CSF, GM, WM), a linear multiplicative bias of ±`bias`."""
    rng = np.random.default_rng(seed)
    image = np.asarray(values, dtype=np.float64)[truth]
    ramp = 1.0 + bias * np.linspace(-1, 1, SHAPE[0])[:, None, None]
    return (image * ramp + noise * rng.standard_normal(SHAPE)).astype(np.float32)


def dice(a, b, c):
    return 2 * np.sum((a == c) & (b == c)) / (np.sum(a == c) + np.sum(b == c))


@pytest.mark.parametrize("components", [1, 2])
@pytest.mark.parametrize(
    "values",
    [(0.0, 20.0, 60.0, 100.0), (0.0, 100.0, 55.0, 30.0)],  # T1w-like and T2w-like (bright CSF)
    ids=["t1w", "t2w"],
)
def test_refinement_moves_misplaced_boundaries_to_the_scan_own_edges(values, components):
    truth = shells(10, 14, 17)
    prior = blurred_one_hot(shells(8, 15.5, 17))  # a network that calls the cortex too thick
    image = scan(truth, values, noise=4.0, bias=0.1)
    probs = prior.copy()
    fit = refine_probabilities(image, probs, components=components)
    before, after = prior.argmax(axis=0), probs.argmax(axis=0)
    for c, least in ((1, 0.85), (2, 0.95), (3, 0.95)):  # CSF's outer edge is the network's brain edge
        assert dice(after, truth, c) > least
        assert dice(after, truth, c) > dice(before, truth, c) + 0.2
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(fit.means, np.asarray(values[1:]) - image.min(), rtol=0.1)


def test_two_gaussians_per_class_fit_a_class_with_two_intensity_modes():
    truth = shells(10, 14, 17)
    image = scan(truth, (0.0, 20.0, 60.0, 100.0), noise=2.0, bias=0.0)
    half = np.indices(SHAPE)[0] < 24
    image[(truth == 2) & half] = 45.0  # GM: two modes (45 and 60), each far from CSF and WM
    prior = blurred_one_hot(shells(8, 15.5, 17))
    for components in (1, 2):
        probs = prior.copy()
        refine_probabilities(image, probs, components=components)
        assert dice(probs.argmax(axis=0), truth, 2) > 0.95, components


def test_the_brain_stays_the_network_brain_and_the_rest_is_untouched():
    truth = shells(10, 14, 17)
    prior = blurred_one_hot(shells(8, 15.5, 17), sigma=3.0)  # soft edges: background near 0.5 at the rim
    image = scan(truth, (0.0, 20.0, 60.0, 100.0), noise=4.0, bias=0.0)
    probs = prior.copy()
    refine_probabilities(image, probs)
    np.testing.assert_array_equal(probs.argmax(axis=0) > 0, prior.argmax(axis=0) > 0)
    outside = prior.argmax(axis=0) == 0
    np.testing.assert_array_equal(probs[:, outside], prior[:, outside])


def test_a_bias_field_is_fitted_and_reported():
    truth = shells(10, 14, 17)
    prior = blurred_one_hot(truth)
    image = scan(truth, (0.0, 20.0, 60.0, 100.0), noise=2.0, bias=0.25)
    fit = refine_probabilities(image, prior.copy())
    flat = refine_probabilities(image, prior.copy(), bias=False)
    low, high = fit.bias_range
    assert low < 0.9 and high > 1.1  # the ramp is ±18 % across the 34-voxel brain
    assert flat.bias_range == (1.0, 1.0)
    assert fit.to_dict()["method"] == "em-gaussian-mixture-per-class"


def test_too_little_tissue_changes_nothing():
    probs = np.zeros((4, *SHAPE), dtype=np.float32)
    probs[0] = 1.0
    probs[:, :5, :5, :5] = [[[[0.0]]], [[[0.2]]], [[[0.3]]], [[[0.5]]]]
    before = probs.copy()
    assert refine_probabilities(np.ones(SHAPE, dtype=np.float32), probs) is None
    np.testing.assert_array_equal(probs, before)


def test_a_lighter_prior_lets_the_intensities_move_a_confident_wrong_boundary():
    truth = shells(10, 14, 17)
    prior = blurred_one_hot(shells(8, 15.5, 17), sigma=0.7)  # sharp and wrong: the cortex too thick
    image = scan(truth, (0.0, 20.0, 60.0, 100.0), noise=12.0, bias=0.0)
    scores = {}
    for weight in (1.0, 0.4):
        probs = prior.copy()
        fit = refine_probabilities(image, probs, prior_weight=weight)
        assert fit.to_dict()["prior_weight"] == weight
        scores[weight] = [dice(probs.argmax(axis=0), truth, c) for c in (2, 3)]
    assert all(light > full + 0.05 for light, full in zip(scores[0.4], scores[1.0], strict=True))
