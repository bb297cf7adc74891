"""Losses: NT-Xent (SimCLR) for pretraining, Dice + cross-entropy for segmentation.

Shapes: embeddings (N, D); logits (B, C, D, H, W); integer targets (B, D, H, W) or (B, 1, D, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised-temperature cross-entropy (Chen et al. 2020, SimCLR) over 2N views.

    Row i of `z1` and row i of `z2` are the positive pair; the other 2N - 2 rows are negatives.
    Returns the mean over all 2N anchors.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent expects two (N, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is never its own negative
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def _as_index(target: torch.Tensor) -> torch.Tensor:
    if target.ndim >= 2 and target.shape[1] == 1:
        target = target[:, 0]
    return target.long()


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss on softmax probabilities, summed over the batch (stable for classes absent in a patch).

    1 - mean over classes of (2 |P ∩ G| + smooth) / (|P| + |G| + smooth).
    """
    index = _as_index(target)
    n_classes = logits.shape[1]
    prob = logits.float().softmax(dim=1)
    onehot = F.one_hot(index, n_classes).movedim(-1, 1).to(prob.dtype)
    if not include_background:
        prob, onehot = prob[:, 1:], onehot[:, 1:]
    dims = [0, *range(2, prob.ndim)]
    intersection = (prob * onehot).sum(dims)
    denominator = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


def dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """Dice (background left out, as the paper) + cross-entropy (optionally class-weighted), equal weights."""
    index = _as_index(target)
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    ce = F.cross_entropy(logits.float(), index, weight=weight)
    return dice_loss(logits, index, include_background=include_background) + ce
