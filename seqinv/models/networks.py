"""SeqInv networks (Chalcroft et al., arXiv 2501.12057): 5-stage 3D CNN encoder and the frozen-encoder U-Net.

State-dict names are ours and stable (`stages.0.block1.conv.weight`, `decoder.ups.0.up.weight`, ...);
only plain torch modules are used so a library refactor cannot rename the weights.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from seqinv.errors import InputError
from seqinv.models.config import ModelConfig
from seqinv.models.hub import HubMixin
from seqinv.models.weights import encoder_config

#: The encoder halves the resolution 4 times: the U-Net pads inputs to a multiple of this.
DOWNSAMPLE = 16


class Conv3d(nn.Conv3d):
    """nn.Conv3d that always takes oneDNN's kernel for float32 on CPU.

    Measured on an AVX2 CPU with torch 2.13 in inference mode: PyTorch's dispatcher sends channel-expanding
    3×3×3 convs (1→8, 8→16, 16→32) to the naive `slow_conv3d` kernel, 10–17× slower than oneDNN
    (1→8 at 96³: 670 ms vs 39 ms). Same weights and state-dict names; results agree to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_onednn(x):
            return torch.ops.aten.mkldnn_convolution(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(x)


def _use_onednn(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


class ConvBlock(nn.Module):
    """3×3×3 conv → instance norm (no affine) → dropout → GELU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv = Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.InstanceNorm3d(out_channels, affine=False)
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(self.conv(x))))


class EncoderStage(nn.Module):
    """Optional 2× max-pool, then two conv blocks."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, downsample: bool):
        super().__init__()
        self.pool = nn.MaxPool3d(2) if downsample else nn.Identity()
        self.block1 = ConvBlock(in_channels, out_channels, dropout)
        self.block2 = ConvBlock(out_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(self.pool(x)))


def _check_input(x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise InputError(f"model input has shape {tuple(x.shape)}; expected (batch, {in_channels}, D, H, W)")


def _check_encoder_size(size: tuple[int, ...]) -> None:
    # instance norm of the 1/16 map needs more than one voxel
    bottleneck = [n // DOWNSAMPLE for n in size]
    if min(bottleneck) < 1 or bottleneck[0] * bottleneck[1] * bottleneck[2] < 2:
        raise InputError(
            f"encoder input spatial size {tuple(size)} is too small: it needs at least 16 voxels along every "
            "axis and 32 along one (the 1/16-resolution map must hold 2 voxels); pad it to 32³ or more"
        )


class SeqInvEncoder(HubMixin, nn.Module):
    """5-stage encoder: (B, C, D, H, W) → pooled (B, F5), the global mean (or max) of the last feature map.

    Mean pooling (the paper's) of GELU(instance-norm(x)) is nearly the same for every input, because
    instance norm fixes each channel's mean and variance; max pooling keeps what differs between samples
    (measured in docs/training.md), so the bundled encoders use `pooling="max"`.

    Spatial sizes need not be multiples of 16 (max-pooling floors); each axis must be ≥ 16 and one ≥ 32,
    so that the 1/16-resolution map holds more than one voxel (instance norm needs it).
    `SeqInvEncoder()` builds the paper preset (64, 128, 256, 512, 768) with random weights.
    """

    ARCH = "encoder"
    #: How it predicts a volume (seqinv/inference/predictions.py): windows on its 1 mm grid.
    PREDICTION = "sliding_window"

    def __init__(self, config: ModelConfig | None = None, preset: str = "paper", **overrides):
        super().__init__()
        if config is None:
            config = ModelConfig.from_preset(preset, **{"arch": "encoder", **overrides})
        self.config = config
        widths = (config.in_channels, *config.features)
        self.stages = nn.ModuleList(
            EncoderStage(widths[i], widths[i + 1], config.dropout, downsample=i > 0) for i in range(5)
        )

    @property
    def out_features(self) -> int:
        return self.config.features[-1]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 5 stage outputs, at full, 1/2, 1/4, 1/8 and 1/16 resolution."""
        _check_input(x, self.config.in_channels)
        _check_encoder_size(tuple(x.shape[2:]))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def pool(self, deepest: torch.Tensor) -> torch.Tensor:
        """(B, F5, d, h, w) → (B, F5) by the config's pooling."""
        if self.config.pooling == "max":
            return deepest.amax(dim=(2, 3, 4))
        return deepest.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x)[-1])


class UpStage(nn.Module):
    """2× transposed conv, concatenate the skip, two conv blocks."""

    def __init__(
        self, in_channels: int, up_channels: int, skip_channels: int, out_channels: int, dropout: float
    ):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, up_channels, kernel_size=2, stride=2)
        self.block1 = ConvBlock(up_channels + skip_channels, out_channels, dropout)
        self.block2 = ConvBlock(out_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(torch.cat([self.up(x), skip], dim=1)))


class Decoder(nn.Module):
    """U-Net decoder with skips from the 4 upper encoder stages (paper widths in brackets):
    up f5→f5/2 ⊕f4 → f4 [768→384⊕512→512]; up f4→f4/2 ⊕f3 → f3; up f3→f3/2 ⊕f2 → f2;
    up f2→f2 ⊕f1 → decoder_features [128→128⊕64→32]; 1×1×1 conv to out_channels.
    """

    def __init__(self, features: tuple[int, ...], decoder_features: int, out_channels: int, dropout: float):
        super().__init__()
        f1, f2, f3, f4, f5 = features
        self.ups = nn.ModuleList(
            [
                UpStage(f5, f5 // 2, f4, f4, dropout),
                UpStage(f4, f4 // 2, f3, f3, dropout),
                UpStage(f3, f3 // 2, f2, f2, dropout),
                UpStage(f2, f2, f1, decoder_features, dropout),
            ]
        )
        self.head = nn.Conv3d(decoder_features, out_channels, kernel_size=1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = maps[4]
        for up, skip in zip(self.ups, reversed(maps[:4]), strict=True):
            x = up(x, skip)
        return self.head(x)


def _kind_keyword(overrides: dict) -> dict:
    """`task=` (config.json's key, the old name) as `output_kind=`, so it beats the default kind."""
    return {("output_kind" if key == "task" else key): value for key, value in overrides.items()}


class SeqInvUNet(HubMixin, nn.Module):
    """Frozen-encoder U-Net for segmentation (C class logits) and denoising (predicted noise).

    `forward(x)` returns (B, out_channels, D, H, W). Each axis is edge-padded to the next multiple of 16
    (at least 32) and the output cropped back, so any size works; inference uses 96³ windows, which need
    no padding.
    """

    ARCH = "unet"
    PREDICTION = "sliding_window"

    def __init__(self, config: ModelConfig | None = None, preset: str = "paper", **overrides):
        super().__init__()
        if config is None:
            values = {"arch": "unet", "output_kind": "segment", **_kind_keyword(overrides)}
            config = ModelConfig.from_preset(preset, **values)
        self.config = config
        self.encoder = SeqInvEncoder(encoder_config(config))
        self.decoder = Decoder(config.features, config.decoder_features, config.out_channels, config.dropout)
        self._encoder_frozen = False

    @classmethod
    def from_encoder(cls, encoder: SeqInvEncoder, **overrides) -> SeqInvUNet:
        """A U-Net around a copy of `encoder`'s weights (e.g. `out_channels=4, output_kind="segment"`)."""
        values = {"arch": "unet", "output_kind": "segment", **_kind_keyword(overrides)}
        model = cls(dataclasses.replace(encoder.config, **values))
        model.encoder.load_state_dict(encoder.state_dict(), strict=True)
        return model

    def freeze_encoder(self) -> SeqInvUNet:
        """Encoder in eval mode (no dropout) with no gradients; stays so after `.train()`."""
        self._encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        return self

    def train(self, mode: bool = True) -> SeqInvUNet:
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels)
        size = x.shape[2:]
        pad = []
        for n in reversed(size):  # F.pad lists the last axis first
            pad += [0, max(2 * DOWNSAMPLE, n + (-n) % DOWNSAMPLE) - n]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        out = self.decoder(self.encoder.forward_features(x))
        return out[..., : size[0], : size[1], : size[2]]
