"""The default denoiser: residual network on the input's own grid, noise-level estimate, tiling."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from seqinv.errors import ParameterError, WeightsError
from seqinv.inference import InferenceSettings
from seqinv.inference import denoising as dn
from seqinv.inference.core import denoise_volume, load_task_model
from seqinv.io import Volume
from seqinv.models import ModelConfig, load_model
from seqinv.models.denoiser import ResidualDenoiser, denoiser_config, depth_to_space, space_to_depth


def _head(shape=(64, 72, 56)):
    """A smooth ellipsoidal 'head' (intensity ~100) in air (0), and its mask."""
    i, j, k = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = [(n - 1) / 2 for n in shape]
    r = ((i - c[0]) / (0.4 * shape[0])) ** 2 + ((j - c[1]) / (0.42 * shape[1])) ** 2
    r = r + ((k - c[2]) / (0.4 * shape[2])) ** 2
    head = r < 1
    inside = 100 + 30 * np.sin(i / 6) * np.cos(j / 5) + 20 * np.cos(k / 7)
    return np.where(head, inside, 0).astype(np.float32), head


def _rician(clean, sigma, rng):
    return np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)


@pytest.mark.parametrize("sigma", [3.0, 12.0])
def test_noise_estimate_within_15_percent_for_gaussian_rician_and_no_air(sigma):
    rng = np.random.default_rng(0)
    clean, head = _head()
    cases = {
        "gaussian": (clean + rng.normal(0, sigma, clean.shape), "background-gaussian"),
        "rician": (_rician(clean, sigma, rng), "background-rayleigh"),
        "skull-stripped": (np.where(head, clean + rng.normal(0, sigma, clean.shape), 0), "foreground-mad"),
        "no air": (clean[20:44, 20:52, 14:42] + rng.normal(0, sigma, (24, 32, 28)), "foreground-mad"),
    }
    for name, (noisy, method) in cases.items():
        estimate, found = dn.estimate_noise(noisy.astype(np.float32))
        assert found == method, name
        assert estimate == pytest.approx(sigma, rel=0.15), name


def test_noise_estimate_of_a_constant_volume_is_an_error():
    with pytest.raises(ParameterError, match="give --sigma"):
        dn.estimate_noise(np.zeros((20, 20, 20), np.float32))


def test_noise_estimate_of_a_noiseless_piecewise_constant_volume_asks_for_sigma():
    data = np.zeros((60, 60, 60), np.float32)
    data[10:50, 10:50, 10:50], data[20:40, 20:40, 20:40] = 100, 200  # no noise anywhere: MAD 0
    with pytest.raises(ParameterError, match="give --sigma"):
        dn.estimate_noise(data)


def test_space_to_depth_is_lossless_and_odd_sizes_keep_their_shape():
    x = torch.randn(2, 1, 6, 4, 8)
    assert space_to_depth(x).shape == (2, 8, 3, 2, 4)
    assert torch.equal(depth_to_space(space_to_depth(x)), x)
    net = ResidualDenoiser(denoiser_config((4, 4))).eval()
    assert net(torch.randn(1, 1, 7, 9, 5), 0.1).shape == (1, 1, 7, 9, 5)


def test_new_network_starts_as_the_identity_and_config_is_checked():
    net = ResidualDenoiser(denoiser_config((4, 4)))
    assert torch.count_nonzero(net(torch.randn(1, 1, 8, 8, 8), 0.1)) == 0  # zero tail: predicts no noise
    with pytest.raises(ParameterError, match="at least 2 positive hidden widths"):
        ModelConfig(arch="denoiser", features=(4,), task="denoise")
    with pytest.raises(ParameterError, match="task 'denoise'"):
        ModelConfig(arch="denoiser", features=(4, 4), task="segment")


def _tiny_denoiser() -> ResidualDenoiser:
    """A 3-layer denoiser whose output is not zero (its tail is not the identity's)."""
    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4, 4)))
    for p in net.tail.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def test_slabs_give_the_same_noise_as_one_pass(monkeypatch):
    net = _tiny_denoiser()
    data = np.random.default_rng(0).random((40, 12, 10)).astype(np.float32) + 0.5
    whole = dn.predict_noise(net, data, 0.1, torch.device("cpu"))
    monkeypatch.setattr(dn, "MAX_PASS_VOXELS", 12 * 10 * 30)  # 4 slabs of 8 planes with their halo
    assert len(dn.slabs(40, 8, net.halo)) == 5
    np.testing.assert_allclose(dn.predict_noise(net, data, 0.1, torch.device("cpu")), whole, atol=1e-5)


def test_flip_passes_average_the_flipped_estimates_also_in_slabs(monkeypatch):
    net = _tiny_denoiser()
    data = np.random.default_rng(0).random((41, 12, 10)).astype(np.float32) + 0.5  # odd: padded at the end
    one = dn.predict_noise(net, data, 0.1, torch.device("cpu"))
    # by hand: the same volume flipped along all three axes, its estimate flipped back
    flipped = dn.predict_noise(net, np.ascontiguousarray(data[::-1, ::-1, ::-1]), 0.1, torch.device("cpu"))
    two = dn.predict_noise(net, data, 0.1, torch.device("cpu"), passes=2)
    np.testing.assert_allclose(two, (one + flipped[::-1, ::-1, ::-1]) / 2, atol=1e-5)
    assert np.abs(two - one).max() > 1e-3  # the flipped pass differs: it is not a no-op
    monkeypatch.setattr(dn, "MAX_PASS_VOXELS", 12 * 10 * 30)  # slabs of 8 planes: the last one odd
    in_slabs = dn.predict_noise(net, data, 0.1, torch.device("cpu"), passes=2)
    np.testing.assert_allclose(in_slabs, two, atol=1e-5)


def test_saved_denoiser_round_trips(tmp_path):
    net = ResidualDenoiser(denoiser_config((4, 4), name="tiny-denoiser"))
    net.save_pretrained(tmp_path / "m")
    loaded, source = load_model(tmp_path / "m")
    assert isinstance(loaded, ResidualDenoiser) and source.kind == "local"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(WeightsError, match="residual denoiser"):
        from seqinv.models import SeqInvEncoder

        SeqInvEncoder.from_folder(tmp_path / "m")


def _oblique_affine():
    angle = 0.35
    affine = np.eye(4)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.4])
    affine[:3, 3] = [2.0, -1.0, 4.0]
    return affine


def test_published_denoiser_denoises_oblique_thick_slices_on_their_own_grid():
    model = load_task_model("denoise", prefer="bundled")[0]
    assert model.config.arch == "denoiser"
    rng = np.random.default_rng(1)
    clean, _ = _head((72, 64, 28))
    noisy = _rician(clean, 8.0, rng).astype(np.float32)
    volume = Volume(noisy, _oblique_affine())
    result = denoise_volume(volume, model, InferenceSettings(threads=1))
    assert result.record is None and result.image.shape == noisy.shape
    assert result.sigma == pytest.approx(8.0, rel=0.15) and result.sigma_method == "background-rayleigh"
    rmse_in = np.sqrt(np.mean((noisy - clean) ** 2))
    rmse_out = np.sqrt(np.mean((result.image - clean) ** 2))
    assert rmse_out < 0.75 * rmse_in  # denoised, not only passed through (measured 0.61)


def test_denoise_cli_sidecar_records_sigma_and_its_method(tmp_path, monkeypatch):
    from seqinv.inference import denoise_files

    rng = np.random.default_rng(2)
    clean, _ = _head((40, 44, 20))
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_rician(clean, 6.0, rng).astype(np.float32), _oblique_affine()), scan)
    denoise_files(scan, tmp_path / "out", settings=InferenceSettings(threads=1, tta=True))
    out = nib.load(tmp_path / "out" / "scan_desc-denoised.nii.gz")
    assert out.shape == clean.shape
    np.testing.assert_allclose(out.affine, _oblique_affine(), atol=1e-5)
    meta = json.loads((tmp_path / "out" / "scan_desc-denoised.json").read_text())
    assert meta["noise_sigma_source"] == "estimated" and meta["noise_sigma_method"] == "background-rayleigh"
    assert meta["noise_sigma"] == pytest.approx(6.0, rel=0.15)
    assert meta["preprocessing"] == {"resampled": False, "grid": "input"}
    assert meta["tta"] is True and meta["passes"] == 8  # --tta: all eight flips
    assert meta["overlap"] is None  # passes over the stored grid: no windows
    denoise_files(scan, tmp_path / "one", settings=InferenceSettings(threads=1), passes=1)
    meta = json.loads((tmp_path / "one" / "scan_desc-denoised.json").read_text())
    assert meta["tta"] is False and meta["passes"] == 1
    with pytest.raises(ParameterError, match="--passes 3 is not one of 1, 2, 4, 8"):
        denoise_files(scan, tmp_path / "bad", passes=3)
    assert not (tmp_path / "bad").exists()


def test_research_frozen_encoder_head_stays_loadable(published_hub):
    model, source = load_model("denoise@1.0")  # from the Hub: the wheel bundles the default only
    assert model.config.arch == "unet" and source.version == "1.0"
    assert source.kind == "hub" and source.location == "seqinv/seqinv-lite-denoise"


def test_an_offset_does_not_change_the_noise_estimate_of_a_z_scored_image():
    """Images with negative values (z-scored) have Gaussian noise: their air level is removed before the
    network, so adding a constant (that keeps some values negative) changes nothing; magnitude images
    (>= 0) are taken as they are."""
    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4)))
    for p in net.tail.parameters():
        torch.nn.init.normal_(p, std=0.1)
    net.eval()
    rng = np.random.default_rng(1)
    data = np.zeros((24, 20, 18), dtype=np.float32) - 1.5
    data[4:20, 4:16, 4:14] = 1.0
    data += 0.1 * rng.standard_normal(data.shape).astype(np.float32)
    cpu = torch.device("cpu")
    assert dn.signal_floor(data, 0.1) == pytest.approx(-1.5, abs=0.05)  # the air level
    np.testing.assert_allclose(
        dn.predict_noise(net, data - 2.3, 0.1, cpu), dn.predict_noise(net, data, 0.1, cpu), atol=1e-5
    )
    magnitude = np.abs(data + 1.5)
    assert dn.signal_floor(magnitude, 0.1) == 0.0
    shifted = dn.predict_noise(net, magnitude + 0.5, 0.1, cpu)
    assert np.abs(shifted - dn.predict_noise(net, magnitude, 0.1, cpu)).max() > 1e-3  # Rician: no shift
