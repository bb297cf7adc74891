"""Clinical acquisition model (seqinv.physics.acquisition): resolution measured from edge profiles."""

import math

import numpy as np
import pytest
import torch

from seqinv.errors import ParameterError
from seqinv.physics.acquisition import (
    AcquisitionPrior,
    acquire,
    apply_gamma,
    axis_matrix,
    coverage_mask,
    draw_acquisition,
    thick_slices,
)


def _edge_volume(n=64, axis=2, edge=32):
    shape = [8, 8, 8]
    shape[axis] = n
    volume = torch.zeros(shape)
    index = [slice(None)] * 3
    index[axis] = slice(edge, None)
    volume[tuple(index)] = 1.0
    return volume


def _width_10_90(profile: np.ndarray, step_mm: float) -> float:
    """10-90 % rise distance of a monotone edge profile, by linear interpolation."""
    x = np.arange(len(profile)) * step_mm
    return float(np.interp(0.9, profile, x) - np.interp(0.1, profile, x))


def _reference_width(thickness_mm: float, spacing_mm: float) -> float:
    """Independent reference: a step blurred by the Gaussian slice profile (FWHM = thickness), the 1 mm voxel
    box, and linear interpolation between slices (a triangle of half-width = spacing), averaged over where the
    slices fall — computed by convolution on a 0.01 mm grid."""
    step = 0.01
    x = np.arange(-40, 40, step)
    sigma = thickness_mm / (2 * math.sqrt(2 * math.log(2)))
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    for other in (np.abs(x) <= 0.5, np.clip(1 - np.abs(x) / spacing_mm, 0, None)):
        kernel = np.convolve(kernel, other.astype(float), mode="same")
    esf = np.cumsum(kernel) / kernel.sum()
    return _width_10_90(esf, step)


@pytest.mark.parametrize("thickness, gap", [(3.0, 0.0), (5.0, 0.0), (6.0, 1.5)])
def test_thick_slice_edge_width_matches_the_requested_resolution(thickness, gap):
    acq_widths = []
    for offset in np.linspace(0, 1, 8, endpoint=False):  # average over where the slices fall
        acq = thick_slices(thickness, axis=2, gap_mm=gap, offset=float(offset))
        out = acquire(_edge_volume(), acq)
        acq_widths.append(out[4, 4].numpy())
    profile = np.mean(acq_widths, axis=0)
    measured = _width_10_90(profile, 1.0)
    expected = _reference_width(thickness, thickness + gap)
    assert measured == pytest.approx(expected, rel=0.12)
    assert measured > 0.9 * thickness  # far blurrier than the 1 mm grid (a 1 mm edge rises in 0 voxels)


def test_in_plane_axes_stay_sharp_and_constant_images_stay_constant():
    acq = thick_slices(5.0, axis=2, gap_mm=1.0)
    edge_x = acquire(_edge_volume(axis=0), acq)
    assert torch.allclose(edge_x, _edge_volume(axis=0), atol=1e-5)  # 1 mm in-plane: untouched
    flat = acquire(torch.full((10, 12, 30), 3.0), thick_slices(7.0, axis=1, gap_mm=2.0, inplane_mm=1.4))
    assert torch.allclose(flat, torch.full_like(flat, 3.0), atol=1e-5)  # rows are normalised


def test_box_profile_and_axis_matrix_rows():
    matrix = axis_matrix(40, 4.0, 4.0, "box")
    assert matrix.shape == (40, 40)
    assert torch.allclose(matrix.sum(1), torch.ones(40), atol=1e-6)
    box = _width_10_90(acquire(_edge_volume(), thick_slices(4.0, profile="box"))[4, 4].numpy(), 1.0)
    gauss = _width_10_90(acquire(_edge_volume(), thick_slices(4.0))[4, 4].numpy(), 1.0)
    assert box < gauss  # a box of width T rises in 0.8 T, a Gaussian of FWHM T in 1.09 T


def test_draws_replay_and_respect_the_prior():
    prior = AcquisitionPrior(clinical_prob=1.0, coverage_prob=0.0)
    draws = [draw_acquisition(torch.Generator().manual_seed(s), prior) for s in range(50)]
    again = [draw_acquisition(torch.Generator().manual_seed(s), prior) for s in range(50)]
    assert draws == again
    assert all(1.0 <= d.thickness_mm <= 7.0 for d in draws)
    assert {d.slice_axis for d in draws} == {0, 1, 2}
    for d in draws:
        inplane = [r for a, r in enumerate(d.resolution_mm) if a != d.slice_axis]
        assert all(0.6 <= r <= 1.5 for r in inplane) and 0 <= d.gap_mm <= 0.3 * d.thickness_mm
    plain = draw_acquisition(torch.Generator().manual_seed(0), AcquisitionPrior(clinical_prob=0.0))
    assert plain.resolution_mm == (1.0, 1.0, 1.0)


def test_coverage_and_gamma():
    z = torch.arange(100, dtype=torch.float32)
    top_cut = coverage_mask(z, 0.0, 99.0, ("top", 0.6))
    assert top_cut[:59].all() and not top_cut[60:].any()
    bottom_cut = coverage_mask(z, 0.0, 99.0, ("bottom", 0.6))
    assert bottom_cut[40:].all() and not bottom_cut[:39].any()
    image = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(apply_gamma(image, 2.0), torch.tensor([0.0, 0.0625, 1.0]))
    assert torch.allclose(apply_gamma(image, 1.0, window=0.5), torch.tensor([0.0, 0.5, 1.0]))  # saturated


def test_bad_acquisitions_are_refused():
    with pytest.raises(ParameterError, match="slice profile"):
        thick_slices(3.0, profile="sinc")
    with pytest.raises(ParameterError, match="slice axis"):
        thick_slices(3.0, axis=3)
