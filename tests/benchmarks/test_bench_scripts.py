"""The evaluation scripts in benchmarks/ and benchmarks/studies/ run on a tiny random model and report
sane, checkable figures."""

import csv
import importlib.util
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seqinv.errors import InputError, ParameterError

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["background", "CSF", "GM", "WM"]


def load_script(path):
    """A script of benchmarks/ by its path there: "eval_heads" (a living benchmark), "studies/x" (a study)."""
    name = Path(path).name
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{path}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    common = {"arch": "unet", "patch_size": (16, 16, 16)}
    seg = ModelConfig.from_preset(
        "tiny", task="segment", task_name="ixi", out_channels=4, labels=LABELS, **common
    )
    den = ModelConfig.from_preset("tiny", task="denoise", training={"noise_std": 0.2}, **common)
    SeqInvUNet(seg).save_pretrained(root / "ixi")
    SeqInvUNet(den).save_pretrained(root / "den")
    return root


def ball_maps(n=20):
    """Air around a WM ball with a GM rim and a CSF core (smooth edges), 1 mm."""
    from seqinv.physics import QMRIMaps

    axes = [torch.arange(n) - n / 2] * 3
    r = torch.linalg.vector_norm(torch.stack(torch.meshgrid(*axes, indexing="ij")), dim=0) / (n / 20)
    inside, core, wm = [torch.sigmoid(2 * (edge - r)) for edge in (8.0, 3.0, 6.0)]
    gm = inside - wm
    wm = wm - core

    def mix(csf, g, w):
        return csf * core + g * gm + w * wm

    return QMRIMaps(pd=mix(98, 80, 69), r1=mix(0.25, 0.6, 1.0), r2s=mix(3, 16, 21), mt=mix(0.1, 0.8, 1.6))


def run_bench(monkeypatch, n, *args):
    bench = load_script("studies/bench_denoise_baselines")
    monkeypatch.setattr(bench, "load_maps", lambda seed, crop: (ball_maps(n), np.eye(4)))
    rows = bench.main(["--contrasts", "T1w", "--runs", "1", "--threads", "1", *map(str, args)])
    return {(r["noise"], r["method"]): r for r in rows}, rows


def test_denoise_benchmark_reports_the_noise_floor_and_consistent_psnr(models, tmp_path, monkeypatch, capsys):
    pytest.importorskip("dipy", reason="the bench/test extra installs dipy")
    out_csv = tmp_path / "denoise.csv"
    by, rows = run_bench(
        monkeypatch, 20, "--model", models / "den", "--methods", "seqinv,nlmeans", "--csv", out_csv
    )
    printed = capsys.readouterr().out
    assert (
        "| noise | contrast | method | PSNR L=1 (dB) | PSNR L=range (dB) | PSNR L=1 head (dB) | SSIM |"
        in printed
    )
    assert set(by) == {(n, m) for n in ("gaussian", "rician") for m in ("input", "seqinv", "nlmeans")}
    # Gaussian noise of std 0.2 on z-scored images: PSNR(L=1) = 20 log10(1 / 0.2) = 13.98 dB
    assert by["gaussian", "input"]["psnr_l1_db"] == pytest.approx(13.98, abs=0.15)
    assert by["gaussian", "input"]["psnr_l1_head_db"] == pytest.approx(13.98, abs=0.3)  # fewer voxels
    # PSNR(L=range) - PSNR(L=1) = 20 log10(range of the clean image), the same for every row
    offsets = {round(r["psnr_range_db"] - r["psnr_l1_db"], 6) for r in rows}
    assert len(offsets) == 1 and next(iter(offsets)) > 0
    for noise in ("gaussian", "rician"):  # a real denoiser beats the noisy input on a smooth phantom
        assert by[noise, "nlmeans"]["psnr_l1_db"] > by[noise, "input"]["psnr_l1_db"] + 4
        assert by[noise, "nlmeans"]["ssim"] > by[noise, "input"]["ssim"]
        assert by[noise, "seqinv"]["time_s"] > 0
    assert all(math.isfinite(r["psnr_l1_db"]) and -1 <= r["ssim"] <= 1 for r in rows)
    with open(out_csv) as f:
        assert len(list(csv.DictReader(f))) == len(rows) == 6


def test_bm4d_baseline_denoises(monkeypatch, capsys):
    pytest.importorskip("bm4d", reason="the bench/test extra installs bm4d")
    by, _ = run_bench(monkeypatch, 12, "--methods", "bm4d", "--noise", "gaussian", "--bm4d-stages", "hard")
    assert by["gaussian", "bm4d"]["psnr_l1_db"] > by["gaussian", "input"]["psnr_l1_db"] + 4


def test_denoise_benchmark_rejects_unknown_methods_and_bad_sigma():
    bench = load_script("studies/bench_denoise_baselines")
    with pytest.raises(ParameterError, match="--methods 'seqinv,foo'.*nlmeans"):
        bench.parse_args(["--methods", "seqinv,foo"])
    with pytest.raises(ParameterError, match="--sigma 0.0 must be > 0"):
        bench.parse_args(["--sigma", "0"])


def test_ssim_equals_monai():
    from monai.metrics import SSIMMetric

    bench = load_script("studies/bench_denoise_baselines")
    g = torch.Generator().manual_seed(0)
    clean = torch.rand((20, 22, 18), generator=g).cumsum(0)
    noisy = clean + torch.randn(clean.shape, generator=g)
    reference = SSIMMetric(spatial_dims=3, data_range=float(clean.max() - clean.min()))
    expected = float(reference(noisy[None, None], clean[None, None]).mean())
    assert bench.ssim_3d(clean, noisy) == pytest.approx(expected, abs=1e-5)
    assert bench.ssim_3d(clean, clean) == pytest.approx(1.0, abs=1e-6)


def test_reference_rule_is_the_phantom_argmax_inside_the_mask():
    icbm = load_script("eval_icbm152")
    #               GM    WM    (CSF = 1 - GM - WM inside the mask)
    gm = np.array([0.7, 0.2, 0.4, 0.1, 0.3, 0.9])
    wm = np.array([0.2, 0.7, 0.4, 0.1, 0.3, 0.1])
    mask = np.array([1, 1, 1, 1, 1, 0])
    assert icbm.reference_labels(gm, wm, mask).tolist() == [2, 3, 3, 1, 1, 0]  # GM/WM tie -> WM
    # with p >= 0.5, voxels whose largest tissue probability is 0.4 become background
    assert icbm.reference_labels(gm, wm, mask, 0.5).tolist() == [2, 3, 0, 1, 0, 0]


def test_icbm152_template_table(models, tmp_path, capsys):
    icbm = load_script("eval_icbm152")
    table = icbm.main(
        [
            "--model",
            str(models / "ixi"),
            "--crop",
            "24",
            "--threads",
            "1",
            "--csv",
            str(tmp_path / "icbm.csv"),
        ]
    )
    printed = capsys.readouterr().out
    assert "skull-stripped" in printed and "| class | Dice % (argmax) | Dice % (p≥0.5) |" in printed
    rows = table["argmax"]
    assert [r["class"] for r in rows] == ["CSF", "GM", "WM"]
    # a 24³ crop at the brain's centre lies inside the brain mask: every voxel is CSF, GM or WM (1 mm³)
    assert sum(r["ref_ml"] for r in rows) == pytest.approx(24**3 / 1000)
    assert sum(r["pred_ml"] for r in rows) <= 24**3 / 1000 + 1e-9
    assert all(0 <= r["dice"] <= 1 for rule in table.values() for r in rule)


def test_own_scan_scored_against_its_own_prediction_is_perfect(models, tmp_path, capsys):
    from seqinv.inference import segment

    icbm = load_script("eval_icbm152")
    affine = np.diag([1.0, 1.2, 0.9, 1.0])
    data = (np.random.default_rng(0).random((18, 20, 16)) * 100).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "t1.nii.gz")
    labels = segment(tmp_path / "t1.nii.gz", task="ixi", model=models / "ixi", threads=1).labels
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "dseg.nii.gz")
    table = icbm.main(
        [
            "--model",
            str(models / "ixi"),
            "--image",
            str(tmp_path / "t1.nii.gz"),
            "--labels",
            str(tmp_path / "dseg.nii.gz"),
            "--threads",
            "1",
            "--no-hd95",
        ]
    )
    assert [r["dice"] for r in table["given"]] == [1.0, 1.0, 1.0]
    assert "| mean | 100.0 |" in capsys.readouterr().out
    nib.save(nib.Nifti1Image(labels[:-1], affine), tmp_path / "small.nii.gz")
    with pytest.raises(InputError, match="resample the labels onto the image's grid"):
        icbm.load_user_case(str(tmp_path / "t1.nii.gz"), str(tmp_path / "small.nii.gz"))


def test_eval_denoise_heads_reports_the_gain_of_flipped_passes(tmp_path, monkeypatch):
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
    from training import denoise_resnet
    from training.denoise_resnet import psnr

    bench = load_script("eval_denoise_heads")
    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4)))
    for p in net.tail.parameters():
        torch.nn.init.normal_(p, std=0.1)
    net.save_pretrained(tmp_path / "m", dtype=torch.float32)
    clean = torch.linspace(0.2, 1.0, 16).expand(16, 16, 16).contiguous()
    noisy = clean + 0.05 * torch.randn(clean.shape)
    case = ("T1w/0/gaussian-0.05", noisy, clean, 0.05)
    monkeypatch.setattr(denoise_resnet, "validation_set", lambda: [case])
    rows = bench.main(["--model", str(tmp_path / "m"), "--passes", "1,2", "--label-maps", ""])
    assert [(r["passes"], r["set"]) for r in rows] == [(1, "icbm gaussian-0.05"), (2, "icbm gaussian-0.05")]
    net.eval()
    with torch.no_grad():  # by hand: the scan and its copy flipped along all axes, estimates averaged
        flipped = net(noisy.flip((0, 1, 2))[None, None], 0.05)[0, 0].flip((0, 1, 2))
        est = (net(noisy[None, None], 0.05)[0, 0] + flipped) / 2
    expected = psnr(noisy - est, clean) - psnr(noisy, clean)
    assert rows[1]["gain_db"] == pytest.approx(expected, abs=1e-4)
    assert rows[0]["gain_db"] != pytest.approx(rows[1]["gain_db"], abs=1e-4)
    with pytest.raises(ParameterError, match="--passes 3"):
        bench.main(["--model", str(tmp_path / "m"), "--passes", "3", "--label-maps", ""])


def test_dev_refine_prior_scores_each_weight_on_the_development_heads(models, monkeypatch, capsys):
    from seqinv.io import Volume

    bench = load_script("studies/dev_refine_prior")
    grid = np.indices((40, 40, 40)) - 19.5
    r = np.sqrt((grid**2).sum(axis=0))
    truth = torch.from_numpy(np.select([r < 8, r < 12, r < 15], [3, 2, 1], 0).astype(np.uint8))
    image = np.asarray([0.0, 0.2, 0.6, 1.0], dtype=np.float32)[truth.numpy()]
    one_hot = np.stack([(truth.numpy() == c).astype(np.float32) for c in range(4)])
    assert bench.mean_dice(one_hot, truth) == pytest.approx(1.0)
    case = (3, "T1w", Volume(image, np.eye(4)), truth)
    monkeypatch.setattr(bench, "dev_cases", lambda: iter([case]))
    bench.main(["--model", str(models / "ixi"), "--weights", "1.0,0.7"])
    out = capsys.readouterr().out
    assert "map 03 T1w" in out and "prior 0.7" in out and "prior 1 " in out
    summary = out.split("mean Dice % over the development maps")[1].split()
    assert summary.count("T1w") == 3  # network, prior 1 and prior 0.7


def test_tune_nonlocal_stage_scores_each_pair_on_the_held_out_cases(tmp_path, monkeypatch, capsys):
    from seqinv.inference.nonlocal_stage import NonlocalStage, apply_stage
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
    from training import denoise_resnet
    from training.denoise_resnet import psnr

    bench = load_script("studies/tune_nonlocal_stage")
    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4)))
    net.save_pretrained(tmp_path / "m", dtype=torch.float32)  # a new network predicts no noise
    clean = torch.linspace(0.2, 1.0, 16).expand(16, 16, 16).contiguous()
    noisy = clean + 0.05 * torch.randn(clean.shape)
    monkeypatch.setattr(
        denoise_resnet, "validation_set", lambda: [("T1w/0/gaussian-0.05", noisy, clean, 0.05)]
    )
    args = [
        "--model",
        str(tmp_path / "m"),
        "--h",
        "0.8,2",
        "--weight",
        "1",
        "--passes",
        "1",
        "--label-maps",
        "",
    ]
    out = bench.main(args)
    assert out["network_db"] == pytest.approx(0.0, abs=1e-6)  # the estimate is the noisy input itself
    by_hand = apply_stage(noisy.numpy(), noisy.numpy(), 0.05, NonlocalStage(2, 2.0, 1.0))
    expected = psnr(torch.from_numpy(by_hand), clean) - psnr(noisy, clean)
    assert out["stage_db"][(2.0, 1.0)] == pytest.approx(expected, abs=1e-4) and expected > 1.0
    assert out["best"] == {"search": 2, "h": 2.0, "weight": 1.0}  # the wider kernel on a smooth ramp
    assert "best: h 2.0 weight 1.0" in capsys.readouterr().out
    (case,) = bench.thick_cases([("T1w/0/rician-0.05", noisy, clean, 0.05)], 3)
    assert case[2].shape == (16, 16, 5) and torch.allclose(case[2][..., 1], clean[..., 3:6].mean(-1))
    assert float(case[1].min()) >= 0  # Rician: magnitudes
    thick = bench.main([*args, "--thick", "2"])
    assert "2 mm slices" in capsys.readouterr().out and thick["stage_db"][(2.0, 1.0)] > 0.5


def test_failure_phantoms_template_truth_is_the_blurred_labels_most_likely_class(monkeypatch):
    import training.head_phantoms as heads

    bench = load_script("studies/eval_failure_phantoms")
    grid = np.indices((40, 40, 40)) - 19.5
    r = np.sqrt((grid**2).sum(axis=0))
    # WM ball, GM shell, a 1-voxel CSF shell, then a thick CSF shell: the thin one vanishes when blurred
    labels = np.select([r < 8, r < 12, r < 13, r < 16, r < 19], [3, 2, 1, 2, 1], 0).astype(np.uint8)
    image = torch.from_numpy(np.asarray([0.0, 0.2, 0.6, 1.0], dtype=np.float32)[labels])
    seen = []

    def fake(phantom, seed, sequence=None, acquisition=None):
        seen.append((sequence, acquisition))
        return image.clone(), torch.from_numpy(labels)

    monkeypatch.setattr(heads, "whole_head_image", fake)
    sharp, truth = bench.protocol_image(None, "T1w", 1.5)
    assert torch.equal(truth, torch.from_numpy(labels)) and abs(sharp - image.numpy()).max() < 0.06
    blurred, template = bench.protocol_image(None, "T1w-template", 1.5)
    thin = (r >= 12) & (r < 13)
    assert (template.numpy()[thin] == 1).mean() < 0.1 and (template.numpy()[r < 7] == 3).all()
    assert blurred[r < 1].mean() > 0.9 and blurred[thin].std() < sharp[thin].std() + 0.05
    bench.protocol_image(None, "PDw-TR2.7-2.4mm", 1.5)
    sequence, acquisition = seen[-1]
    assert sequence.tr_s == pytest.approx(2.7) and acquisition.resolution_mm[2] == pytest.approx(2.4)
    one_hot = np.stack([(truth.numpy() == c).astype(np.float32) for c in range(4)])
    from training.evaluate import mean_tissue_dice

    assert mean_tissue_dice(one_hot, truth) == pytest.approx(1.0)


def test_eval_heads_outside_share_and_truth_follow_the_csf_rim():
    from seqinv.physics.anatomy import GEN_INDEX, KIND

    heads = load_script("eval_heads")
    truth = torch.zeros((30, 30, 30), dtype=torch.uint8)
    truth[10:20, 10:20, 10:20] = 2
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[10:20, 10:20, 10:20] = 2
    labels[26:28, 0:5, 0:5] = 3  # 50 voxels far from the brain
    labels[20:22, 10:12, 10:12] = 1  # 8 voxels within 2 mm: not "outside"
    assert heads.outside_share(labels, truth, 1.0) == pytest.approx(50 / (1000 + 58))
    # the same labels on a 2 mm grid: the near pair of slabs is still within 5 mm
    assert heads.outside_share(labels, truth, 2.0) == pytest.approx(50 / (1000 + 58))

    class Phantom:
        values = {
            "kinds": np.full((3,), KIND["csf"], np.uint8),
            "classes": np.full((3,), GEN_INDEX[24], np.uint8),
            "parenchyma_distance": np.array([10, 30, 40], np.uint8),  # 0.5, 1.5, 2 mm
        }

    assert heads.truth_of(Phantom(), 1.5).tolist() == [1, 1, 0]
    assert heads.truth_of(Phantom(), 2.5).tolist() == [1, 1, 1]
    assert heads.truth_of(Phantom(), 1.0).tolist() == [1, 0, 0]


def test_eval_heads_agreement_is_mean_pairwise_dice():
    heads = load_script("eval_heads")
    a = np.zeros((10, 10, 10), np.uint8)
    a[:5] = 3
    a[5:] = 2
    b = a.copy()
    b[:, :, :5] = 1  # half of b is CSF where a has GM/WM
    same = heads.agreement([a, a])
    assert same == pytest.approx(1.0)
    # a vs b: CSF 0 (only in b), GM 2*250/(500+250), WM the same: mean (0 + 2/3 + 2/3) / 3
    assert heads.agreement([a, b]) == pytest.approx(4 / 9)
    assert heads.agreement([a, a, b]) == pytest.approx((1 + 4 / 9 + 4 / 9) / 3)
