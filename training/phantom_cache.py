"""Built-in head phantoms as training subjects, cached on disk (generation takes seconds, loading ms)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from training.subjects import Subject

PHANTOM_FIRST_SEED = 1000


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
