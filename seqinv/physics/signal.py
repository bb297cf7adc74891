"""Closed-form steady-state signal equations (docs/physics.md, "Equations"), pure torch and differentiable.

Inputs are `QMRIMaps` in hMRI units (PD, MT in p.u.; rates in 1/s) and a sequence dataclass (seconds,
degrees). Half-precision maps are computed in float32 (the MP-RAGE terms 1 − cos α·e^(−R1·esp) lose all
digits in bf16) and the result is cast back. Every function is elementwise, so any leading batch shape works.
"""

from __future__ import annotations

import math

import torch

from seqinv.errors import ParameterError
from seqinv.physics.maps import QMRIMaps
from seqinv.physics.sequences import FLAIR, FSE, GRE, MP2RAGE, MPRAGE

_HALF = (torch.float16, torch.bfloat16)
_LUT_SIZE = 8192
_CHUNK = 1 << 18  # voxels per slab for large no-grad volumes (cache-sized temporaries)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _recovery(r1: torch.Tensor, t_s: float) -> torch.Tensor:
    """1 − e^(−R1·t), accurate for short t."""
    return -torch.expm1(r1 * -t_s)


def fse_signal(pd, r1, r2, seq: FSE) -> torch.Tensor:
    return pd * _recovery(r1, seq.tr_s) * torch.exp(r2 * -seq.te_s)


def gre_signal(pd, r1, r2s, mt_pu, seq: GRE) -> torch.Tensor:
    """FLASH/Ernst steady state with the MT saturation acting as an extra flip loss (1 − MT)."""
    alpha = math.radians(seq.flip_deg)
    recovery = _recovery(r1, seq.tr_s)  # 1 − E1
    keep = 1.0 - mt_pu * 0.01  # MT p.u. → fraction of longitudinal magnetisation kept
    numerator = pd * keep * recovery * math.sin(alpha)
    denominator = 1.0 - math.cos(alpha) * keep * (1.0 - recovery)
    return numerator / denominator * torch.exp(r2s * -seq.te_s)


def flair_signal(pd, r1, r2, seq: FLAIR) -> torch.Tensor:
    inversion = 1.0 - 2.0 * torch.exp(r1 * -seq.ti_s) + torch.exp(r1 * -seq.tr_s)
    return pd * torch.exp(r2 * -seq.te_s) * inversion.abs()


def _train(mz_start, r1, cos_a: float, n: float, esp_s: float, ex_rec, one_minus_cex):
    """Mz after `n` blocks of (pulse with cos α, recovery for esp), starting from `mz_start`."""
    cex_n = torch.exp(r1 * (-n * esp_s)) * cos_a**n  # (cos α·Ex)^n
    return mz_start * cex_n + ex_rec * (1.0 - cex_n) / one_minus_cex


def mprage_longitudinal(r1, seq: MPRAGE) -> torch.Tensor:
    """Signed Mz·sin α (per unit PD, no T2*) at pulse n/2 of the train: one-readout MP-RAGE (Marques 2010)."""
    alpha = math.radians(seq.flip_deg)
    c, n, tx, eff = math.cos(alpha), float(seq.n_exc), seq.esp_s, seq.inv_eff
    tp = seq.ti_s - n * tx / 2
    td = seq.tr_s - seq.ti_s - n * tx / 2
    ex_rec = _recovery(r1, tx)  # 1 − Ex
    one_minus_cex = (1.0 - c) + c * ex_rec  # 1 − c·Ex, without cancellation
    ep_rec, ed_rec = _recovery(r1, tp), _recovery(r1, td)
    # steady state just before an inversion: Mz = A − eff·c^n·E1·Mz
    after_train = _train(ep_rec, r1, c, n, tx, ex_rec, one_minus_cex)
    mss = (after_train * (1.0 - ed_rec) + ed_rec) / (1.0 + eff * c**n * torch.exp(r1 * -seq.tr_s))
    mz = ep_rec - eff * mss * (1.0 - ep_rec)  # after inversion and recovery for tp
    return _train(mz, r1, c, n / 2 - 1, tx, ex_rec, one_minus_cex) * math.sin(alpha)


def mprage_signal(pd, r1, r2s, seq: MPRAGE) -> torch.Tensor:
    return pd * _of_r1(mprage_longitudinal, r1, seq).abs() * torch.exp(r2s * -seq.te_s)


def mp2rage_gre_signals(r1, seq: MP2RAGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed Mz·sin α (per unit PD, no T2*) of the two MP2RAGE readouts, pulse n/2 of each train."""
    a1, a2 = math.radians(seq.flip1_deg), math.radians(seq.flip2_deg)
    c1, c2, n, tx, eff = math.cos(a1), math.cos(a2), float(seq.n_exc), seq.esp_s, seq.inv_eff
    ta = seq.ti1_s - n * tx / 2
    tb = seq.ti2_s - seq.ti1_s - n * tx
    tc = seq.tr_s - seq.ti2_s - n * tx / 2
    ex_rec = _recovery(r1, tx)
    omc1, omc2 = (1.0 - c1) + c1 * ex_rec, (1.0 - c2) + c2 * ex_rec
    ea_rec, eb_rec, ec_rec = _recovery(r1, ta), _recovery(r1, tb), _recovery(r1, tc)
    # steady state just before an inversion (forward through TA, train 1, TB, train 2, TC)
    mz = _train(ea_rec, r1, c1, n, tx, ex_rec, omc1)
    mz = mz * (1.0 - eb_rec) + eb_rec
    mz = _train(mz, r1, c2, n, tx, ex_rec, omc2)
    mz = mz * (1.0 - ec_rec) + ec_rec
    mss = mz / (1.0 + eff * (c1 * c2) ** n * torch.exp(r1 * -seq.tr_s))
    start1 = ea_rec - eff * mss * (1.0 - ea_rec)
    gre1 = _train(start1, r1, c1, n / 2 - 1, tx, ex_rec, omc1) * math.sin(a1)
    end1 = _train(start1, r1, c1, n, tx, ex_rec, omc1)
    start2 = end1 * (1.0 - eb_rec) + eb_rec
    gre2 = _train(start2, r1, c2, n / 2 - 1, tx, ex_rec, omc2) * math.sin(a2)
    return gre1, gre2


def mp2rage_uni(r1, seq: MP2RAGE) -> torch.Tensor:
    gre1, gre2 = mp2rage_gre_signals(r1, seq)
    return gre1 * gre2 / (gre1 * gre1 + gre2 * gre2).clamp_min(1e-20)  # both 0 only at R1 = 0


def mp2rage_signal(pd, r1, seq: MP2RAGE) -> torch.Tensor:
    """UNI = S1·S2 / (S1² + S2²) in [−0.5, 0.5]. PD, receive gain and T2* cancel, so UNI depends on R1
    alone; it is set to 0 where PD = 0 (air), where the ratio is undefined."""
    return _of_r1(mp2rage_uni, r1, seq) * (pd > 0).to(r1.dtype)


def _of_r1(fn, r1: torch.Tensor, seq) -> torch.Tensor:
    """fn(r1, seq) for a function of R1 alone: exact when R1 needs gradients, else a lookup table.

    The MP-RAGE/MP2RAGE terms cost ~7 exponentials per voxel; a float64 table of `_LUT_SIZE` points over
    [0, max R1] with linear interpolation is ~5× faster on CPU and agrees to < 1e-5 of the signal range.
    """
    if (torch.is_grad_enabled() and r1.requires_grad) or r1.numel() < 4 * _LUT_SIZE:
        return fn(r1, seq)
    r1_max = float(r1.max())
    if not math.isfinite(r1_max) or r1_max <= 0:
        return fn(r1, seq)
    grid = torch.linspace(0.0, r1_max, _LUT_SIZE, dtype=torch.float64)
    table = fn(grid, seq)
    slope = (table[1:] - table[:-1]).to(device=r1.device, dtype=r1.dtype)
    table = table[:-1].to(device=r1.device, dtype=r1.dtype)
    position = r1 * ((_LUT_SIZE - 1) / r1_max)
    index = position.long().clamp_(0, _LUT_SIZE - 2)
    frac = position.sub_(index)
    return frac.mul_(slope.take(index)).add_(table.take(index))


def simulate(maps: QMRIMaps, sequence, receive=None) -> torch.Tensor:
    """Magnitude image (MP2RAGE: the UNI ratio) of `maps` under `sequence`, same shape and dtype as the maps.

    `receive` is a multiplicative gain (number or tensor broadcastable to the maps), 1 when None.
    """
    if not isinstance(sequence, (FSE, GRE, FLAIR, MPRAGE, MP2RAGE)):
        raise ParameterError(
            f"cannot simulate {type(sequence).__name__}; use a seqinv.physics sequence (FSE, GRE, SPGR, "
            "FLAIR, MPRAGE, MP2RAGE)"
        )
    tensors = [maps.pd, maps.r1, maps.r2s, maps.mt, maps.r2_or_derived()]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    small = maps.pd.numel() <= _CHUNK or maps.pd.device.type != "cpu"
    if needs_grad or small or not all(t.is_contiguous() for t in tensors):
        image = _simulate(*tensors, sequence)
    else:  # large volumes: slabs that stay in cache (about 2× faster on CPU than whole-volume temporaries)
        image = torch.empty_like(maps.pd)
        flat = [t.view(-1) for t in tensors]
        for start in range(0, image.numel(), _CHUNK):
            part = [t[start : start + _CHUNK] for t in flat]
            image.view(-1)[start : start + _CHUNK] = _simulate(*part, sequence)
    if receive is not None and not isinstance(sequence, MP2RAGE):  # the receive gain cancels in UNI
        image = image * (receive.to(image.dtype) if isinstance(receive, torch.Tensor) else receive)
    return image


def _simulate(pd, r1, r2s, mt, r2, sequence) -> torch.Tensor:
    out_dtype = pd.dtype
    work = _compute_dtype(out_dtype)
    pd, r1, r2s, mt, r2 = (t if t.dtype == work else t.to(work) for t in (pd, r1, r2s, mt, r2))
    if isinstance(sequence, MPRAGE):
        image = mprage_signal(pd, r1, r2s, sequence)
    elif isinstance(sequence, GRE):  # GRE and SPGR
        image = gre_signal(pd, r1, r2s, mt, sequence)
    elif isinstance(sequence, FSE):
        image = fse_signal(pd, r1, r2, sequence)
    elif isinstance(sequence, FLAIR):
        image = flair_signal(pd, r1, r2, sequence)
    else:
        image = mp2rage_signal(pd, r1, sequence)
    return image.to(out_dtype)


def rician(image: torch.Tensor, sigma, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rician magnitude noise: sqrt((S + σ·n_r)² + (σ·n_i)²), n ~ N(0, 1); `sigma` a number or tensor."""
    noise = torch.randn(
        (2, *image.shape), generator=generator, device=image.device, dtype=_compute_dtype(image.dtype)
    )
    real = image.to(noise.dtype) + sigma * noise[0]
    return torch.hypot(real, sigma * noise[1]).to(image.dtype)
