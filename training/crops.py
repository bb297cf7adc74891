"""Random crops of subjects: start corners (optionally centred on a mask), zero-padded crops."""

from __future__ import annotations

import numpy as np
import torch


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
