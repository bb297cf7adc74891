"""Fine-tuning patches: a random contrast per sample with its labels, or (noisy, noise) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqinv.tasks import get_task
from training.augment import (
    AugmentConfig,
    apply,
    intensity_transforms,
    percentile_rescale,
    resolution_transforms,
    seed_transforms,
    spatial_transforms,
    zscore,
)
from training.contrasts import simulate_image
from training.crops import crop_maps, crop_pad, crop_start
from training.subjects import Subject, sample_seed
from training.task_ops import task_ops


@dataclass(frozen=True)
class NoiseConfig:
    """Denoising noise: σ (on z-scored images) drawn in [sigma_min, sigma_max]; Rician with `rician_prob`."""

    sigma_min: float = 0.05
    sigma_max: float = 0.4
    rician_prob: float = 0.5


class PatchMaker:
    """Fine-tuning patches: a random contrast (priors; all kinds or `kinds`) per sample, labels alongside.

    The label is the task's `target` (seqinv/tasks.py: tissue labels 0–3 for `ixi`, the lesion mask for
    `arc`); tasks with `lesion_focus` (training/task_ops.py) centre `lesion_focus` of the crops on the
    lesion; denoising tasks get (noisy, noise) pairs. `head_focus` of the other crops are centred on a
    labelled voxel, the rest fall anywhere in the volume (whole-scan inference also sees air, skull and the
    image corners).
    Works on the subjects' device: a pool moved to a GPU (`to_device`) generates patches there.
    """

    def __init__(
        self,
        task: str,
        patch_size: int,
        aug: AugmentConfig | None = None,
        noise: NoiseConfig | None = None,
        margin: float = 0.25,
        lesion_focus: float = 0.5,
        head_focus: float = 0.7,
        device=None,
        kinds: tuple[str, ...] | None = None,
    ):
        self.task = task
        self.spec = get_task(task)
        self.focus_on_lesion = task_ops(task).lesion_focus
        self.kinds = kinds
        self.head_focus = head_focus
        self.patch_size = int(patch_size)
        self.aug = aug or AugmentConfig.finetune()
        self.noise = noise or NoiseConfig()
        self.crop_size = int(self.patch_size * (1 + margin) + 1) // 2 * 2
        self.lesion_focus = lesion_focus
        keys = ("image",) if self.denoise else ("image", "label")
        self.spatial = spatial_transforms(self.aug, self.patch_size, keys, device)
        self.intensity = resolution_transforms(self.aug) + intensity_transforms(
            self.aug, self.patch_size, noise=not self.denoise
        )

    @property
    def denoise(self) -> bool:
        """Samples are (noisy, noise) pairs instead of images with labels."""
        return self.spec.output_kind == "denoise"

    def _label_volume(self, subject: Subject) -> torch.Tensor | None:
        return getattr(subject, self.spec.target) if self.spec.target else None

    def _image(self, subject: Subject, start: list[int], gen: torch.Generator) -> torch.Tensor:
        if subject.image is not None:
            return percentile_rescale(crop_pad(subject.image.float(), start, self.crop_size))
        from seqinv.physics.priors import draw_sequence

        maps = crop_maps(subject.maps, start, self.crop_size)
        return simulate_image(maps, draw_sequence(gen, self.kinds), gen)

    def sample(self, subject: Subject, seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        label = self._label_volume(subject)
        focus = None
        if (
            self.focus_on_lesion
            and label is not None
            and float(torch.rand((), generator=gen)) < self.lesion_focus
        ):
            focus = label > 0
        elif subject.labels is not None and float(torch.rand((), generator=gen)) < self.head_focus:
            # the rest of the crops go anywhere, so the head also learns the air and skull of whole scans
            focus = subject.labels > 0
        start = crop_start(subject.shape, self.crop_size, gen, focus)
        data = {"image": self._image(subject, start, gen)[None]}
        if not self.denoise:
            data["label"] = crop_pad(label.to(torch.float32), start, self.crop_size)[None]
        seed_transforms(self.spatial, seed + 1)
        seed_transforms(self.intensity, seed + 2)
        data = apply(self.spatial, data)
        image = apply(self.intensity, data["image"]).float()
        if self.denoise:
            return self._noisy_pair(image, gen)
        return {"image": zscore(image), "label": data["label"].round().long()}

    def _noisy_pair(self, image: torch.Tensor, gen: torch.Generator) -> dict:
        """noisy = z-scored clean + noise (Gaussian, or Rician on the magnitude image); target = noise."""
        mean, std = image.mean(), image.std().clamp_min(1e-6)
        clean = (image - mean) / std
        cfg = self.noise
        sigma = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * float(torch.rand((), generator=gen))
        n1 = torch.randn(image.shape, generator=gen).to(image.device)
        if float(torch.rand((), generator=gen)) < cfg.rician_prob:
            n2 = torch.randn(image.shape, generator=gen).to(image.device)
            magnitude = torch.sqrt((image + sigma * std * n1) ** 2 + (sigma * std * n2) ** 2)
            noisy = (magnitude - mean) / std
        else:
            noisy = clean + sigma * n1
        return {"image": noisy, "clean": clean, "noise": noisy - clean}


class PatchDataset(torch.utils.data.Dataset):
    def __init__(self, subjects: list[Subject], maker: PatchMaker, run_seed: int):
        self.subjects, self.maker, self.run_seed = subjects, maker, run_seed

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> dict:
        seed = sample_seed(self.run_seed, index)
        return self.maker.sample(self.subjects[seed % len(self.subjects)], seed)
