"""Simulated contrasts of a qMRI crop: the Base strategy's MPRAGE, receive fields, rescaled images."""

from __future__ import annotations

import torch

from training.augment import percentile_rescale


def typical_mprage():
    """The fixed MPRAGE of the Base strategy (a common 3T protocol)."""
    from seqinv.physics import make_sequence

    return make_sequence("mprage")


def receive_field(shape, gen: torch.Generator, device=None) -> torch.Tensor:
    """A smooth random receive (bias) field from the physics priors, built on `device`."""
    from seqinv.physics.priors import random_receive_field

    return random_receive_field(tuple(shape), generator=gen, device=device)


def simulate_image(maps, sequence, gen: torch.Generator, *, receive: bool = True) -> torch.Tensor:
    """Physical signal of `sequence` on `maps`, times a random receive field, rescaled to [0, 1]."""
    from seqinv.physics import simulate

    field = receive_field(maps.shape, gen, maps.pd.device) if receive else None
    signal = simulate(maps, sequence, receive=field)
    return percentile_rescale(torch.nan_to_num(signal.float()))
