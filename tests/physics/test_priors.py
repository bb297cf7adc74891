"""Training priors: every draw physically valid, replayable, within the documented table."""

import collections
import math

import pytest
import torch

from seqinv.errors import ParameterError
from seqinv.physics import QMRIMaps, sequence_from_dict, simulate
from seqinv.physics.priors import PRIORS, IntUniform, LogUniform, Uniform, draw_sequence, random_receive_field


def test_ten_thousand_draws_are_valid_in_range_and_cover_every_kind():
    g = torch.Generator().manual_seed(0)
    counts = collections.Counter()
    for _ in range(10_000):
        seq = draw_sequence(g)
        record = seq.to_dict()
        counts[record["sequence"]] += 1
        for key, dist in PRIORS[seq.name].items():
            v = record[key]
            assert math.isfinite(v) and v > 0
            if isinstance(dist, (Uniform, LogUniform, IntUniform)):
                assert dist.low <= v <= dist.high, (key, v)
        assert record["te_s"] < record["tr_s"]
        for ti in ("ti_s", "ti1_s", "ti2_s"):
            assert record.get(ti, 0) < record["tr_s"]
        if seq.name in ("mprage", "mp2rage"):
            assert record["esp_s"] == pytest.approx(2 * record["te_s"])
        assert sequence_from_dict(record) == seq  # the log record replays exactly
    assert set(counts) == set(PRIORS)
    assert min(counts.values()) > 10_000 / len(PRIORS) * 0.85  # each kind about equally likely


def test_drawn_sequences_simulate_to_finite_nonnegative_images():
    g = torch.Generator().manual_seed(1)
    maps = QMRIMaps(
        pd=torch.tensor([0.0, 69.0, 81.0, 97.0]),
        r1=torch.tensor([1.0, 1.05, 0.62, 0.25]),
        r2s=torch.tensor([10.0, 21.0, 16.0, 3.0]),
        mt=torch.tensor([0.0, 1.7, 0.85, 0.1]),
    )
    for _ in range(300):
        seq = draw_sequence(g)
        image = simulate(maps, seq)
        assert torch.isfinite(image).all()
        if seq.name != "mp2rage":  # UNI is signed
            assert (image >= 0).all()


def test_flair_draws_are_clinical():
    g = torch.Generator().manual_seed(2)
    for _ in range(500):
        s = draw_sequence(g, kinds=["flair"])
        assert 6 <= s.tr_s <= 11 and 1.8 <= s.ti_s <= 2.8 and 0.08 <= s.te_s <= 0.14


def test_fse_draws_cover_proton_density_echo_times():
    g = torch.Generator().manual_seed(3)
    te_ms = [1000 * draw_sequence(g, kinds=["fse"]).te_s for _ in range(2000)]
    assert 8 <= min(te_ms) < 10 and 130 < max(te_ms) <= 150
    # log-uniform on [8, 150] ms: P(TE < 20 ms) = ln(2.5) / ln(18.75) = 0.312
    assert abs(sum(t < 20 for t in te_ms) / len(te_ms) - 0.312) < 0.04


def test_listing_a_kind_twice_doubles_its_share():
    g = torch.Generator().manual_seed(4)
    names = [draw_sequence(g, kinds=("fse", "fse", "gre")).name for _ in range(3000)]
    assert abs(names.count("fse") / len(names) - 2 / 3) < 0.03


def test_same_seed_same_draws_and_kinds_filter():
    a = [draw_sequence(torch.Generator().manual_seed(5), kinds=("fse", "gre")) for _ in range(3)]
    b = [draw_sequence(torch.Generator().manual_seed(5), kinds=("fse", "gre")) for _ in range(3)]
    assert a == b and all(s.name in ("fse", "gre") for s in a)
    assert draw_sequence(torch.Generator().manual_seed(5), kinds="spgr").name == "spgr"


def test_unknown_kind_raises():
    with pytest.raises(ParameterError, match="unknown sequence kind"):
        draw_sequence(torch.Generator(), kinds=["dwi"])


def test_receive_field_smooth_positive_and_seeded():
    field = random_receive_field((2, 16, 20, 24), torch.Generator().manual_seed(0), strength=0.3)
    assert field.shape == (2, 16, 20, 24) and (field > 0).all()
    assert not torch.allclose(field[0], field[1])  # independent per volume
    # smooth: neighbouring voxels differ far less than the overall spread
    step = (field[:, 1:] - field[:, :-1]).abs().max()
    assert step < 0.25 * (field.max() - field.min())
    again = random_receive_field((2, 16, 20, 24), torch.Generator().manual_seed(0), strength=0.3)
    assert torch.equal(field, again)
    assert torch.allclose(
        random_receive_field((8, 8, 8), torch.Generator(), strength=0.0), torch.ones(8, 8, 8)
    )
