"""The default denoiser: a residual CNN at half resolution with the noise level as an input (FFDNet-like).

The image is split into its 8 voxel phases by a 3D space-to-depth of 2 (lossless: every voxel is seen), a
constant map of the noise std is added as a 9th channel, a stack of 3x3x3 convolutions with residual
pairs runs at half resolution (8x fewer voxels than full resolution for the same width), and depth-to-space
gives back the noise estimate on the input's grid. `forward(x, sigma)` returns the predicted noise, in the
units of `x`; the denoised image is `x - forward(x, sigma)`.

It is fully convolutional with a fixed receptive field (`halo`), so it runs on the input's own grid at
any size, spacing or orientation; callers normalise `x` and `sigma` by one intensity scale
(`seqinv.inference.denoising.intensity_scale`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqinv.errors import InputError
from seqinv.models.config import ModelConfig
from seqinv.models.hub import HubMixin
from seqinv.models.networks import Conv3d

#: Hidden widths of the published denoiser (10 convolutions of 32 channels at half resolution).
DEFAULT_WIDTHS = (32,) * 10
#: Space-to-depth factor.
FACTOR = 2


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 2d, 2h, 2w) -> (B, 8C, d, h, w)."""
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * 8, d // 2, h // 2, w // 2)


def depth_to_space(x: torch.Tensor) -> torch.Tensor:
    """(B, 8C, d, h, w) -> (B, C, 2d, 2h, 2w); the inverse of `space_to_depth`."""
    b, c8, d, h, w = x.shape
    c = c8 // 8
    x = x.reshape(b, c, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * 2, h * 2, w * 2)


def denoiser_config(widths: tuple[int, ...] = DEFAULT_WIDTHS, **overrides) -> ModelConfig:
    values = {
        "arch": "denoiser",
        "preset": "denoiser",
        "features": widths,
        "decoder_features": 1,
        "dropout": 0.0,
        "output_kind": "denoise",
        "task_name": "denoise",
        "normalization": {"type": "percentile_scale", "percentile": 99.0},
    }
    values.update(overrides)
    return ModelConfig(**values)


class ResidualDenoiser(HubMixin, nn.Module):
    """Noise estimate of (B, 1, D, H, W) images given their noise std (float or (B,) tensor)."""

    ARCH = "denoiser"
    #: How it predicts a volume (seqinv/inference/predictions.py): the stored grid, in slabs.
    PREDICTION = "native_grid"

    def __init__(self, config: ModelConfig | None = None, **overrides):
        super().__init__()
        config = config or denoiser_config(**overrides)
        self.config = config
        widths = config.features
        phases = config.in_channels * FACTOR**3
        # inputs: 8 phases of the high-pass image in noise units, its local level, the noise level
        self.head = Conv3d(phases + 2, widths[0], kernel_size=3, padding=1)
        self.body = nn.ModuleList(
            Conv3d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(len(widths) - 1)
        )
        # batch norm (DnCNN's): without it the image level dominates every feature and the noise is learnt
        # far too slowly (measured: no gain after 200 steps); eval mode uses the running statistics
        self.norms = nn.ModuleList(nn.BatchNorm3d(w) for w in widths[1:])
        self.tail = Conv3d(widths[-1], phases, kernel_size=3, padding=1)
        for conv in (self.head, *self.body):  # He init: torch's default shrinks a deep ReLU stack's signal
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.tail.weight)  # starts as "no noise": the identity denoiser
        nn.init.zeros_(self.tail.bias)

    @property
    def halo(self) -> int:
        """Voxels of context each output voxel depends on, per side (at full resolution)."""
        return FACTOR * (len(self.body) + 2) + FACTOR + 2  # + the 3x3x3 local mean

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise InputError(f"denoiser input has shape {tuple(x.shape)}; expected (batch, 1, D, H, W)")
        size = x.shape[2:]
        pad = []
        for n in reversed(size):
            pad += [0, n % FACTOR]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1, 1)
        sigma = sigma.expand(x.shape[0], 1, 1, 1, 1)
        # the network sees the image without its local level, in noise units (measured: with the level in
        # every channel, learning the noise was far slower), plus the level and sigma as two channels
        local = F.avg_pool3d(F.pad(x, [1] * 6, mode="replicate"), 3, stride=1)
        high = space_to_depth((x - local) / sigma)
        level = F.avg_pool3d(local, FACTOR)
        z = torch.cat([high, level, sigma.expand_as(level)], dim=1)
        h = F.relu(self.head(z))
        skip = h
        for i, (conv, norm) in enumerate(zip(self.body, self.norms, strict=True)):
            y = norm(conv(h))
            if i % 2 == 1 and y.shape == skip.shape:  # residual pairs
                h = skip = F.relu(y + skip)
            else:
                h = F.relu(y)
        noise = depth_to_space(self.tail(h)) * sigma
        return noise[..., : size[0], : size[1], : size[2]]
