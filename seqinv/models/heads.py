"""Pretraining heads (arXiv 2501.12057): SimCLR projector and the image reconstructor."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Linear in→hidden, GELU, Linear hidden→out: (B, in_features) → (B, out)."""

    def __init__(self, in_features: int = 768, hidden: int = 512, out: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(h)))


class Reconstructor(nn.Module):
    """Four 2× transposed convs halving the width (768→384→192→96→48 for the paper), then a 1×1×1 conv
    to `out_channels`: (B, features, d, h, w) → (B, out_channels, 16d, 16h, 16w).

    As in the reference there is no nonlinearity between the transposed convs.
    """

    def __init__(self, features: int = 768, out_channels: int = 1):
        super().__init__()
        widths = [features // 2**i for i in range(5)]
        if widths[-1] < 1:
            raise ValueError(f"Reconstructor needs features >= 16 to halve 4 times, got {features}")
        self.ups = nn.Sequential(
            *(nn.ConvTranspose3d(widths[i], widths[i + 1], kernel_size=2, stride=2) for i in range(4))
        )
        self.head = nn.Conv3d(widths[-1], out_channels, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.head(self.ups(feature_map))
