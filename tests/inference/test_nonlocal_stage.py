"""The residual denoiser's second stage: non-local averaging guided by the network's estimate."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from seqinv.errors import ParameterError, WeightsError
from seqinv.inference import InferenceSettings
from seqinv.inference import nonlocal_stage as nl
from seqinv.inference.core import denoise_stage, denoise_volume
from seqinv.io import Volume
from seqinv.models import ModelConfig, load_model
from seqinv.models.denoiser import ResidualDenoiser, denoiser_config


def _brute_force(values, pilot, sigma, search, h, radii=None, patch=(1, 1, 1)):
    """Each voxel by its own loops over the search box and the patch (edge-padded arrays)."""
    radii = radii or (search,) * 3
    pad = [r + q for r, q in zip(radii, patch, strict=True)]
    v, p = (
        np.pad(values, [(a, a) for a in pad], mode="edge"),
        np.pad(pilot, [(a, a) for a in pad], mode="edge"),
    )
    q = np.array(patch)
    out = np.zeros(values.shape)
    for i, j, k in np.ndindex(values.shape):
        c = np.array([i, j, k]) + pad
        window = tuple(slice(a - b, a + b + 1) for a, b in zip(c, q, strict=True))
        num = den = 0.0
        for d in np.ndindex(*(2 * r + 1 for r in radii)):
            o = c + np.array(d) - np.array(radii)
            other = tuple(slice(a - b, a + b + 1) for a, b in zip(o, q, strict=True))
            w = math.exp(-float(np.mean((p[window] - p[other]) ** 2)) / (h * sigma) ** 2)
            num, den = num + w * v[tuple(o)], den + w
        out[i, j, k] = num / den
    return out


def test_guided_average_matches_a_voxel_by_voxel_reference_including_the_borders():
    rng = np.random.default_rng(0)
    pilot = rng.random((7, 6, 5)).astype(np.float32)
    values = (pilot + 0.3 * rng.standard_normal(pilot.shape)).astype(np.float32)
    for search, h in ((1, 0.8), (2, 1.5)):
        fast = nl.guided_average(values, pilot, 0.3, search, h)
        np.testing.assert_allclose(fast, _brute_force(values, pilot, 0.3, search, h), atol=1e-5)


def test_thick_slice_axes_are_left_out_of_the_search_and_the_patches():
    rng = np.random.default_rng(8)
    pilot = rng.random((6, 5, 4)).astype(np.float32)
    values = (pilot + 0.3 * rng.standard_normal(pilot.shape)).astype(np.float32)
    assert nl.axis_extents(2, (0.9, 0.9, 2.4)) == ((2, 2, 0), (1, 1, 0))
    assert nl.axis_extents(2, (2.0, 2.0, 2.0)) == ((2, 2, 2), (1, 1, 1))  # coarse but isotropic: 3D
    assert nl.axis_extents(2, (1.0, 5.0, 1.0)) == ((2, 0, 2), (1, 0, 1))
    thick = nl.guided_average(values, pilot, 0.3, 2, 0.8, spacing=(0.9, 0.9, 2.4))
    expected = _brute_force(values, pilot, 0.3, 2, 0.8, radii=(2, 2, 0), patch=(1, 1, 0))
    np.testing.assert_allclose(thick, expected, atol=1e-5)
    per_slice = [
        nl.guided_average(values[..., k : k + 1], pilot[..., k : k + 1], 0.3, 2, 0.8) for k in range(4)
    ]
    np.testing.assert_allclose(thick, np.concatenate(per_slice, axis=2), atol=1e-5)  # each slice on its own


def test_slabs_give_the_same_average_as_one_block(monkeypatch):
    rng = np.random.default_rng(1)
    pilot = rng.random((30, 9, 8)).astype(np.float32)
    values = pilot + 0.2 * rng.standard_normal(pilot.shape).astype(np.float32)
    whole = nl.guided_average(values, pilot, 0.2, 2, 0.8)
    monkeypatch.setattr(nl, "SLAB", 7)  # five slabs, the last one short
    np.testing.assert_allclose(nl.guided_average(values, pilot, 0.2, 2, 0.8), whole, atol=1e-6)


def test_pair_offsets_cover_the_search_cube_once_with_their_negatives():
    pairs = nl.pair_offsets((2, 2, 2))
    assert len(pairs) == 62 and len(nl.pair_offsets((2, 2, 0))) == 12
    both = set(pairs) | {tuple(-k for k in d) for d in pairs}
    assert len(both) == 124 and (0, 0, 0) not in both


def _piecewise(shape=(40, 36, 32)):
    clean = np.full(shape, 50.0, dtype=np.float32)
    clean[8:32, 6:30, 6:26] = 100.0
    clean[14:26, 12:24, 12:20] = 160.0
    return clean


def test_stage_removes_gaussian_noise_around_a_good_estimate():
    rng = np.random.default_rng(2)
    clean = _piecewise() - 80.0  # negative values: the Gaussian path
    noisy = (clean + rng.normal(0, 10.0, clean.shape)).astype(np.float32)
    estimate = (clean + rng.normal(0, 4.0, clean.shape)).astype(np.float32)  # an imperfect first estimate
    out = nl.apply_stage(noisy, estimate, 10.0, nl.NonlocalStage(weight=1.0))

    def rmse(x):
        return float(np.sqrt(np.mean((x - clean) ** 2)))

    assert rmse(out) < 0.5 * rmse(estimate)  # measured 1.0 vs 4.0
    blended = nl.apply_stage(noisy, estimate, 10.0, nl.NonlocalStage(weight=0.6))
    averaged = (blended - 0.4 * estimate) / 0.6
    np.testing.assert_allclose(averaged, out, atol=1e-3)  # the blend is weight * average + rest * estimate


def test_stage_takes_the_rician_bias_off_magnitude_images():
    rng = np.random.default_rng(3)
    clean = _piecewise() * 0.1  # 5, 10, 16 with sigma 4: low SNR, where the magnitude is biased upwards
    sigma = 4.0
    noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
    noisy = noisy.astype(np.float32)
    out = nl.apply_stage(noisy, clean, sigma, nl.NonlocalStage(weight=1.0))
    low = clean == 5.0
    assert float(noisy[low].mean()) > 6.5  # the bias to remove (Rician mean of 5 at sigma 4: 6.9)
    assert float(out[low].mean()) == pytest.approx(5.0, abs=0.5)


def test_stage_parameters_are_checked():
    with pytest.raises(ParameterError, match="weight must be in"):
        nl.NonlocalStage(weight=0.0)
    with pytest.raises(ParameterError, match="search must be an integer 1-4"):
        nl.NonlocalStage(search=5)
    with pytest.raises(ParameterError, match="unknown fields"):
        nl.NonlocalStage.from_config({"h": 0.8, "radius": 2})
    with pytest.raises(ParameterError, match="noise std must be > 0"):
        nl.apply_stage(np.ones((4, 4, 4)), np.ones((4, 4, 4)), 0.0, nl.NonlocalStage())


def _denoiser(stage=None) -> ResidualDenoiser:
    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4)))
    net.config.nonlocal_stage = stage
    for p in net.tail.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def test_config_records_the_stage_and_a_bad_one_fails_to_load(tmp_path):
    net = _denoiser({"search": 2, "h": 0.8, "weight": 0.6})
    net.save_pretrained(tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.nonlocal_stage == {"search": 2, "h": 0.8, "weight": 0.6}
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["nonlocal_stage"]["weight"] = 1.5
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="weight must be in"):
        load_model(tmp_path / "m")
    with pytest.raises(ParameterError, match="residual denoiser"):
        ModelConfig(task="segment", arch="unet", nonlocal_stage={"h": 0.8})


def test_which_stage_a_run_uses(published_hub):
    with_stage, without = _denoiser({"search": 1, "h": 1.0, "weight": 0.5}), _denoiser()
    assert denoise_stage(with_stage, None) == nl.NonlocalStage(1, 1.0, 0.5)  # the config's
    assert denoise_stage(with_stage, False) is None
    assert denoise_stage(without, None) is None
    assert denoise_stage(without, True) == nl.NonlocalStage()  # asked for: the default parameters
    research = load_model("denoise@1.0")[0]  # from the (loopback) Hub: not bundled
    assert denoise_stage(research, None) is None
    with pytest.raises(ParameterError, match="--nonlocal applies to the residual denoiser"):
        denoise_stage(research, True)


def test_denoise_volume_runs_the_configured_stage_and_records_it():
    rng = np.random.default_rng(4)
    clean = _piecewise((24, 22, 20))
    noisy = np.sqrt((clean + rng.normal(0, 8, clean.shape)) ** 2 + rng.normal(0, 8, clean.shape) ** 2)
    volume = Volume(noisy.astype(np.float32), np.diag([1.0, 1.0, 2.5, 1.0]))
    stage = {"search": 2, "h": 0.8, "weight": 0.6}
    settings = InferenceSettings(threads=1)
    net = _denoiser(stage)
    on = denoise_volume(volume, net, settings, sigma=8.0)
    off = denoise_volume(volume, net, settings, sigma=8.0, nonlocal_stage=False)
    assert on.nonlocal_stage == {**stage, "noise": "rician"} and off.nonlocal_stage is None
    assert "nonlocal" in on.info.timings_s and "nonlocal" not in off.info.timings_s
    # the 2.5 mm axis is a thick-slice axis: the stage searches in-plane only
    stage_ = nl.NonlocalStage(**stage)
    expected = np.maximum(nl.apply_stage(volume.data, off.image, 8.0, stage_, spacing=(1.0, 1.0, 2.5)), 0)
    assert np.abs(expected - np.maximum(nl.apply_stage(volume.data, off.image, 8.0, stage_), 0)).max() > 0.1
    np.testing.assert_allclose(on.image, expected, atol=1e-4)


def test_cli_no_nonlocal_and_the_sidecar(tmp_path):
    from seqinv.inference import denoise_files

    folder = tmp_path / "model"
    _denoiser({"search": 2, "h": 0.8, "weight": 0.6}).save_pretrained(folder)
    rng = np.random.default_rng(5)
    clean = _piecewise((24, 22, 20))
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image((clean + rng.normal(0, 6, clean.shape)).astype(np.float32), np.eye(4)), scan)
    settings = InferenceSettings(threads=1)
    denoise_files(scan, tmp_path / "on", str(folder), sigma=6.0, settings=settings)
    denoise_files(scan, tmp_path / "off", str(folder), sigma=6.0, settings=settings, nonlocal_stage=False)
    on = json.loads((tmp_path / "on" / "scan_desc-denoised.json").read_text())
    off = json.loads((tmp_path / "off" / "scan_desc-denoised.json").read_text())
    # sigma given, so no estimate says which noise: an image without negative values counts as Rician
    assert on["nonlocal_stage"] == {"search": 2, "h": 0.8, "weight": 0.6, "noise": "rician"}
    assert off["nonlocal_stage"] is None
    a = nib.load(tmp_path / "on" / "scan_desc-denoised.nii.gz").get_fdata()
    b = nib.load(tmp_path / "off" / "scan_desc-denoised.nii.gz").get_fdata()
    assert np.abs(a - b).max() > 0.1


def test_a_non_negative_image_with_gaussian_noise_keeps_its_level():
    """Where the noise estimate finds Gaussian noise in the air, a magnitude-looking image (>= 0) is not
    corrected for a Rician bias it does not have."""
    rng = np.random.default_rng(6)
    clean = _piecewise((36, 32, 28)) + 40.0  # air at 90: noise of std 5 never reaches 0
    noisy = (clean + rng.normal(0, 5.0, clean.shape)).astype(np.float32)
    assert noisy.min() > 0
    estimate = (clean + rng.normal(0, 2.0, clean.shape)).astype(np.float32)
    gaussian = nl.apply_stage(noisy, estimate, 5.0, nl.NonlocalStage(weight=1.0), rician=False)
    rician = nl.apply_stage(noisy, estimate, 5.0, nl.NonlocalStage(weight=1.0))  # the min >= 0 rule
    assert abs(float((gaussian - clean).mean())) < 0.1
    assert float((rician - clean).mean()) < -0.1  # sqrt(v^2 + s^2 - 2 s^2): biased low
    result = denoise_volume(Volume(noisy, np.eye(4)), _denoiser({"search": 2, "h": 0.8, "weight": 0.6}))
    assert result.sigma_method == "background-gaussian" and result.nonlocal_stage["noise"] == "gaussian"


def test_cli_flags_choose_the_stage(tmp_path, monkeypatch, capsys, published_hub):
    import sys

    from typer.testing import CliRunner

    from seqinv.cli import app, main

    folder = tmp_path / "model"
    _denoiser({"search": 1, "h": 0.8, "weight": 0.6}).save_pretrained(folder)
    clean = _piecewise((20, 18, 16))
    scan = tmp_path / "scan.nii.gz"
    noisy = clean + np.random.default_rng(7).normal(0, 6, clean.shape)
    nib.save(nib.Nifti1Image(noisy.astype(np.float32), np.eye(4)), scan)
    stages = {}
    for flag in ("--nonlocal", "--no-nonlocal"):
        out = tmp_path / flag.strip("-")
        args = [
            "denoise",
            str(scan),
            "--model",
            str(folder),
            "--sigma",
            "6",
            "-o",
            str(out),
            "--threads",
            "1",
        ]
        result = CliRunner().invoke(app, [*args, flag])
        assert result.exit_code == 0, result.output
        stages[flag] = json.loads((out / "scan_desc-denoised.json").read_text())["nonlocal_stage"]
    assert stages["--nonlocal"]["search"] == 1 and stages["--no-nonlocal"] is None
    bad = tmp_path / "bad"
    argv = ["seqinv", "denoise", str(scan), "--model", "denoise@1.0", "--nonlocal", "-o", str(bad)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("model ")]
    assert info.value.code != 0 and lines == [
        "error: --nonlocal applies to the residual denoiser (denoise 2.x), not to seqinv-lite-denoise"
    ]
    assert not bad.exists()
