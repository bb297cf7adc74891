"""Pretraining views: pairs of simulated views of one qMRI crop for Base / SeqAug / SeqInv."""

from __future__ import annotations

import json

import torch

from training.augment import (
    AugmentConfig,
    apply,
    intensity_transforms,
    resolution_transforms,
    seed_transforms,
    spatial_transforms,
    zscore,
)
from training.contrasts import simulate_image, typical_mprage
from training.crops import crop_maps, crop_start
from training.options import STRATEGIES
from training.subjects import Subject, sample_seed


class ViewMaker:
    """Pairs of views of one qMRI crop for the Base / SeqAug / SeqInv strategies (arXiv 2501.12057).

    Each view: simulate → percentile rescale → spatial aug → (reconstruction target) → resolution and
    intensity aug → z-score. Base: one fixed MPRAGE for both views; SeqAug: one random sequence for
    both; SeqInv: two independent random sequences.
    """

    def __init__(
        self,
        strategy: str,
        patch_size: int,
        aug: AugmentConfig | None = None,
        margin: float = 0.25,
        device=None,
    ):
        from seqinv.errors import ParameterError

        if strategy not in STRATEGIES:
            raise ParameterError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self.patch_size = int(patch_size)
        self.aug = aug or AugmentConfig.pretrain()
        # Crop a margin around the patch so rotations do not bring empty corners into the patch.
        self.crop_size = int(self.patch_size * (1 + margin) + 1) // 2 * 2
        self.spatial = spatial_transforms(self.aug, self.patch_size, ("image",), device)
        self.intensity = resolution_transforms(self.aug) + intensity_transforms(self.aug, self.patch_size)

    def view(self, image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed_transforms(self.spatial, seed)
        seed_transforms(self.intensity, seed + 1)
        spatial = apply(self.spatial, {"image": image[None]})["image"]
        target = spatial.clone()
        return zscore(apply(self.intensity, spatial).float()), target

    def pair(self, subject: Subject, seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        focus = subject.labels > 0 if subject.labels is not None else None
        start = crop_start(subject.shape, self.crop_size, gen, focus)
        maps = crop_maps(subject.maps, start, self.crop_size)
        if self.strategy == "base":
            seq1 = seq2 = typical_mprage()
        else:
            from seqinv.physics.priors import draw_sequence

            seq1 = draw_sequence(gen)
            seq2 = seq1 if self.strategy == "seqaug" else draw_sequence(gen)
        image1 = simulate_image(maps, seq1, gen)
        image2 = image1 if seq2 is seq1 else simulate_image(maps, seq2, gen)
        v1, t1 = self.view(image1, seed * 2 + 1)
        v2, t2 = self.view(image2, seed * 2 + 2)
        sequences = json.dumps([seq1.to_dict(), seq2.to_dict()])  # a string collates as a list
        return {"view1": v1, "view2": v2, "target1": t1, "target2": t2, "sequences": sequences}


class PretrainDataset(torch.utils.data.Dataset):
    """Map-style: item `index` is the view pair of sample `index` of the run (any index is valid)."""

    def __init__(self, subjects: list[Subject], maker: ViewMaker, run_seed: int):
        self.subjects, self.maker, self.run_seed = subjects, maker, run_seed

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> dict:
        seed = sample_seed(self.run_seed, index)
        subject = self.subjects[seed % len(self.subjects)]
        return self.maker.pair(subject, seed)
