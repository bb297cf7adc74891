"""Losses against independent references: a hand-written NT-Xent loop and MONAI's DiceCELoss."""

import math

import pytest
import torch

from training.losses import dice_ce, nt_xent


def _nt_xent_by_hand(z1, z2, tau):
    views = [v / v.norm() for v in list(z1) + list(z2)]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [float(views[i] @ views[k]) / tau for k in range(2 * n) if k != i]
        total += -(float(views[i] @ views[j]) / tau - math.log(sum(math.exp(s) for s in sims)))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_matches_hand_written_loop(tau):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(_nt_xent_by_hand(z1, z2, tau), rel=1e-5)


def test_nt_xent_is_low_for_identical_views_and_rejects_bad_shapes():
    z = torch.eye(4) * 10
    # Identical, orthogonal pairs: positive sim 1/τ = 2, six negatives at 0.
    expected = -(2 - math.log(math.exp(2) + 6))
    assert float(nt_xent(z, z)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="two \\(N, D\\) tensors"):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3))


def test_dice_ce_matches_monai_dicece():
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, 4, generator=g)
    target = torch.randint(0, 4, (2, 1, 6, 5, 4), generator=g)
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert float(dice_ce(logits, target)) == pytest.approx(float(reference(logits, target)), rel=1e-5)


def test_class_weights_weight_the_cross_entropy_term():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, 4, generator=g)
    target = torch.randint(0, 3, (1, 4, 4, 4), generator=g)
    weights = torch.tensor([0.2, 1.0, 3.0])
    logp = logits.log_softmax(1)[0].reshape(3, -1)
    t = target.reshape(-1)
    w = weights[t]
    ce_by_hand = float(-(w * logp[t, torch.arange(t.numel())]).sum() / w.sum())
    unweighted = float(dice_ce(logits, target)) - float(torch.nn.functional.cross_entropy(logits, target))
    assert float(dice_ce(logits, target, class_weights=weights)) == pytest.approx(
        unweighted + ce_by_hand, rel=1e-5
    )
