"""Signal equations against closed-form facts and a hand-written step-by-step Bloch reference."""

import math

import numpy as np
import pytest
import torch

from seqinv.errors import InputError, ParameterError
from seqinv.physics import (
    FLAIR,
    FSE,
    GRE,
    MP2RAGE,
    MPRAGE,
    SEQUENCES,
    SPGR,
    QMRIMaps,
    make_sequence,
    rician,
    sequence_from_dict,
    simulate,
)
from seqinv.physics import signal as sig


def uniform_maps(shape=(4, 4, 4), pd=80.0, r1=1.0, r2s=20.0, mt=1.5, r2=None, dtype=torch.float64):
    def full(v):
        return torch.full(shape, float(v), dtype=dtype)

    return QMRIMaps(full(pd), full(r1), full(r2s), full(mt), None if r2 is None else full(r2))


def value(maps, seq):
    return float(simulate(maps, seq).flatten()[0])


# --- hand-written reference: relax / pulse event by event, many periods to reach the steady state ----
def _relax(mz, r1, t):
    return 1.0 - (1.0 - mz) * math.exp(-r1 * t)


def _train(mz, r1, flip_deg, n, esp, read_index):
    read = None
    for k in range(n):
        if k == read_index:
            read = mz * math.sin(math.radians(flip_deg))
        mz = _relax(mz * math.cos(math.radians(flip_deg)), r1, esp)
    return mz, read


def reference_mprage(r1, s: MPRAGE, periods=40):
    mz = 1.0
    for _ in range(periods):
        mz = _relax(-s.inv_eff * mz, r1, s.ti_s - s.n_exc * s.esp_s / 2)
        mz, read = _train(mz, r1, s.flip_deg, s.n_exc, s.esp_s, s.n_exc // 2 - 1)
        mz = _relax(mz, r1, s.tr_s - s.ti_s - s.n_exc * s.esp_s / 2)
    return read


def reference_mp2rage(r1, s: MP2RAGE, periods=40):
    mz = 1.0
    for _ in range(periods):
        mz = _relax(-s.inv_eff * mz, r1, s.ti1_s - s.n_exc * s.esp_s / 2)
        mz, read1 = _train(mz, r1, s.flip1_deg, s.n_exc, s.esp_s, s.n_exc // 2 - 1)
        mz = _relax(mz, r1, s.ti2_s - s.ti1_s - s.n_exc * s.esp_s)
        mz, read2 = _train(mz, r1, s.flip2_deg, s.n_exc, s.esp_s, s.n_exc // 2 - 1)
        mz = _relax(mz, r1, s.tr_s - s.ti2_s - s.n_exc * s.esp_s / 2)
    return read1, read2


# --- closed-form limits ------------------------------------------------------------------------------
def test_fse_long_tr_short_te_gives_pd():
    maps = uniform_maps(pd=73.0, r1=0.3, r2=1.0)
    assert value(maps, FSE(tr_s=100.0, te_s=1e-6)) == pytest.approx(73.0, rel=1e-5)


def test_fse_te_decay_is_exp_minus_r2_te():
    maps = uniform_maps(pd=50.0, r1=1.0, r2=12.0)
    ratio = value(maps, FSE(tr_s=100.0, te_s=0.1)) / value(maps, FSE(tr_s=100.0, te_s=1e-6))
    assert ratio == pytest.approx(math.exp(-12.0 * (0.1 - 1e-6)), rel=1e-9)


def test_gre_long_tr_gives_pd_sin_alpha_times_mt_loss():
    maps = uniform_maps(pd=80.0, r1=1.0, r2s=20.0, mt=2.0)
    expected = 80.0 * math.sin(math.radians(30.0)) * (1 - 0.02)
    assert value(maps, GRE(tr_s=100.0, te_s=1e-9, flip_deg=30.0)) == pytest.approx(expected, rel=1e-5)


def test_flair_long_tr_long_ti_gives_pd():
    maps = uniform_maps(pd=90.0, r1=0.5, r2=5.0)
    assert value(maps, FLAIR(tr_s=99.0, te_s=1e-6, ti_s=60.0)) == pytest.approx(90.0, rel=1e-5)


def test_flair_nulls_tissue_at_ti_ln2_over_r1():
    r1 = 0.25
    maps = uniform_maps(pd=100.0, r1=r1, r2=1.0)
    at_null = value(maps, FLAIR(tr_s=90.0, te_s=0.1, ti_s=math.log(2) / r1))
    away = value(maps, FLAIR(tr_s=90.0, te_s=0.1, ti_s=1.5 * math.log(2) / r1))
    assert at_null < 1e-6 * 100.0
    assert away > 10.0


def test_ernst_angle_maximises_gre():
    r1, tr = 1.0, 0.05
    maps = uniform_maps(r1=r1, mt=0.0)
    flips = np.arange(1.0, 60.0, 0.1)
    signals = [value(maps, GRE(tr_s=tr, te_s=5e-3, flip_deg=f)) for f in flips]
    ernst = math.degrees(math.acos(math.exp(-r1 * tr)))
    assert flips[int(np.argmax(signals))] == pytest.approx(ernst, abs=0.1)


def test_mt_lowers_gre_signal():
    for seq in (GRE(tr_s=0.03, te_s=5e-3, flip_deg=20.0), SPGR(tr_s=0.02, te_s=4e-3, flip_deg=25.0)):
        no_mt, with_mt = (value(uniform_maps(mt=m), seq) for m in (0.0, 2.0))
        assert with_mt < no_mt


@pytest.mark.parametrize("r1", [0.25, 0.6, 1.1, 3.0])
def test_mprage_matches_step_by_step_reference(r1):
    seq = MPRAGE(tr_s=2.3, ti_s=0.9, te_s=3e-3, flip_deg=9.0, n_exc=176, esp_s=7e-3, inv_eff=0.9)
    maps = uniform_maps(pd=1.0, r1=r1, r2s=0.0)
    assert value(maps, seq) == pytest.approx(abs(reference_mprage(r1, seq)), rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("r1", [0.25, 0.6, 1.1, 3.0])
def test_mp2rage_matches_step_by_step_reference(r1):
    seq = make_sequence("mp2rage", inv_eff=0.93)
    read1, read2 = reference_mp2rage(r1, seq)
    maps = uniform_maps(pd=70.0, r1=r1, r2s=20.0)
    assert value(maps, seq) == pytest.approx(read1 * read2 / (read1**2 + read2**2), rel=1e-7)


def test_mp2rage_uni_is_bounded_and_zero_in_air():
    maps = QMRIMaps(
        pd=torch.tensor([0.0, 50.0, 80.0, 100.0]),
        r1=torch.tensor([1.0, 0.3, 0.8, 2.5]),
        r2s=torch.full((4,), 10.0),
        mt=torch.zeros(4),
    )
    uni = simulate(maps, make_sequence("mp2rage"))
    assert uni[0] == 0
    assert bool((uni.abs() <= 0.5).all())


def test_lookup_table_path_matches_exact_formula():
    g = torch.Generator().manual_seed(1)
    r1 = 0.2 + 3.0 * torch.rand(40, 40, 40, generator=g)
    for name in ("mprage", "mp2rage"):
        seq = make_sequence(name)
        fn = sig.mprage_longitudinal if name == "mprage" else sig.mp2rage_uni
        fast = sig._of_r1(fn, r1, seq)
        exact = fn(r1.double(), seq)
        assert float((fast.double() - exact).abs().max()) < 1e-5 * float(exact.abs().max())


# --- tissue behaviour on typical values (docs/physics.md) -------------------------------------------
TISSUE = {
    "wm": (69.0, 1.05, 21.0, 1.7, 13.0),
    "gm": (81.0, 0.62, 16.0, 0.85, 11.0),
    "csf": (97.0, 0.25, 3.0, 0.1, 0.8),
}


def tissue_signal(seq):
    pd, r1, r2s, mt, r2 = (torch.tensor([TISSUE[t][i] for t in ("wm", "gm", "csf")]) for i in range(5))
    return simulate(QMRIMaps(pd, r1, r2s, mt, r2), seq)


def test_t1w_and_t2w_orderings_on_typical_values():
    wm, gm, csf = tissue_signal(make_sequence("mprage"))
    assert wm > gm > csf
    wm, gm, csf = tissue_signal(FSE(tr_s=5.0, te_s=0.1))
    assert csf > gm > wm
    wm, gm, csf = tissue_signal(make_sequence("flair"))
    assert csf < 0.3 * min(wm, gm)


# --- dtypes, batching, gradients, receive -------------------------------------------------------------
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_gradients_flow_to_every_used_map(name):
    maps = uniform_maps(shape=(2, 3, 3, 3), dtype=torch.float32, r2=12.0)
    for t in (maps.pd, maps.r1, maps.r2s, maps.mt, maps.r2):
        t.requires_grad_(True)
    simulate(maps, make_sequence(name)).sum().backward()
    assert maps.r1.grad is not None and torch.isfinite(maps.r1.grad).all() and maps.r1.grad.abs().sum() > 0
    if name != "mp2rage":  # UNI does not depend on PD
        assert maps.pd.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_bf16_close_to_float32_and_keeps_dtype(name):
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 24, 24, 24)
    maps = QMRIMaps(
        pd=60 + 30 * torch.rand(shape, generator=g),
        r1=0.3 + torch.rand(shape, generator=g),
        r2s=5 + 20 * torch.rand(shape, generator=g),
        mt=2 * torch.rand(shape, generator=g),
    )
    seq = make_sequence(name)
    full = simulate(maps, seq)
    half = simulate(maps.to(dtype=torch.bfloat16), seq)
    assert half.dtype == torch.bfloat16 and half.shape == shape
    scale = float(full.abs().max())
    assert float((half.float() - full).abs().max()) < 0.02 * scale


def test_receive_gain_multiplies_signal():
    maps = uniform_maps(dtype=torch.float32)
    seq = make_sequence("fse")
    field = torch.linspace(0.5, 2.0, 4).reshape(4, 1, 1)
    assert torch.allclose(simulate(maps, seq, receive=field), simulate(maps, seq) * field)
    assert torch.allclose(simulate(maps, seq, receive=3.0), 3 * simulate(maps, seq))


def test_r2_derived_from_r2s_when_missing():
    maps = uniform_maps(r2s=20.0)
    assert float(maps.r2_or_derived()[0, 0, 0]) == pytest.approx(20.0 * 0.65)
    assert value(maps, FSE(5.0, 0.1)) < value(uniform_maps(r2s=20.0, r2=5.0), FSE(5.0, 0.1))


# --- noise ---------------------------------------------------------------------------------------------
def test_rician_pure_noise_mean_is_sigma_sqrt_pi_over_2():
    g = torch.Generator().manual_seed(3)
    noisy = rician(torch.zeros(200_000), 2.0, generator=g)
    assert float(noisy.mean()) == pytest.approx(2.0 * math.sqrt(math.pi / 2), rel=0.01)
    assert bool((noisy >= 0).all())


def test_rician_high_snr_mean_and_spread():
    g = torch.Generator().manual_seed(4)
    noisy = rician(torch.full((200_000,), 100.0), 1.0, generator=g)
    assert float(noisy.mean()) == pytest.approx(100.0 + 1.0 / 200.0, abs=0.02)  # bias σ²/(2S)
    assert float(noisy.std()) == pytest.approx(1.0, rel=0.02)


def test_rician_seeded_reproducible():
    a = rician(torch.ones(100), 0.5, generator=torch.Generator().manual_seed(7))
    b = rician(torch.ones(100), 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


# --- sequences and maps: validation, records --------------------------------------------------------------
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_to_dict_round_trip(name):
    seq = make_sequence(name)
    record = seq.to_dict()
    assert record["sequence"] == name
    assert sequence_from_dict(record) == seq


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: FLAIR(tr_s=2.0, te_s=0.1, ti_s=2.5), "ti_s=2.5 s must be shorter than tr_s=2 s"),
        (lambda: FSE(tr_s=5000.0, te_s=0.1), "tr_s=5000.0 is outside the valid range (0, 100] s"),
        (lambda: GRE(tr_s=0.01, te_s=0.02, flip_deg=10), "te_s=0.02 s must be shorter than tr_s=0.01 s"),
        (lambda: GRE(tr_s=0.01, te_s=0.002, flip_deg=-5), "flip_deg=-5 is outside the valid range"),
        (lambda: make_sequence("mprage", ti_s=0.5), "ti_s − n_exc·esp_s/2"),
        (lambda: make_sequence("mprage", n_exc=176.5), "n_exc=176.5 must be an integer"),
        (lambda: make_sequence("dwi"), "unknown sequence 'dwi'; choose one of: mprage"),
        (lambda: make_sequence("fse", flip_deg=10), "sequence 'fse' has no parameter 'flip_deg'"),
        (lambda: sequence_from_dict({"sequence": "gre", "tr_s": 1.0}), "bad parameters for sequence 'gre'"),
    ],
)
def test_invalid_sequences_raise_clear_errors(build, needle):
    with pytest.raises(ParameterError) as info:
        build()
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_crop_moves_affine_origin():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    maps = QMRIMaps(*(torch.zeros(1, 8, 8, 8) for _ in range(4)), affine=affine)
    cropped = maps.crop((slice(2, 6), slice(1, None), slice(None, 4)))
    assert cropped.shape == (1, 4, 7, 4)
    np.testing.assert_allclose(cropped.affine[:3, 3], [-6, -18, -30])


def test_validate_rejects_nan_negative_and_shape_mismatch():
    good = [torch.ones(3, 3, 3) for _ in range(4)]
    QMRIMaps(*good).validate()
    with pytest.raises(InputError, match="map R1 has 1 NaN/Inf voxels"):
        bad = torch.ones(3, 3, 3)
        bad[0, 0, 0] = float("nan")
        QMRIMaps(good[0], bad, good[2], good[3]).validate()
    with pytest.raises(InputError, match="map MT has 27 negative voxels"):
        QMRIMaps(good[0], good[1], good[2], -good[3]).validate()
    with pytest.raises(InputError, match="map R2S has shape"):
        QMRIMaps(good[0], good[1], torch.ones(3, 3, 4), good[3]).validate()


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_slab_path_for_large_volumes_matches_exact_path(name):
    g = torch.Generator().manual_seed(2)
    shape = (70, 70, 70)  # above the slab size, so simulate works slab by slab
    maps = QMRIMaps(
        pd=60 + 30 * torch.rand(shape, generator=g),
        r1=0.2 + 2 * torch.rand(shape, generator=g),
        r2s=2 + 30 * torch.rand(shape, generator=g),
        mt=2 * torch.rand(shape, generator=g),
    )
    assert maps.pd.numel() > sig._CHUNK
    seq = make_sequence(name)
    fast = simulate(maps, seq, receive=2.0)
    maps.r1.requires_grad_(True)  # the exact, whole-volume path
    exact = simulate(maps, seq, receive=2.0).detach()
    assert torch.allclose(fast, exact, rtol=1e-5, atol=1e-5 * float(exact.abs().max()))
