"""Training subjects (qMRI maps or a real image, with label maps) and the per-sample seed.

A sample is a pure function of (run seed, sample index): crop position, sequences, receive field and every
augmentation are drawn from generators seeded by that pair. Resuming a run or adding ranks therefore
reproduces exactly the data an uninterrupted run would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Subject:
    """One subject: qMRI maps to simulate from, or a real image; optional label maps (voxel order)."""

    name: str
    maps: object | None = None  # seqinv.physics.QMRIMaps
    image: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    lesion: torch.Tensor | None = None
    contrast: str = ""
    site: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        source = self.maps.pd if self.maps is not None else self.image
        return tuple(source.shape[-3:])


def sample_seed(run_seed: int, index: int) -> int:
    return (int(run_seed) * 1_000_003 + int(index) * 7_919 + 12_345) % (2**31 - 1)
