"""Pools of training subjects: phantoms, qMRI folders; placement on a device; label fractions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from training.phantom_cache import PHANTOM_FIRST_SEED, load_phantom, training_seeds
from training.subjects import Subject


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
