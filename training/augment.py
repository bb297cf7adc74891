"""Augmentations for views and fine-tuning patches, built from MONAI transforms (arXiv 2501.12057).

Every random transform draws from its own numpy RandomState, seeded per sample by `seed_transforms`, so a
sample is a pure function of (run seed, sample index): resuming a run regenerates exactly the same data.
Rotations are given in degrees and converted to the radians MONAI expects.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from monai.transforms import RandomizableTransform


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths. Probabilities per transform; intensities act on images rescaled to [0, 1]."""

    rotate_deg: float = 15.0
    shear: float = 0.05
    scale: float = 0.1
    affine_prob: float = 0.8
    elastic_prob: float = 0.0  # Rand3DElastic is slow on CPU (see docs/training.md); off by default
    flip_axes: tuple[int, ...] = (0, 1, 2)
    flip_prob: float = 0.5
    bias_prob: float = 0.5
    bias_coeff: float = 0.3
    gibbs_prob: float = 0.3
    gibbs_alpha: tuple[float, float] = (0.0, 0.5)
    noise_prob: float = 0.5
    noise_std: float = 0.05
    dropout_prob: float = 0.3
    dropout_holes: int = 4
    dropout_size_frac: float = 0.25
    lowres_prob: float = 0.2
    lowres_zoom: tuple[float, float] = (0.4, 1.0)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.25, 1.0)

    @classmethod
    def pretrain(cls) -> AugmentConfig:
        return cls()

    @classmethod
    def finetune(cls) -> AugmentConfig:
        """Milder than pretraining, but the same kinds, so heads also see realistic artefacts."""
        return cls(
            rotate_deg=10.0,
            shear=0.02,
            scale=0.08,
            affine_prob=0.5,
            flip_axes=(0,),
            flip_prob=0.5,
            bias_prob=0.4,
            bias_coeff=0.2,
            gibbs_prob=0.15,
            gibbs_alpha=(0.0, 0.3),
            noise_prob=0.3,
            noise_std=0.03,
            dropout_prob=0.1,
            dropout_holes=2,
            dropout_size_frac=0.15,
            lowres_prob=0.2,
            blur_prob=0.15,
        )

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(
            affine_prob=0,
            flip_prob=0,
            bias_prob=0,
            gibbs_prob=0,
            noise_prob=0,
            dropout_prob=0,
            lowres_prob=0,
            blur_prob=0,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def spatial_transforms(cfg: AugmentConfig, patch_size: int, keys: tuple[str, ...], device=None) -> list:
    """Affine (degrees → radians), optional elastic, flips, then a random crop to `patch_size`³.

    `device`: where MONAI builds the sampling grids; give the images' device (MONAI's default builds them on
    the CPU, which made GPU-resident sample generation CPU-bound: 4.5 s per 8-pair step on an H100)."""
    from monai.transforms import Rand3DElasticd, RandAffined, RandFlipd, RandSpatialCropd

    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    rad = math.radians(cfg.rotate_deg)
    out = [
        RandAffined(
            keys,
            prob=cfg.affine_prob,
            rotate_range=(rad, rad, rad),
            shear_range=(cfg.shear,) * 6,
            scale_range=(cfg.scale,) * 3,
            mode=modes,
            padding_mode="zeros",
            device=device,
        )
    ]
    if cfg.elastic_prob > 0:
        out.append(
            Rand3DElasticd(
                keys,
                sigma_range=(5, 8),
                magnitude_range=(50, 150),
                prob=cfg.elastic_prob,
                mode=modes,
                padding_mode="zeros",
                device=device,
            )
        )
    out += [RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis) for axis in cfg.flip_axes]
    out.append(RandSpatialCropd(keys, roi_size=patch_size, random_size=False))
    return out


def resolution_transforms(cfg: AugmentConfig) -> list:
    """Random lower acquisition resolution and blur: real scans are rarely a sharp 1 mm."""
    from monai.transforms import RandGaussianSmooth, RandSimulateLowResolution

    return [
        RandSimulateLowResolution(prob=cfg.lowres_prob, zoom_range=cfg.lowres_zoom),
        RandGaussianSmooth(
            sigma_x=cfg.blur_sigma, sigma_y=cfg.blur_sigma, sigma_z=cfg.blur_sigma, prob=cfg.blur_prob
        ),
    ]


def intensity_transforms(cfg: AugmentConfig, patch_size: int, *, noise: bool = True) -> list:
    """Bias field, Gibbs ringing, Rician noise and coarse cuboid dropout (arXiv 2501.12057)."""
    from monai.transforms import RandCoarseDropout, RandGibbsNoise

    hole = max(2, int(patch_size * cfg.dropout_size_frac))
    out = [
        RandSmoothBias(coeff=cfg.bias_coeff, prob=cfg.bias_prob),
        RandGibbsNoise(prob=cfg.gibbs_prob, alpha=cfg.gibbs_alpha),
    ]
    if noise:
        out.append(RandRician(prob=cfg.noise_prob, std=cfg.noise_std))
    out.append(
        RandCoarseDropout(
            holes=1,
            max_holes=cfg.dropout_holes,
            spatial_size=max(2, hole // 2),
            max_spatial_size=hole,
            fill_value=0.0,
            prob=cfg.dropout_prob,
        )
    )
    return out


class _TorchRandom(RandomizableTransform):
    """MONAI-seeded transform that draws its large random arrays with torch on the image's device.

    MONAI's RandBiasField and RandRicianNoise build them in numpy on the CPU: on a GPU that round trip,
    not the network, limited training speed. Subclasses implement `_apply(img, generator)`."""

    def __call__(self, img):
        img = torch.as_tensor(img)
        self.randomize(None)
        if not self._do_transform:
            return img
        return self._apply(img)

    def _generator(self, img: torch.Tensor) -> torch.Generator:
        return torch.Generator(device=img.device).manual_seed(int(self.R.randint(0, 2**31 - 1)))


class RandSmoothBias(_TorchRandom):
    """Multiplicative bias field exp(c·f), c ~ U(0, coeff): the physics receive field
    (`seqinv.physics.priors.random_receive_field`) with a random strength."""

    def __init__(self, coeff: float = 0.3, prob: float = 0.5, control_points: int = 4):
        super().__init__(prob)
        self.coeff, self.control_points = coeff, control_points

    def _apply(self, img: torch.Tensor) -> torch.Tensor:
        from seqinv.physics.priors import random_receive_field

        strength = self.R.uniform(0.0, self.coeff)
        field = random_receive_field(
            img.shape, self._generator(img), strength, control_points=self.control_points
        )
        return img * field.to(img.dtype)


class RandRician(_TorchRandom):
    """Rician noise sqrt((x + n1)² + n2²), n ~ N(0, s²), s ~ U(0, std) per sample."""

    def __init__(self, prob: float = 0.5, std: float = 0.05):
        super().__init__(prob)
        self.std = std

    def _apply(self, img: torch.Tensor) -> torch.Tensor:
        sigma = self.R.uniform(0.0, self.std)
        gen = self._generator(img)
        n1 = torch.randn(img.shape, generator=gen, device=img.device, dtype=img.dtype)
        n2 = torch.randn(img.shape, generator=gen, device=img.device, dtype=img.dtype)
        return torch.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)


def seed_transforms(transforms: list, seed: int) -> None:
    """Give each random transform its own stream derived from `seed` (no correlated draws between them)."""
    from monai.transforms import Randomizable

    for i, t in enumerate(transforms):
        if isinstance(t, Randomizable):
            t.set_random_state(seed=(seed * 1_000_003 + 7919 * (i + 1)) % (2**32))


def apply(transforms: list, data):
    """Run transforms in order and drop MONAI's metadata (plain tensors downstream)."""
    for t in transforms:
        data = t(data)
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    return _plain(data)


def _plain(x):
    from monai.data import MetaTensor

    if isinstance(x, MetaTensor):
        return x.as_tensor()
    return torch.as_tensor(x)


def percentile_rescale(image: torch.Tensor, lower: float = 0.5, upper: float = 99.5) -> torch.Tensor:
    """Map the [lower, upper] percentiles to [0, 1] and clip (cancels any global receive gain)."""
    flat = image.float().flatten()
    if flat.numel() > 65_536:  # a strided subsample estimates percentiles well and sorts 10-100x faster
        flat = flat[:: flat.numel() // 65_536 + 1]
    q = torch.tensor([lower / 100, upper / 100], dtype=flat.dtype, device=flat.device)
    lo, hi = torch.quantile(flat, q)
    return ((image.float() - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def zscore(image: torch.Tensor) -> torch.Tensor:
    return (image - image.mean()) / image.std().clamp_min(1e-6)
