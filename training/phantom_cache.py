"""Built-in head phantoms as training subjects, cached on disk (generation takes seconds, loading ms)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from training.subjects import Subject

PHANTOM_FIRST_SEED = 1000


def training_seeds(count: int, first: int = PHANTOM_FIRST_SEED) -> list[int]:
    """`count` phantom seeds from `first` on, never the test seed `HELD_OUT_SEED` nor the development seed
    `DEVELOPMENT_SEED` (seqinv/physics/sets.py)."""
    from seqinv.physics.sets import DEVELOPMENT_SEED, HELD_OUT_SEED

    seeds, seed = [], first
    while len(seeds) < count:
        if seed not in (HELD_OUT_SEED, DEVELOPMENT_SEED):
            seeds.append(seed)
        seed += 1
    return seeds


def default_cache_dir() -> Path:
    root = os.environ.get("SEQINV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seqinv")
    return Path(root) / "phantoms"


def load_phantom(seed: int, *, lesion: bool, cache_dir: Path | None) -> Subject:
    """One phantom as a Subject, cached on disk (generation takes seconds, loading milliseconds)."""
    from seqinv.physics.phantom import make_phantom

    path = None if cache_dir is None else cache_path(cache_dir, seed, lesion)
    if path is not None and path.exists():
        try:
            return _read_cache(path, seed)
        except Exception:  # a stale, truncated or foreign entry: rebuild it
            path.unlink(missing_ok=True)
    phantom = make_phantom(seed, deform=True, lesion=lesion, head=True)
    subject = _subject(
        seed,
        phantom.maps,
        torch.as_tensor(np.asarray(phantom.labels), dtype=torch.uint8),
        None if phantom.lesion is None else torch.as_tensor(np.asarray(phantom.lesion), dtype=torch.uint8),
    )
    if path is not None:
        _write_cache(path, subject)
    return subject


def cache_path(cache_dir: Path, seed: int, lesion: bool) -> Path:
    from seqinv.physics.phantom import PHANTOM_VERSION

    # the version keys the cache: a changed head model must not reuse old phantoms
    return Path(cache_dir) / f"phantom_v{PHANTOM_VERSION}_{seed}_{'lesion' if lesion else 'plain'}.npz"


def _subject(seed: int, maps, labels: torch.Tensor, lesion: torch.Tensor | None) -> Subject:
    return Subject(
        name=f"phantom-{seed}", maps=maps, labels=labels, lesion=lesion, contrast="simulated", site="phantom"
    )


def _write_cache(path: Path, subject: Subject) -> None:
    """Plain arrays in an .npz (no pickle: a file planted at the cache name cannot run code)."""
    from seqinv.physics.maps import MAP_NAMES

    arrays = {n: getattr(subject.maps, n).numpy() for n in MAP_NAMES if getattr(subject.maps, n) is not None}
    arrays |= {"affine": subject.maps.affine, "labels": subject.labels.numpy()}
    if subject.lesion is not None:
        arrays["lesion"] = subject.lesion.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def _read_cache(path: Path, seed: int) -> Subject:
    from seqinv.physics.maps import MAP_NAMES, QMRIMaps

    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    maps = QMRIMaps(
        **{n: torch.from_numpy(arrays[n]) for n in MAP_NAMES if n in arrays}, affine=arrays["affine"]
    )
    labels = torch.from_numpy(arrays["labels"])
    if labels.dtype != torch.uint8 or labels.shape != maps.shape:
        raise ValueError(f"{path} is not a phantom cache entry")
    lesion = arrays.get("lesion")
    return _subject(seed, maps, labels, None if lesion is None else torch.from_numpy(lesion))
