"""Head qMRI phantoms from the ICBM152 2009 template (nilearn ships its GM/WM maps and brain mask).

Brain: partial-volume mix of per-tissue values (CSF, cortical GM, deep GM, WM) drawn per subject from
`TISSUES`, smooth within-tissue texture, optional smooth random deformation (applied to the probability
maps, so labels follow). Outside the brain: randomised shells (CSF rim, skull tables, marrow, scalp
fat/muscle, skin), eyes and orbital fat, air; all labelled 0. Optional stroke lesion with its mask.
Everything is seeded; `HELD_OUT_SEED` is reserved for evaluation and `DEVELOPMENT_SEED` for choosing
(seqinv/physics/sets.py). Grid: the template's 1 mm grid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from seqinv.physics.maps import QMRIMaps

CLOSING_MM = 12.0  # gaps narrower than 2× this between brain parts hold skull-base tissue, not air
HEAD_MAX_MM = 30.0  # shells never reach beyond this distance from the brain mask
# Bump when the generator changes, so on-disk phantom caches (training/phantom_cache.py) can be invalidated.
PHANTOM_VERSION = 2
HELD_OUT_SEED = 152_2009  # the test seed: never used for training phantoms, and never to choose anything
DEVELOPMENT_SEED = 2026_12  # the development seed: phantoms that choose checkpoints and parameters
PARAMS = ("pd", "r1", "r2s", "mt", "r2")

# Per-subject uniform ranges (3 T): pd p.u., r1 1/s, r2s 1/s, mt p.u., r2 1/s. Brain values:
# docs/physics.md ("Head phantoms", its table); head tissues and lesion: typical literature values.
TISSUES: dict[str, dict[str, tuple[float, float]]] = {
    "csf": dict(pd=(95, 100), r1=(0.22, 0.28), r2s=(1, 5), mt=(0.0, 0.2), r2=(0.5, 1.0)),
    "gm": dict(pd=(78, 85), r1=(0.55, 0.70), r2s=(14, 18), mt=(0.7, 1.0), r2=(10, 12)),
    "deep_gm": dict(pd=(72, 80), r1=(0.70, 0.90), r2s=(25, 45), mt=(0.9, 1.3), r2=(13, 18)),
    "wm": dict(pd=(66, 72), r1=(0.90, 1.20), r2s=(18, 25), mt=(1.4, 2.0), r2=(12, 14)),
    "lesion": dict(pd=(82, 95), r1=(0.30, 0.60), r2s=(5, 12), mt=(0.2, 0.7), r2=(3, 8)),
    "bone": dict(pd=(5, 15), r1=(1.5, 3.0), r2s=(300, 800), mt=(0.5, 2.0), r2=(100, 300)),
    "marrow": dict(pd=(60, 85), r1=(2.0, 3.0), r2s=(40, 80), mt=(0.3, 1.0), r2=(10, 16)),
    "fat": dict(pd=(85, 100), r1=(2.4, 3.0), r2s=(25, 40), mt=(0.1, 0.5), r2=(8, 12)),
    "muscle": dict(pd=(70, 80), r1=(0.65, 0.85), r2s=(35, 50), mt=(1.8, 3.0), r2=(25, 35)),
    "skin": dict(pd=(60, 75), r1=(0.8, 1.2), r2s=(30, 50), mt=(1.0, 2.0), r2=(18, 30)),
    "vitreous": dict(pd=(95, 100), r1=(0.25, 0.35), r2s=(1, 5), mt=(0.0, 0.2), r2=(0.5, 1.5)),
    "air": dict(pd=(0, 0), r1=(1, 1), r2s=(30, 30), mt=(0, 0), r2=(20, 20)),
}
# Head shells outward from the brain, thickness ranges in mm.
CSF_RIM_MM = (0.5, 2.5)  # extra-cerebral CSF between brain mask and skull (labelled CSF)
SHELLS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("bone", (1.5, 3.0)),  # inner table
    ("marrow", (1.5, 4.0)),  # diploë
    ("bone", (1.0, 2.5)),  # outer table
    ("scalp", (3.0, 7.0)),  # fat / muscle mix
    ("skin", (1.0, 2.0)),
)
# Within-tissue texture: relative amplitude of a smooth multiplicative field per parameter.
TEXTURE = dict(pd=0.02, r1=0.04, r2s=0.06, mt=0.06, r2=0.04)
# Deep grey-matter nuclei (MNI mm): centre of the right one (mirrored), radii.
DEEP_GM = (
    ((25, 2, 1), (6, 14, 9)),  # putamen
    ((13, 12, 10), (5, 10, 8)),  # caudate
    ((11, -18, 6), (8, 12, 8)),  # thalamus
    ((19, -3, -2), (4, 7, 5)),  # pallidum
    ((8, -18, -10), (4, 5, 4)),  # red nucleus / substantia nigra
)
EYES = ((32, 55, -38), (11.0, 12.5))  # right eye centre (mirrored), radius range mm


@dataclass
class Phantom:
    """A seeded head phantom on the 1 mm ICBM152 grid."""

    maps: QMRIMaps
    labels: np.ndarray  # uint8: 0 background / head tissues, 1 CSF, 2 GM, 3 WM
    tissue_probs: np.ndarray  # float32 (3, X, Y, Z): CSF, GM, WM
    lesion: np.ndarray | None  # uint8 mask or None
    affine: np.ndarray
    seed: int
    values: dict = field(default_factory=dict)  # the drawn per-tissue values (for logs)


_NILEARN_FILES = {  # nilearn ships these in nilearn/datasets/data (ICBM152 2009a, 1 mm)
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
}


def _load_icbm152():
    """GM, WM, brain mask and affine, exactly as nilearn's `load_mni152_*(resolution=1)` give them.

    Reads nilearn's bundled files with nibabel (importing nilearn.datasets costs ~6 s through scikit-learn);
    falls back to the nilearn functions if the files move.
    """
    import importlib.util
    from pathlib import Path

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" if spec else None
    if folder is not None and all((folder / f).is_file() for f in _NILEARN_FILES.values()):
        images = {k: nib.load(folder / f) for k, f in _NILEARN_FILES.items()}
    else:  # pragma: no cover - depends on the installed nilearn layout
        from nilearn import datasets

        images = {
            "gm": datasets.load_mni152_gm_template(resolution=1),
            "wm": datasets.load_mni152_wm_template(resolution=1),
            "t1": datasets.load_mni152_template(resolution=1),
        }
    data = {}
    for key, image in images.items():
        array = np.asarray(image.dataobj, dtype=np.float32)
        data[key] = array / array.max()  # nilearn rescales each template to [0, 1]
    mask = data.pop("t1") > 0.2  # nilearn's load_mni152_brain_mask threshold
    return data["gm"], data["wm"], mask, images["gm"].affine.astype(np.float64)


@functools.lru_cache(maxsize=1)
def _template():
    """Template channels (CSF, GM, WM, deep-GM weight, mm outside the brain, mm outside its closing)."""
    from scipy import ndimage

    gm, wm, mask, affine = _load_icbm152()
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)  # nilearn ships no CSF map
    outside_mm = ndimage.distance_transform_edt(~mask).astype(np.float32)
    deep = _deep_gm_weight(gm.shape, affine)
    channels = np.stack([csf, gm, wm, deep, outside_mm, _closed_distance_mm(mask)]).astype(np.float32)
    return torch.from_numpy(channels), affine


def _closed_distance_mm(mask: np.ndarray) -> np.ndarray:
    """mm outside the brain mask closed by `CLOSING_MM` (fills the skull base between lobes), 2 mm grid."""
    from scipy import ndimage

    coarse = mask[::2, ::2, ::2]
    dilated = ndimage.distance_transform_edt(~coarse) * 2.0 <= CLOSING_MM
    closed = (ndimage.distance_transform_edt(dilated) * 2.0 > CLOSING_MM) | coarse
    distance = torch.from_numpy((ndimage.distance_transform_edt(~closed) * 2.0).astype(np.float32))
    return F.interpolate(distance[None, None], size=mask.shape, mode="trilinear", align_corners=True)[
        0, 0
    ].numpy()


def _deep_gm_weight(shape, affine) -> np.ndarray:
    """Soft ellipsoids over the nuclei: 1 inside, 0.5 on the surface, ~0 at 1.5 radii."""
    axes = [affine[a, a] * np.arange(n) + affine[a, 3] for a, n in enumerate(shape)]  # mm (axis-aligned grid)
    weight = np.zeros(shape, np.float32)
    for (cx, cy, cz), radii in DEEP_GM:
        for centre in ((cx, cy, cz), (-cx, cy, cz)):
            box = tuple(
                slice(*np.searchsorted(ax, [c - 1.5 * r, c + 1.5 * r]))
                for ax, c, r in zip(axes, centre, radii, strict=True)
            )
            d2 = [((ax[b] - c) / r) ** 2 for ax, b, c, r in zip(axes, box, centre, radii, strict=True)]
            q = d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]
            np.maximum(weight[box], 1.0 / (1.0 + np.exp(6.0 * (q - 1.0))), out=weight[box])
    return weight


def _linear_upsampler(n_in: int, n_out: int) -> torch.Tensor:
    """(n_in, n_out) matrix of 1-D linear interpolation with aligned end points."""
    position = torch.linspace(0.0, n_in - 1.0, n_out)
    low = position.floor().clamp_(max=n_in - 2).long()
    frac = position - low
    matrix = torch.zeros(n_in, n_out)
    matrix[low, torch.arange(n_out)] = 1.0 - frac
    matrix[low + 1, torch.arange(n_out)] = frac
    return matrix


def _smooth_noise(shape, cells, generator, channels: int | None = None) -> torch.Tensor:
    """N(0, 1) on a coarse `cells` grid, trilinearly upsampled to `shape` ((channels, *shape) if given).

    Trilinear upsampling is separable: three small matrix products, much faster than F.interpolate on CPU.
    """
    field = torch.randn((channels or 1, *cells), generator=generator)
    for axis, (n_in, n_out) in enumerate(zip(cells, shape, strict=True)):
        field = torch.movedim(
            torch.movedim(field, axis + 1, -1) @ _linear_upsampler(n_in, n_out), -1, axis + 1
        )
    field = field.contiguous()
    return field if channels else field[0]


def _draw_values(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    return {t: {p: float(rng.uniform(*r)) for p, r in ranges.items()} for t, ranges in TISSUES.items()}


def _deform(channels: torch.Tensor, rng, generator) -> torch.Tensor:
    """Resample (C, X, Y, Z) channels through a random global scale/rotation + smooth displacement."""
    shape = channels.shape[1:]
    angles = np.radians(rng.uniform(-6, 6, 3))
    cos, sin = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cos[0], -sin[0]], [0, sin[0], cos[0]]])
    ry = np.array([[cos[1], 0, sin[1]], [0, 1, 0], [-sin[1], 0, cos[1]]])
    rz = np.array([[cos[2], -sin[2], 0], [sin[2], cos[2], 0], [0, 0, 1]])
    matrix = rx @ ry @ rz @ np.diag(1.0 / rng.uniform(0.9, 1.1, 3))
    centre = [(n - 1) / 2 for n in shape]
    coords = [torch.arange(n, dtype=torch.float32) - c for n, c in zip(shape, centre, strict=True)]
    displacement = 2.5 * _smooth_noise(shape, (5, 6, 5), generator, channels=3)  # voxels (≈ mm)
    grid = []
    for row in range(3):  # source voxel = centre + M (target − centre) + smooth displacement
        src = displacement[row]
        src += float(matrix[row, 0]) * coords[0][:, None, None]
        src += float(matrix[row, 1]) * coords[1][None, :, None]
        src += float(matrix[row, 2]) * coords[2][None, None, :]
        grid.append(src.add_(centre[row]).mul_(2.0 / (shape[row] - 1)).sub_(1.0))
    # grid_sample wants (x, y, z) = (last, middle, first) input dimension
    sample_grid = torch.stack(grid[::-1], dim=-1)[None]
    out = F.grid_sample(
        channels[None], sample_grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0]


def _soft_step(distance: torch.Tensor, edge: float) -> torch.Tensor:
    """1 beyond `edge`, 0 inside, a one-voxel linear ramp between (partial volume)."""
    return (distance - edge + 0.5).clamp_(0.0, 1.0)


def _column(values: dict[str, dict[str, float]], tissue: str) -> torch.Tensor:
    return torch.tensor([values[tissue][p] for p in PARAMS], dtype=torch.float32)[:, None]


def _fill_head(maps, channels, values, rng, generator) -> None:
    """Write the head tissues into `maps` (5, N) and grow the CSF rim into `channels` in place.

    Around the brain: a CSF rim. Inside the closed brain outline (skull base, between lobes): a smooth random
    mix of bone, marrow, muscle and fat with air cells. Outside it: skull tables, marrow, scalp, skin.
    """
    csf, gm, wm, _, outside_mm, closed_mm = channels.view(channels.shape[0], -1)
    band = torch.nonzero((outside_mm > 0) & (closed_mm <= HEAD_MAX_MM)).squeeze(1)
    fields = _smooth_noise(channels.shape[1:], (6, 7, 6), generator, channels=7).view(7, -1)[:, band]
    free = (1.0 - csf[band] - gm[band] - wm[band]).clamp_(0.0, 1.0)
    edge = rng.uniform(*CSF_RIM_MM)
    csf[band] += (1.0 - _soft_step(outside_mm[band], edge)) * free  # the rim joins the brain's CSF class
    depth = closed_mm[band] + 1.5 * fields[0]  # uneven shell thickness
    previous = _soft_step(depth, edge)
    head = _filler(values, fields[2:]) * (1.0 - previous)
    muscle = (0.4 + 0.6 * fields[1]).clamp_(0.0, 1.0)  # scalp: smooth mix of fat and muscle
    scalp = _column(values, "fat") + (_column(values, "muscle") - _column(values, "fat")) * muscle
    for tissue, (low, high) in SHELLS:  # membership = step(inner edge) − step(outer edge)
        edge += rng.uniform(low, high)
        beyond = _soft_step(depth, edge)
        head += (scalp if tissue == "scalp" else _column(values, tissue)) * (previous - beyond)
        previous = beyond
    maps[:, band] = head + _column(values, "air") * previous


def _filler(values, fields) -> torch.Tensor:
    """Skull-base tissue: softmax mix of bone, marrow, muscle, fat from smooth fields, with air cells."""
    weights = torch.softmax(3.0 * fields[:4], dim=0)
    mix = sum(
        _column(values, t) * w for t, w in zip(("bone", "marrow", "muscle", "fat"), weights, strict=True)
    )
    air = ((fields[4] - 1.0) * 2.0).clamp_(0.0, 1.0)  # sinuses / mastoid air where the field is high
    return mix + (_column(values, "air") - mix) * air


def _box(shape, affine, centre_mm, half_mm):
    centre = np.linalg.solve(affine, [*centre_mm, 1.0])[:3]
    half = half_mm / np.abs(np.diag(affine)[:3])
    return tuple(
        slice(int(max(0, np.floor(c - h))), int(min(n, np.ceil(c + h) + 1)))
        for c, h, n in zip(centre, half, shape, strict=True)
    )


def _ball_in_box(box, affine, centre_mm, radius_mm) -> torch.Tensor:
    """Soft ball membership (one-voxel ramp) on the voxels of `box` (axis-aligned affine)."""
    axes = [
        torch.tensor(affine[a, a] * np.arange(s.start, s.stop) + affine[a, 3] - c, dtype=torch.float32)
        for a, (s, c) in enumerate(zip(box, centre_mm, strict=True))
    ]
    dist = (axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2).sqrt_()
    return (radius_mm - dist + 0.5).clamp_(0.0, 1.0)


def _add_eyes(maps_vol, affine, values, rng) -> None:
    """Eyes (vitreous) with orbital fat behind them, written over the head tissues of (5, X, Y, Z) maps."""
    (ex, ey, ez), radii = EYES
    for sx in (ex, -ex):
        radius = rng.uniform(*radii)
        for tissue, centre, r in (("fat", (sx, ey - 8, ez), radius + 5), ("vitreous", (sx, ey, ez), radius)):
            box = _box(maps_vol.shape[1:], affine, centre, r + 2)
            weight = _ball_in_box(box, affine, centre, r)
            region = maps_vol[(slice(None), *box)]
            region += weight * (_column(values, tissue)[:, :, None, None] - region)


def _add_lesion(maps_vol, parenchyma, values, rng, generator) -> torch.Tensor:
    """Blend a stroke-like blob (irregular outline, in GM/WM) into (5, X, Y, Z) maps; return its weight."""
    shape = parenchyma.shape
    candidates = torch.nonzero(parenchyma[::3, ::3, ::3] > 0.9) * 3
    centre = candidates[int(rng.integers(len(candidates)))].tolist()
    radii = rng.uniform(5.0, 20.0, 3)
    half = int(np.ceil(radii.max() * 1.4)) + 2
    box = tuple(slice(max(0, c - half), min(n, c + half)) for c, n in zip(centre, shape, strict=True))
    local = [torch.arange(s.start, s.stop, dtype=torch.float32) - c for s, c in zip(box, centre, strict=True)]
    level = (
        (local[0][:, None, None] / radii[0]) ** 2
        + (local[1][None, :, None] / radii[1]) ** 2
        + (local[2][None, None, :] / radii[2]) ** 2
    ).sqrt_()
    level += 0.3 * _smooth_noise(level.shape, (4, 4, 4), generator)  # irregular outline
    weight = torch.zeros(shape)
    weight[box] = ((1.0 - level) * float(radii.mean()) + 0.5).clamp_(0.0, 1.0) * parenchyma[box]
    region = maps_vol[(slice(None), *box)]
    region += weight[box] * (_column(values, "lesion")[:, :, None, None] - region)
    return weight


def make_phantom(seed: int, *, deform: bool = True, lesion: bool = False, head: bool = True) -> Phantom:
    """A seeded head phantom (1 mm, ICBM152 grid): qMRI maps, tissue labels/probabilities, lesion mask."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(seed))
    template, affine = _template()
    channels = _deform(template, rng, generator) if deform else template.clone()
    shape = tuple(channels.shape[1:])
    values = _draw_values(rng)

    maps = _column(values, "air").expand(len(PARAMS), channels[0].numel()).contiguous()  # (5, N)
    if head:
        _fill_head(maps, channels, values, rng, generator)
        _add_eyes(maps.view(-1, *shape), affine, values, rng)
    csf, gm, wm, deep = channels.view(channels.shape[0], -1)[:4]
    brain = csf + gm + wm
    inside = torch.nonzero(brain > 0).squeeze(1)
    probs = torch.stack([csf[inside], gm[inside], wm[inside]])
    deep_gm = probs[1] * deep[inside]
    maps[:, inside] = (
        _column(values, "csf") * probs[0]
        + _column(values, "gm") * (probs[1] - deep_gm)
        + _column(values, "deep_gm") * deep_gm
        + _column(values, "wm") * probs[2]
        + (1.0 - brain[inside]).clamp_(0.0, 1.0) * maps[:, inside]
    )
    texture = _smooth_noise(shape, (24, 28, 24), generator, channels=len(PARAMS)).view(len(PARAMS), -1)
    maps.mul_(texture.mul_(torch.tensor([TEXTURE[p] for p in PARAMS])[:, None]).add_(1.0))
    maps_vol = maps.view(-1, *shape)
    lesion_w = _add_lesion(maps_vol, (gm + wm).view(shape), values, rng, generator) if lesion else None
    maps.clamp_(min=0.0)

    labels = torch.zeros(brain.numel(), dtype=torch.uint8)
    # argmax over (CSF, GM, WM) + 1 where the voxel is mostly brain (ties go to the later class)
    gm_or_wm = torch.where(probs[2] >= probs[1], 3, 2).to(torch.uint8)
    best = torch.where(probs[0] > torch.maximum(probs[1], probs[2]), 1, gm_or_wm).to(torch.uint8)
    labels[inside] = best * (brain[inside] >= 0.5)
    return Phantom(
        maps=QMRIMaps(**{p: maps_vol[i] for i, p in enumerate(PARAMS)}, affine=affine),
        labels=labels.view(shape).numpy(),
        tissue_probs=channels[:3].numpy(),
        lesion=None if lesion_w is None else (lesion_w > 0.5).to(torch.uint8).numpy(),
        affine=affine.copy(),
        seed=int(seed),
        values=values,
    )
