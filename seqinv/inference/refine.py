"""Intensity refinement of tissue probabilities: the network's output as a spatial prior, one Gaussian per
tissue class fitted to this scan's intensities (EM), and a smooth multiplicative bias field.

Why: the network's labels are smooth at the 1-2 mm scale (thin sulci, the cortical ribbon), while the
scan's own intensities resolve them. Fitting the class intensities per scan keeps this contrast-agnostic
(no intensity is assumed for any class); where two classes look alike (e.g. GM and WM on PDw), their
Gaussians overlap and the prior decides. This is the classical unified-segmentation recipe (SPM, Atropos
with prior probability maps) with the network in place of an atlas. The brain/background decision is the
network's own and is kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITERATIONS = 8
BIAS_DEGREE = 3  # the bias field is a cubic polynomial of position: smooth on the brain's scale, as in N3/SPM


@dataclass
class Refinement:
    """What the refinement fitted: per tissue class (CSF, GM, WM, ...) mean and std of the intensities."""

    means: list[float]
    stds: list[float]
    bias_range: tuple[float, float]  # 1st and 99th percentile of the bias field inside the brain
    iterations: int

    def to_dict(self) -> dict:
        return {
            "method": "em-gaussian-per-class",
            "iterations": self.iterations,
            "means": [round(m, 4) for m in self.means],
            "stds": [round(s, 4) for s in self.stds],
            "bias_range": [round(b, 4) for b in self.bias_range],
        }


def refine_probabilities(
    image: np.ndarray,
    probs: np.ndarray,
    iterations: int = ITERATIONS,
    bias: bool = True,
) -> Refinement | None:
    """Refine tissue probabilities `probs` (C, X, Y, Z; class 0 background) in place, given `image`.

    Only voxels the network labels as tissue change, and they stay tissue. `image` is on the same grid as
    `probs`; its lowest value is taken as zero signal (the multiplicative bias field needs one).
    `bias=False` fits no bias field. Returns None (nothing changed) when there is too little tissue.
    """
    brain = probs.argmax(axis=0) > 0
    if brain.sum() < 1000 or probs.shape[0] < 3:
        return None
    image = np.asarray(image, dtype=np.float32)
    y = image[brain] - image.min() + np.float32(1e-3)
    tissue = probs[1:, brain].astype(np.float32)  # (K, N): class-major, so sums over classes are fast
    log_prior = np.log(tissue / np.maximum(tissue.sum(axis=0), 1e-12) + 1e-12)
    floor = float(0.01 * (np.percentile(y, 99) - np.percentile(y, 1))) ** 2 + 1e-12
    q, field = np.exp(log_prior), None
    coords = np.nonzero(brain) if bias else None
    for it in range(iterations):
        corrected = y if field is None else y / field
        means, var = _gaussians(q, corrected, floor)
        q = _posteriors(log_prior, corrected, means, var)
        if coords is not None and it % 2 == 1 and it < iterations - 1:
            expected = means @ q
            precision = (means**2 / var) @ q  # of the log ratio: bright, tight classes (WM) weigh most
            field = _bias_field(y / expected, precision, coords, brain.shape)
    _write_back(probs, brain, q)
    spread = (1.0, 1.0) if field is None else tuple(float(v) for v in np.percentile(field, [1, 99]))
    return Refinement(
        means=[float(m) for m in means],
        stds=[float(s) for s in np.sqrt(var)],
        bias_range=spread,
        iterations=iterations,
    )


def _gaussians(q: np.ndarray, y: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and variance of `y` per class (rows of `q`)."""
    weight = q.sum(axis=1, dtype=np.float64) + 1e-12
    means = (q @ y.astype(np.float64)) / weight
    var = np.array([np.dot(qk, (y - m) ** 2) for qk, m in zip(q, means, strict=True)]) / weight + floor
    return means.astype(np.float32), var.astype(np.float32)


def _posteriors(log_prior: np.ndarray, y: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    terms = zip(log_prior, means, var, strict=True)
    log_post = np.stack([lp - 0.5 * (y - m) ** 2 / v - 0.5 * np.log(v) for lp, m, v in terms])
    log_post -= log_post.max(axis=0)
    q = np.exp(log_post, out=log_post)
    q /= q.sum(axis=0)
    return q


def _bias_field(ratio: np.ndarray, weight: np.ndarray, coords, shape) -> np.ndarray:
    """A smooth field fitted to `ratio` (observed / fitted intensity at the brain voxels `coords`): the
    exponential of a cubic polynomial of position, weighted least squares on the log ratio; mean 1."""
    unit = [(c.astype(np.float32) - (n - 1) / 2) / (n / 2) for c, n in zip(coords, shape, strict=True)]
    terms = _monomials(unit)
    rows = slice(None, None, max(1, len(ratio) // 200_000))  # a subsample fits as well, much faster
    root = np.sqrt(weight[rows].astype(np.float64))[:, None]
    design = np.stack([t[rows] for t in terms], axis=1).astype(np.float64) * root
    target = np.log(np.clip(ratio[rows], 0.2, 5.0)) * root[:, 0]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    log_field = sum(float(c) * t for c, t in zip(coef, terms, strict=True))
    field = np.exp(log_field - log_field.mean())
    return field.astype(np.float32)


def _monomials(unit: list[np.ndarray]) -> list[np.ndarray]:
    """x^a y^b z^c for a + b + c <= BIAS_DEGREE (the constant first)."""
    powers = [[np.ones_like(u), u] for u in unit]
    for p in powers:
        for _ in range(BIAS_DEGREE - 1):
            p.append(p[-1] * p[1])
    return [
        powers[0][a] * powers[1][b] * powers[2][c]
        for a in range(BIAS_DEGREE + 1)
        for b in range(BIAS_DEGREE + 1 - a)
        for c in range(BIAS_DEGREE + 1 - a - b)
    ]


def _write_back(probs: np.ndarray, brain: np.ndarray, q: np.ndarray) -> None:
    """Tissue voxels: the refined posteriors `q` share out the tissue probability; background keeps its
    own, capped below the best tissue class so that the voxel stays tissue."""
    best = q.max(axis=0).astype(np.float64)
    background = np.minimum(probs[0, brain].astype(np.float64), 0.999 * best / (1.0 + best))
    probs[0, brain] = background
    probs[1:, brain] = q * (1.0 - background)
