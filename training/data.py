"""Training data: pools of subjects (built-in phantoms, qMRI folders, real images) and per-sample generation.

A sample is a pure function of (run seed, sample index): crop position, sequences, receive field and every
augmentation are drawn from generators seeded by that pair. Resuming a run or adding ranks therefore
reproduces exactly the data an uninterrupted run would see.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
from training.options import LESION_LABELS, STRATEGIES, TISSUE_LABELS  # noqa: F401 (re-exported)

PHANTOM_FIRST_SEED = 1000


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


def training_seeds(count: int, first: int = PHANTOM_FIRST_SEED) -> list[int]:
    """`count` phantom seeds from `first` on, never the evaluation seed `HELD_OUT_SEED`."""
    from seqinv.physics.phantom import HELD_OUT_SEED

    seeds, seed = [], first
    while len(seeds) < count:
        if seed != HELD_OUT_SEED:
            seeds.append(seed)
        seed += 1
    return seeds


def default_cache_dir() -> Path:
    root = os.environ.get("SEQINV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seqinv")
    return Path(root) / "phantoms"


def load_phantom(seed: int, *, lesion: bool, cache_dir: Path | None) -> Subject:
    """One phantom as a Subject, cached on disk (generation takes seconds, loading milliseconds)."""
    from seqinv.physics.phantom import make_phantom

    path = None
    if cache_dir is not None:
        from seqinv.physics.phantom import PHANTOM_VERSION

        # the version keys the cache: a changed head model must not reuse old phantoms
        path = Path(cache_dir) / f"phantom_v{PHANTOM_VERSION}_{seed}_{'lesion' if lesion else 'plain'}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=False)
            except Exception:  # a stale or truncated cache entry: rebuild it
                path.unlink(missing_ok=True)
    phantom = make_phantom(seed, deform=True, lesion=lesion, head=True)
    subject = Subject(
        name=f"phantom-{seed}",
        maps=phantom.maps,
        labels=torch.as_tensor(np.asarray(phantom.labels), dtype=torch.uint8),
        lesion=None
        if phantom.lesion is None
        else torch.as_tensor(np.asarray(phantom.lesion), dtype=torch.uint8),
        contrast="simulated",
        site="phantom",
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(subject, tmp)
        os.replace(tmp, path)
    return subject


def phantom_pool(
    count: int, *, lesion: bool = False, first_seed: int = PHANTOM_FIRST_SEED, cache_dir: Path | None = None
) -> list[Subject]:
    from seqinv.errors import ParameterError

    if count < 1:
        raise ParameterError(
            f"--phantoms {count}: need at least 1 phantom in the pool; use e.g. --phantoms 8"
        )
    return [load_phantom(s, lesion=lesion, cache_dir=cache_dir) for s in training_seeds(count, first_seed)]


def place_pool(subjects: list[Subject], data_device: str, train_device: str):
    """(pool, device for sample generation): with `--data-device cuda` the pool moves to the training GPU
    and samples are generated there; otherwise it stays on the CPU (device None)."""
    if data_device != "cuda":
        return subjects, None
    return to_device(subjects, train_device), train_device


def to_device(subjects: list[Subject], device) -> list[Subject]:
    """The pool with every tensor on `device` (GPU sample generation: no worker processes needed)."""
    import dataclasses

    moved = []
    for s in subjects:
        changes = {
            k: getattr(s, k).to(device) for k in ("image", "labels", "lesion") if getattr(s, k) is not None
        }
        if s.maps is not None:
            changes["maps"] = s.maps.to(device)
        moved.append(dataclasses.replace(s, **changes))
    return moved


def maps_pool(folder: str | Path) -> list[Subject]:
    """qMRI subjects from disk: `folder` holds the maps itself, or one sub-folder of maps per subject."""
    from seqinv.errors import InputError
    from seqinv.physics.maps_io import load_maps

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"qMRI folder {folder} does not exist; give a folder of PD/R1/R2s/MT maps or --phantom"
        )
    candidates = sorted(p for p in folder.iterdir() if p.is_dir()) or [folder]
    subjects, errors = [], []
    for sub in candidates:
        try:
            subjects.append(Subject(name=sub.name, maps=load_maps(sub)))
        except InputError as err:  # other sub-folders (e.g. derivatives/) may hold no maps
            errors.append(err)
    if not subjects:
        raise InputError(f"no qMRI map folder could be read under {folder}; first problem: {errors[0]}")
    return subjects


# --- cropping -------------------------------------------------------------------------------------------


def _random_voxel(mask: torch.Tensor, gen: torch.Generator, tries: int = 512) -> list[int] | None:
    """A uniformly random voxel of a non-zero mask (None when it is empty).

    Rejection first (no full scan for large masks such as the head); 512 tries miss the phantom lesions
    (0.011–0.26 % of the volume) 64 % of the time on average, so then one `nonzero()` scan.
    """
    flat = mask.reshape(-1)
    candidates = torch.randint(flat.numel(), (tries,), generator=gen)
    hits = candidates[flat[candidates.to(flat.device)].bool().cpu()]
    if len(hits) == 0:
        hits = torch.nonzero(flat).reshape(-1).cpu()
        if len(hits) == 0:
            return None
        hits = hits[torch.randint(len(hits), (1,), generator=gen)]
    return [int(i) for i in np.unravel_index(int(hits[0]), tuple(mask.shape))]


def crop_start(shape, size: int, gen: torch.Generator, focus: torch.Tensor | None = None) -> list[int]:
    """Start corner of a `size`³ box; centred on a random voxel of `focus` (non-zero mask) when given."""
    starts = []
    centre = _random_voxel(focus, gen) if focus is not None else None
    if centre is not None:
        jitter = torch.randint(-size // 4, size // 4 + 1, (3,), generator=gen).tolist()
        for n, c, j in zip(shape, centre, jitter, strict=True):
            starts.append(int(np.clip(c + j - size // 2, min(0, n - size), max(0, n - size))))
        return starts
    for n in shape:
        high = max(0, n - size)
        starts.append(int(torch.randint(high + 1, (1,), generator=gen)) if high else min(0, n - size) // 2)
    return starts


def crop_pad(volume: torch.Tensor, start: list[int], size: int) -> torch.Tensor:
    """Crop the last three dims to `size`³ at `start`, zero-padding where the box leaves the volume."""
    out = volume.new_zeros((*volume.shape[:-3], size, size, size))
    src, dst = [], []
    for s, n in zip(start, volume.shape[-3:], strict=True):
        lo, hi = max(s, 0), min(s + size, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = volume[(..., *src)]
    return out


def crop_maps(maps, start: list[int], size: int):
    from seqinv.physics import QMRIMaps

    fields = {n: getattr(maps, n) for n in ("pd", "r1", "r2s", "mt", "r2")}
    cropped = {n: None if t is None else crop_pad(t.float(), start, size) for n, t in fields.items()}
    return QMRIMaps(**cropped)


# --- contrasts ------------------------------------------------------------------------------------------


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


# --- pretraining views ----------------------------------------------------------------------------------


class ViewMaker:
    """Pairs of views of one qMRI crop for the Base / SeqAug / SeqInv strategies (SPEC §3).

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


# --- fine-tuning patches --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseConfig:
    """Denoising noise: σ (on z-scored images) drawn in [sigma_min, sigma_max]; Rician with `rician_prob`."""

    sigma_min: float = 0.05
    sigma_max: float = 0.4
    rician_prob: float = 0.5


class PatchMaker:
    """Fine-tuning patches: a random contrast (priors; all kinds or `kinds`) per sample, labels alongside.

    task `ixi`: tissue labels 0–3; `arc`: lesion 0/1 with half the crops centred on the lesion;
    `denoise`: (noisy, noise) pairs. `head_focus` of the other crops are centred on a labelled voxel, the
    rest fall anywhere in the volume (whole-scan inference also sees air, skull and the image corners).
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
        self.kinds = kinds
        self.head_focus = head_focus
        self.patch_size = int(patch_size)
        self.aug = aug or AugmentConfig.finetune()
        self.noise = noise or NoiseConfig()
        self.crop_size = int(self.patch_size * (1 + margin) + 1) // 2 * 2
        self.lesion_focus = lesion_focus
        keys = ("image",) if task == "denoise" else ("image", "label")
        self.spatial = spatial_transforms(self.aug, self.patch_size, keys, device)
        self.intensity = resolution_transforms(self.aug) + intensity_transforms(
            self.aug, self.patch_size, noise=task != "denoise"
        )

    def _label_volume(self, subject: Subject) -> torch.Tensor | None:
        if self.task == "ixi":
            return subject.labels
        if self.task == "arc":
            return subject.lesion
        return None

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
            self.task == "arc"
            and label is not None
            and float(torch.rand((), generator=gen)) < self.lesion_focus
        ):
            focus = label > 0
        elif subject.labels is not None and float(torch.rand((), generator=gen)) < self.head_focus:
            # the rest of the crops go anywhere, so the head also learns the air and skull of whole scans
            focus = subject.labels > 0
        start = crop_start(subject.shape, self.crop_size, gen, focus)
        data = {"image": self._image(subject, start, gen)[None]}
        if self.task != "denoise":
            data["label"] = crop_pad(label.to(torch.float32), start, self.crop_size)[None]
        seed_transforms(self.spatial, seed + 1)
        seed_transforms(self.intensity, seed + 2)
        data = apply(self.spatial, data)
        image = apply(self.intensity, data["image"]).float()
        if self.task == "denoise":
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


def label_fraction(subjects: list[Subject], fraction_pct: float) -> list[Subject]:
    """The first ceil(fraction·N) subject names in a fixed hash order (stable across runs), at least one."""
    from seqinv.errors import ParameterError

    if not 0 < fraction_pct <= 100:
        raise ParameterError(
            f"--label-fraction {fraction_pct}: must be in (0, 100] percent, e.g. 1, 10 or 100"
        )
    # Count subjects, not images: all contrasts of a kept subject stay together.
    names = sorted({s.name for s in subjects}, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    keep = set(names[: max(1, int(np.ceil(len(names) * fraction_pct / 100)))])
    return [s for s in subjects if s.name in keep]
