"""ICBM152 head phantoms: grid, labels, plausible values, realistic contrasts, reproducibility."""

import numpy as np
import pytest
import torch

from seqinv.physics import FSE, simulate
from seqinv.physics.phantom import HELD_OUT_SEED, TISSUES, make_phantom

SHAPE = (197, 233, 189)  # ICBM152 2009 at 1 mm


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(11, deform=True, lesion=True, head=True)


def _means(image, phantom):
    return {
        name: float(image[torch.from_numpy(phantom.labels == lab)].mean())
        for lab, name in enumerate(("bg", "csf", "gm", "wm"))
    }


def test_grid_types_and_affine(phantom):
    assert phantom.maps.shape == SHAPE and phantom.labels.shape == SHAPE
    assert phantom.tissue_probs.shape == (3, *SHAPE) and phantom.tissue_probs.dtype == np.float32
    assert phantom.labels.dtype == np.uint8 and set(np.unique(phantom.labels)) == {0, 1, 2, 3}
    expected = np.array([[1, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(phantom.affine, expected)
    np.testing.assert_allclose(phantom.maps.affine, expected)
    phantom.maps.validate()  # finite, non-negative, one shape
    assert phantom.tissue_probs.min() >= 0 and phantom.tissue_probs.max() <= 1 + 1e-5


def test_brain_volumes_are_anatomical(phantom):
    litres = {lab: float((phantom.labels == lab).sum()) / 1e6 for lab in (1, 2, 3)}
    assert 0.05 < litres[1] < 0.5 and 0.6 < litres[2] < 1.6 and 0.4 < litres[3] < 1.0
    # labels agree with the dominant tissue probability
    brain = phantom.labels > 0
    argmax = phantom.tissue_probs.argmax(0) + 1
    assert (argmax[brain] == phantom.labels[brain]).mean() > 0.99


def test_tissue_values_within_their_prior_ranges(phantom):
    maps = phantom.maps
    for lab, tissue in ((1, "csf"), (3, "wm")):
        core = torch.from_numpy(phantom.labels == lab) & torch.from_numpy(
            phantom.tissue_probs[lab - 1] > 0.95
        )
        core &= torch.from_numpy(phantom.lesion == 0)
        for param in ("pd", "r1", "mt"):
            low, high = TISSUES[tissue][param]
            median = float(getattr(maps, param)[core].median())
            assert low * 0.9 - 0.02 <= median <= high * 1.1 + 0.02, (tissue, param, median)


def test_head_tissues_outside_brain_are_background(phantom):
    outside = torch.from_numpy(phantom.labels == 0)
    head = outside & (phantom.maps.pd > 20)
    assert int(head.sum()) > 200_000  # scalp, marrow, eyes... around the brain
    assert float(phantom.maps.pd[0, 0, -1]) == 0.0  # air in the corner
    skull = outside & (phantom.maps.r2s > 250)  # cortical bone: very short T2*
    assert int(skull.sum()) > 50_000


def test_t1w_and_t2w_orderings(phantom):
    from seqinv.physics import make_sequence

    t1w = _means(simulate(phantom.maps, make_sequence("mprage")), phantom)
    assert t1w["wm"] > t1w["gm"] > t1w["csf"]
    t2w = _means(simulate(phantom.maps, FSE(tr_s=5.0, te_s=0.1)), phantom)
    assert t2w["csf"] > t2w["gm"] > t2w["wm"]
    flair = simulate(phantom.maps, make_sequence("flair"))
    means = _means(flair, phantom)
    pure_csf = torch.from_numpy((phantom.labels == 1) & (phantom.tissue_probs[0] > 0.95))
    assert float(flair[pure_csf].mean()) < 0.5 * min(means["gm"], means["wm"])  # fluid attenuated
    lesion = float(flair[torch.from_numpy(phantom.lesion > 0)].mean())
    assert lesion > means["wm"]


def test_lesion_mask_lies_in_the_brain(phantom):
    lesion = phantom.lesion > 0
    assert phantom.lesion.dtype == np.uint8 and 200 < lesion.sum() < 200_000
    assert (phantom.labels[lesion] > 0).mean() > 0.95
    assert float(phantom.maps.r1[torch.from_numpy(lesion)].median()) < TISSUES["wm"]["r1"][0]


def test_seeded_reproducible_and_seed_dependent(phantom):
    a = make_phantom(3, deform=False, head=False)
    b = make_phantom(3, deform=False, head=False)
    assert torch.equal(a.maps.r1, b.maps.r1) and np.array_equal(a.labels, b.labels)
    assert a.values != phantom.values  # another seed, other tissue values
    assert a.lesion is None
    assert float(a.maps.pd[a.labels == 0].max()) == 0.0  # head=False: air outside the brain
    assert isinstance(HELD_OUT_SEED, int)
